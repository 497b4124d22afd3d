"""OpenAI Usage API pages: `GET /v1/organization/usage/completions`.

A page::

    {"object": "page", "has_more": true, "next_page": "page_...",
     "data": [{"object": "bucket", "start_time": 1730419200, "end_time": 1730505600,
               "results": [{"object": "organization.usage.completions.result",
                            "input_tokens": 1000, "output_tokens": 500, "input_cached_tokens": 800,
                            "input_audio_tokens": 0, "output_audio_tokens": 0, "num_model_requests": 5,
                            "project_id": "proj_...", "user_id": null, "api_key_id": "key_...",
                            "model": "gpt-4o-2024-08-06", "batch": false, "service_tier": null}]}]}

`input_tokens` includes cached and audio input tokens; the grouping fields are null unless the request
grouped by them (`group_by=project_id,user_id,api_key_id,model,batch,service_tier`).
"""

from __future__ import annotations

from collections.abc import Iterator
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
    text,
    unix_time,
)

RESULT_OBJECT = "organization.usage.completions.result"


def is_page(page: Any) -> bool:
    """True when `page` looks like an OpenAI completions usage page (not an Anthropic report)."""
    if not isinstance(page, dict):
        return False
    data = page.get("data")
    if page.get("object") == "page":
        return True
    return isinstance(data, list) and any(isinstance(b, dict) and "start_time" in b for b in data[:3])


def results(page: Any) -> Iterator[Result]:
    """(JSON path, usage record or None, error, raw value) for every result of every bucket."""
    return bucket_results(page, "start_time", "end_time", unix_time, _record)


def _record(r: Any, w: str, start: Any, end: Any) -> dict[str, Any]:
    if not isinstance(r, dict):
        raise RowError(f"{w}: expected a result object, got {type(r).__name__}")
    obj = r.get("object")
    if obj is not None and obj != RESULT_OBJECT:
        # e.g. an embeddings or images usage page saved into the same file: other units, other prices
        raise RowError(f"{w}.object: {obj!r} is not a completions usage result ({RESULT_OBJECT})")
    batch = r.get("batch")
    if batch is not None and not isinstance(batch, bool):
        raise RowError(f"{w}.batch: expected true, false or null, got {batch!r}")
    inp = count(r, "input_tokens", w)
    cached = count(r, "input_cached_tokens", w, required=False)
    audio_in = count(r, "input_audio_tokens", w, required=False)
    if cached + audio_in > inp:
        raise RowError(
            f"{w}.input_cached_tokens: cached ({cached}) plus audio ({audio_in}) input exceeds input_tokens ({inp})"
        )
    return {
        "provider": "openai",
        "start": start,
        "end": end,
        "project": text(r, "project_id", w),
        "user": text(r, "user_id", w),
        "api_key": text(r, "api_key_id", w),
        "model": text(r, "model", w),
        "batch": batch,
        "service_tier": text(r, "service_tier", w),
        "input_tokens": inp,
        "cached_input_tokens": cached,
        "cache_write_5m_tokens": 0,
        "cache_write_1h_tokens": 0,
        "output_tokens": count(r, "output_tokens", w),
        "input_audio_tokens": audio_in,
        "output_audio_tokens": count(r, "output_audio_tokens", w, required=False),
        "requests": count(r, "num_model_requests", w),
        "web_search_requests": 0,
        "group": text(r, "api_source", w),
    }


_COUNTS = (
    "input_tokens",
    "output_tokens",
    "input_cached_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "num_model_requests",
)
_STRUCT = pa.struct(
    [
        *((c, pa.int64()) for c in _COUNTS),
        *(
            (t, pa.string())
            for t in ("object", "project_id", "user_id", "api_key_id", "model", "service_tier")
        ),
        ("api_source", pa.string()),
        ("batch", pa.bool_()),
    ]
)
_MAX_UNIX = 253402300799  # 9999-12-31T23:59:59Z, the last time `datetime` can hold


def columns(page: Any) -> dict[str, Any] | None:
    """The usage columns of a whole page at once (Arrow), or None when some bucket or row is not clean:
    then `results` reads the page row by row and names every bad field."""
    data = page.get("data") if isinstance(page, dict) else None
    if not isinstance(data, list):
        return None
    starts: list[int] = []
    ends: list[int] = []
    sizes: list[int] = []
    rows: list[Any] = []
    for b in data:
        if not isinstance(b, dict):
            return None
        s, e, r = b.get("start_time"), b.get("end_time"), b.get("results")
        if type(s) is not int or type(e) is not int or not 0 <= s < e <= _MAX_UNIX or not isinstance(r, list):
            return None
        starts.append(s)
        ends.append(e)
        sizes.append(len(r))
        rows.extend(r)
    a = checked_structs(rows, _STRUCT)
    if a is None:
        return None
    f = {name: a.field(name) for name in _STRUCT.names}
    n = len(rows)
    for c in ("input_tokens", "output_tokens", "num_model_requests"):
        if f[c].null_count:
            return None
    obj = f["object"]
    if not pc.all(pc.or_kleene(pc.is_null(obj), pc.equal(obj, RESULT_OBJECT))).as_py():
        return None
    zero = pa.scalar(0, pa.int64())
    cached, audio_in = (
        pc.fill_null(f["input_cached_tokens"], zero),
        pc.fill_null(f["input_audio_tokens"], zero),
    )
    if pc.any(pc.greater(pc.add(cached, audio_in), f["input_tokens"])).as_py():
        return None
    sizes_np = np.asarray(sizes, dtype=np.int64)
    zeros = pa.array(np.zeros(n, dtype=np.int64))
    return {
        "provider": pa.array(["openai"] * n, pa.string()),
        "start": pa.array(
            np.repeat(np.asarray(starts, dtype=np.int64), sizes_np), pa.timestamp("s", tz="UTC")
        ),
        "end": pa.array(np.repeat(np.asarray(ends, dtype=np.int64), sizes_np), pa.timestamp("s", tz="UTC")),
        "project": nonempty(f["project_id"]),
        "user": nonempty(f["user_id"]),
        "api_key": nonempty(f["api_key_id"]),
        "model": nonempty(f["model"]),
        "batch": f["batch"],
        "service_tier": nonempty(f["service_tier"]),
        "input_tokens": f["input_tokens"],
        "cached_input_tokens": cached,
        "cache_write_5m_tokens": zeros,
        "cache_write_1h_tokens": zeros,
        "output_tokens": f["output_tokens"],
        "input_audio_tokens": audio_in,
        "output_audio_tokens": pc.fill_null(f["output_audio_tokens"], zero),
        "requests": f["num_model_requests"],
        "web_search_requests": zeros,
        "group": nonempty(f["api_source"]),
        "path": [f"data[{i}].results[{j}]" for i, k in enumerate(sizes) for j in range(k)],
    }
