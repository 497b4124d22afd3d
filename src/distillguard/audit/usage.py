"""Usage exports -> one Arrow table of usage rows (one per result of a bucket), bad rows quarantined.

Columns (`USAGE_SCHEMA`): provider, file, line (where the page starts), path (JSON path of the result),
start, end, day (UTC date of the bucket start), project (OpenAI project / Anthropic workspace), user,
api_key, model, batch, service_tier, the token counts, requests (null for Anthropic, whose report has
none) and web_search_requests.

The same bucket and group counted twice (a page saved twice, two overlapping exports) would double the
totals, so a repeat is quarantined naming the row it repeats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.audit import anthropic_usage, openai_usage
from distillguard.audit.pages import documents
from distillguard.ingest.base import IngestError, Quarantine

TOKEN_COLUMNS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
)
USAGE_SCHEMA = pa.schema(
    [
        ("provider", pa.string()),
        ("file", pa.string()),
        ("line", pa.int64()),
        ("path", pa.string()),
        ("start", pa.timestamp("s", tz="UTC")),
        ("end", pa.timestamp("s", tz="UTC")),
        ("day", pa.date32()),
        ("project", pa.string()),
        ("user", pa.string()),
        ("api_key", pa.string()),
        ("model", pa.string()),
        ("batch", pa.bool_()),
        ("service_tier", pa.string()),
        *[(c, pa.int64()) for c in TOKEN_COLUMNS],
        ("requests", pa.int64()),
        ("web_search_requests", pa.int64()),
    ]
)

Results = Callable[[Any], Iterator[tuple[str, dict[str, Any] | None, str | None, Any]]]
Columns = Callable[[Any], dict[str, Any] | None]
_ROW_COLUMNS = [n for n in USAGE_SCHEMA.names if n not in ("file", "line", "day")]
_KEY_COLUMNS = (
    "provider",
    "start",
    "end",
    "project",
    "user",
    "api_key",
    "model",
    "batch",
    "service_tier",
    "group",
)


class UsageError(IngestError):
    """A usage export that cannot be read at all (bad rows are quarantined instead)."""


@dataclass
class UsageData:
    """The usage rows read, and per file what was read, counted and quarantined."""

    table: pa.Table
    files: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def quarantined(self) -> int:
        return sum(d["quarantined"] for d in self.files.values())


def _provider(page: Any) -> tuple[str, Results, Columns] | None:
    # Anthropic first: its buckets are unambiguous, while OpenAI's `object: page` is a generic marker
    if anthropic_usage.is_page(page):
        return "anthropic", anthropic_usage.results, anthropic_usage.columns
    if openai_usage.is_page(page):
        return "openai", openai_usage.results, openai_usage.columns
    if isinstance(page, dict) and page.get("data") == [] and "has_more" in page:
        # an Anthropic page of a period with no usage: nothing to count, nothing wrong
        return "anthropic", anthropic_usage.results, anthropic_usage.columns
    return None


def _chunk(cols: dict[str, Any], path: Path, line: int) -> pa.Table:
    n = len(cols["path"])
    t = pa.table(
        {
            **{c: pa.array(cols[c], USAGE_SCHEMA.field(c).type) for c in _ROW_COLUMNS},
            "group": pa.array(cols["group"], pa.string()),
        }
    )
    return (
        t.append_column("file", pa.array([str(path)] * n, pa.string()))
        .append_column("line", pa.array(np.full(n, line, dtype=np.int64)))
        .append_column("day", pc.cast(t.column("start"), pa.date32()))
    )


def _rows_to_columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {c: [r[c] for r in rows] for c in [*_ROW_COLUMNS, "group"]}


def read_usage(paths: Sequence[Path], quarantine: Quarantine) -> UsageData:
    """Read every usage export in `paths`; bad rows go to `quarantine` with file, line and field.

    A clean page is converted in one go by Arrow; a page with any bad bucket or row is read row by row,
    so that every bad field is named and the good rows of the page still count.
    """
    chunks: list[pa.Table] = []
    files: dict[str, dict[str, int]] = {}
    for path in paths:
        if not path.is_file():
            raise UsageError(f"usage export {path} not found")
        st = files.setdefault(str(path), {"pages": 0, "rows": 0, "quarantined": 0})
        for doc in documents(path):
            if doc.error is not None:
                _bad(quarantine, st, path, doc.line, doc.error, doc.raw or b"")
                continue
            kind = _provider(doc.value)
            if kind is None:
                reason = (
                    "page: not an OpenAI completions usage page nor an Anthropic messages usage report "
                    "(no `data` buckets with start_time or starting_at)"
                )
                _bad(quarantine, st, path, doc.line, reason, doc.value)
                continue
            st["pages"] += 1
            _, results, columns = kind
            cols = columns(doc.value)
            if cols is None:
                good = []
                for where, rec, err, raw in results(doc.value):
                    if rec is None:
                        _bad(quarantine, st, path, doc.line, str(err), raw)  # errors start with the JSON path
                    else:
                        rec["path"] = where
                        good.append(rec)
                cols = _rows_to_columns(good)
            chunks.append(_chunk(cols, path, doc.line))
    table = pa.concat_tables(chunks) if chunks else _chunk(_rows_to_columns([]), Path(), 0)
    table = _drop_repeats(table, quarantine, files)
    for name, d in files.items():
        d["rows"] = int(pc.sum(pc.equal(table.column("file"), name)).as_py() or 0)
    return UsageData(table.select(USAGE_SCHEMA.names).cast(USAGE_SCHEMA), files)


def _bad(q: Quarantine, st: dict[str, int], path: Path, line: int, reason: str, raw: Any) -> None:
    st["quarantined"] += 1
    q.put(path, line, reason, raw if isinstance(raw, bytes) else orjson.dumps(raw, default=str))


def _codes(col: pa.ChunkedArray) -> np.ndarray:
    """An integer per value of a key column (-1 for null): rows are compared as integer tuples."""
    if pa.types.is_timestamp(col.type) or pa.types.is_boolean(col.type):
        v = pc.cast(col, pa.int64())
    else:
        v = pc.dictionary_encode(col.combine_chunks()).indices
    return np.asarray(pc.fill_null(pc.cast(v, pa.int64()), -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _drop_repeats(t: pa.Table, q: Quarantine, files: dict[str, dict[str, int]]) -> pa.Table:
    """Quarantine every repeat of a (bucket, group) seen before, naming the row it repeats."""
    if t.num_rows == 0:
        return t
    codes = np.stack([_codes(t.column(c)) for c in _KEY_COLUMNS], axis=1)
    _, first, inverse = np.unique(codes, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    repeat = np.nonzero(first[inverse] != np.arange(t.num_rows))[0]
    if len(repeat) == 0:
        return t
    file, line, where = t.column("file"), t.column("line"), t.column("path")
    for i in repeat.tolist():
        j = int(first[inverse[i]])
        row = {c: t.column(c)[i].as_py() for c in _ROW_COLUMNS}
        reason = (
            f"{where[i].as_py()}: duplicate of {file[j].as_py()} line {line[j].as_py()} {where[j].as_py()} "
            "(same bucket and group; counted once)"
        )
        _bad(q, files[file[i].as_py()], Path(file[i].as_py()), int(line[i].as_py()), reason, row)
    keep = np.ones(t.num_rows, dtype=bool)
    keep[repeat] = False
    return t.filter(pa.array(keep))
