"""Anthropic Admin API usage reports: `GET /v1/organizations/usage_report/messages`.

A page::

    {"has_more": false, "next_page": null,
     "data": [{"starting_at": "2025-08-01T00:00:00Z", "ending_at": "2025-08-02T00:00:00Z",
               "results": [{"uncached_input_tokens": 1500,
                            "cache_creation": {"ephemeral_5m_input_tokens": 500,
                                               "ephemeral_1h_input_tokens": 1000},
                            "cache_read_input_tokens": 200, "output_tokens": 500,
                            "server_tool_use": {"web_search_requests": 10},
                            "api_key_id": "apikey_...", "workspace_id": "wrkspc_...",
                            "model": "claude-sonnet-4-20250514", "service_tier": "standard",
                            "context_window": "0-200k"}]}]}

The report has no request count (`requests` stays null) and its input is split: the audit's total input
is uncached + cache writes (5m and 1h) + cache reads. A workspace plays the part of an OpenAI project; a
null workspace is the organisation's default workspace. Flat `cache_creation_5m_input_tokens` /
`cache_creation_1h_input_tokens` (as some schema derivations spell them) are read too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.audit.fields import (
    Result,
    RowError,
    bucket_results,
    checked_structs,
    count,
    nonempty,
    rfc3339,
    text,
)


def is_page(page: Any) -> bool:
    """True when `page` looks like an Anthropic messages usage report page."""
    if not isinstance(page, dict):
        return False
    data = page.get("data")
    return isinstance(data, list) and any(isinstance(b, dict) and "starting_at" in b for b in data[:3])


def results(page: Any) -> Iterator[Result]:
    """(JSON path, usage record or None, error, raw value) for every result of every bucket."""
    return bucket_results(page, "starting_at", "ending_at", rfc3339, _record)


def _record(r: Any, w: str, start: Any, end: Any) -> dict[str, Any]:
    if not isinstance(r, dict):
        raise RowError(f"{w}: expected a result object, got {type(r).__name__}")
    cc = r.get("cache_creation")
    if cc is not None and not isinstance(cc, dict):
        raise RowError(f"{w}.cache_creation: expected an object, got {cc!r:.60}")
    # the nested object wins; the flat spelling fills what it lacks
    cw = f"{w}.cache_creation"
    w5 = (
        count(cc, "ephemeral_5m_input_tokens", cw, required=False)
        if cc and cc.get("ephemeral_5m_input_tokens") is not None
        else count(r, "cache_creation_5m_input_tokens", w, required=False)
    )
    w1 = (
        count(cc, "ephemeral_1h_input_tokens", cw, required=False)
        if cc and cc.get("ephemeral_1h_input_tokens") is not None
        else count(r, "cache_creation_1h_input_tokens", w, required=False)
    )
    stu = r.get("server_tool_use")
    if stu is not None and not isinstance(stu, dict):
        raise RowError(f"{w}.server_tool_use: expected an object, got {stu!r:.60}")
    web = count(stu, "web_search_requests", f"{w}.server_tool_use", required=False) if stu else 0
    uncached = count(r, "uncached_input_tokens", w)
    read = count(r, "cache_read_input_tokens", w, required=False)
    tier = text(r, "service_tier", w)
    return {
        "provider": "anthropic",
        "start": start,
        "end": end,
        "project": text(r, "workspace_id", w),
        "user": text(r, "account_id", w),
        "api_key": text(r, "api_key_id", w),
        "model": text(r, "model", w),
        "batch": None if tier is None else tier == "batch",
        "service_tier": tier,
        "input_tokens": uncached + w5 + w1 + read,
        "cached_input_tokens": read,
        "cache_write_5m_tokens": w5,
        "cache_write_1h_tokens": w1,
        "output_tokens": count(r, "output_tokens", w),
        "input_audio_tokens": 0,
        "output_audio_tokens": 0,
        "requests": None,
        "web_search_requests": web,
        "group": group_key([text(r, g, w) for g in _GROUP_EXTRA]),
    }


_GROUP_EXTRA = ("context_window", "inference_geo", "service_account_id", "speed")
_STRUCT = pa.struct(
    [
        ("uncached_input_tokens", pa.int64()),
        ("cache_read_input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        (
            "cache_creation",
            pa.struct([("ephemeral_5m_input_tokens", pa.int64()), ("ephemeral_1h_input_tokens", pa.int64())]),
        ),
        ("cache_creation_5m_input_tokens", pa.int64()),
        ("cache_creation_1h_input_tokens", pa.int64()),
        ("server_tool_use", pa.struct([("web_search_requests", pa.int64())])),
        *(
            (t, pa.string())
            for t in ("workspace_id", "account_id", "api_key_id", "model", "service_tier", *_GROUP_EXTRA)
        ),
    ]
)


def group_key(values: Sequence[str | None]) -> str | None:
    """The grouping fields beyond the usage columns, as one dedup key part (None when all are null)."""
    return None if all(v is None for v in values) else "\x1f".join(v or "" for v in values)


def columns(page: Any) -> dict[str, Any] | None:
    """The usage columns of a whole page at once (Arrow), or None when some bucket or row is not clean:
    then `results` reads the page row by row and names every bad field."""
    data = page.get("data") if isinstance(page, dict) else None
    if not isinstance(data, list):
        return None
    starts: list[Any] = []
    ends: list[Any] = []
    sizes: list[int] = []
    rows: list[Any] = []
    for i, b in enumerate(data):
        if not isinstance(b, dict) or not isinstance(b.get("results"), list):
            return None
        try:
            s, e = rfc3339(b, "starting_at", f"data[{i}]"), rfc3339(b, "ending_at", f"data[{i}]")
        except RowError:
            return None
        if e <= s:
            return None
        starts.append(s)
        ends.append(e)
        sizes.append(len(b["results"]))
        rows.extend(b["results"])
    a = checked_structs(rows, _STRUCT)
    if a is None:
        return None
    f = {name: a.field(name) for name in _STRUCT.names}
    if f["uncached_input_tokens"].null_count or f["output_tokens"].null_count:
        return None
    n, zero = len(rows), pa.scalar(0, pa.int64())
    cc, stu = f["cache_creation"], f["server_tool_use"]
    w5 = pc.coalesce(cc.field("ephemeral_5m_input_tokens"), f["cache_creation_5m_input_tokens"], zero)
    w1 = pc.coalesce(cc.field("ephemeral_1h_input_tokens"), f["cache_creation_1h_input_tokens"], zero)
    read = pc.fill_null(f["cache_read_input_tokens"], zero)
    tier = nonempty(f["service_tier"])
    extra = [nonempty(f[g]).to_pylist() for g in _GROUP_EXTRA]
    sizes_np = np.asarray(sizes, dtype=np.int64)
    zeros = pa.array(np.zeros(n, dtype=np.int64))
    return {
        "provider": pa.array(["anthropic"] * n, pa.string()),
        "start": pa.array(np.repeat(np.asarray(starts, dtype=object), sizes_np), pa.timestamp("s", tz="UTC")),
        "end": pa.array(np.repeat(np.asarray(ends, dtype=object), sizes_np), pa.timestamp("s", tz="UTC")),
        "project": nonempty(f["workspace_id"]),
        "user": nonempty(f["account_id"]),
        "api_key": nonempty(f["api_key_id"]),
        "model": nonempty(f["model"]),
        "batch": pc.equal(tier, "batch"),
        "service_tier": tier,
        "input_tokens": pc.add(pc.add(pc.add(f["uncached_input_tokens"], w5), w1), read),
        "cached_input_tokens": read,
        "cache_write_5m_tokens": w5,
        "cache_write_1h_tokens": w1,
        "output_tokens": f["output_tokens"],
        "input_audio_tokens": zeros,
        "output_audio_tokens": zeros,
        "requests": pa.nulls(n, pa.int64()),
        "web_search_requests": pc.fill_null(stu.field("web_search_requests"), zero),
        "group": [group_key(v) for v in zip(*extra, strict=True)] if n else [],
        "path": [f"data[{i}].results[{j}]" for i, k in enumerate(sizes) for j in range(k)],
    }
