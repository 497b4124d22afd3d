"""Raw Exchange mappings -> Arrow batches of `ARROW_SCHEMA`, validated a column at a time.

Validating each row through the pydantic model and transposing the results was most of the cost of
ingest (about 30 us a row against 5 us for the JSON parse). Here a batch of raw mappings is checked
column by column: a fast path accepts a value only when it is already in the exact form the model
would produce (a `str` for a string field, an `int` in range for an integer field, a canonical ISO
timestamp, messages whose keys are in the model's order...), so for every row it accepts, the stored
values are those of `to_values(validate(row))`. Any row with a value outside that narrow form (a
number as a string, a naive timestamp, an unknown message key, a missing required field) goes through
the per-row validator, which either coerces it exactly as before or sends it to the quarantine with
the same reason. The rules for what is a bad row stay those of `Exchange`; this module only decides
which rows certainly need no coercion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import annotated_types
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from distillguard.exchange import (
    ARROW_SCHEMA,
    Exchange,
    _normalise_ip,
    _overlap,
    message_text,
    to_values,
    validate,
    values_to_batch,
)
from distillguard.ingest.base import (
    Adapter,
    IngestStats,
    Quarantine,
    RawRecord,
    format_validation_error,
)

_NONE = type(None)

# Field kinds, by what the fast path accepts. Anything else goes to the per-row validator.
_STR_OPT: tuple[str, ...] = (
    *("org_id", "api_key_id", "end_user", "user_agent", "payment_fp", "device_fp", "system_prompt"),
    *("reasoning_effort", "tool_set", "response_text", "reasoning_text", "finish_reason", "error"),
)
_STR_REQ = ("exchange_id", "account_id", "model")  # str, min_length=1, no default
_INT_FIELDS = (
    *("asn", "n", "max_tokens", "top_logprobs", "n_tools", "reasoning_tokens"),
    *("prompt_tokens", "completion_tokens", "status"),
)
_FLOAT_FIELDS = ("temperature", "top_p", "latency_ms")  # all optional


def _bounds(name: str) -> tuple[Any, Any]:
    """The model's own (ge, le) bounds of a field, so the column checks never drift from them."""
    lo = hi = None
    for m in Exchange.model_fields[name].metadata:
        if isinstance(m, annotated_types.Ge):
            lo = m.ge
        elif isinstance(m, annotated_types.Le):
            hi = m.le
        elif not (isinstance(m, annotated_types.MinLen) and m.min_length == 1 and name in _STR_REQ):
            raise AssertionError(f"columnar ingest does not check {m!r} of Exchange.{name}")
    return lo, hi


for _name in (*_STR_OPT, *_STR_REQ):
    _bounds(_name)  # only the min_length=1 of the required strings, checked as ""
# int fields: (default or None, lower bound, upper bound or None)
_INTS: dict[str, tuple[int | None, int | None, int | None]] = {
    name: (Exchange.model_fields[name].default, *_bounds(name)) for name in _INT_FIELDS
}
# float fields: (lower bound, upper bound or None)
_FLOATS: dict[str, tuple[float | None, float | None]] = {name: _bounds(name) for name in _FLOAT_FIELDS}
_HANDLED = {*_STR_OPT, *_STR_REQ, *_INTS, *_FLOATS}
_HANDLED |= {"ts", "client_ip", "country", "endpoint", "logprobs", "messages", "attributes"}
assert set(Exchange.model_fields) == _HANDLED, "columnar checks out of step with Exchange"
_FIELDS = list(Exchange.model_fields)
# What a missing field reads as: its default where it has one (messages and attributes: one shared
# empty list and dict, never mutated), else None, as for an explicit null.
_DEFAULTS: list[Any] = []
for _f in Exchange.model_fields.values():
    _DEFAULTS.append(None if _f.is_required() else _f.get_default(call_default_factory=True))

# The timestamp forms both pydantic and Arrow read the same way: ISO 8601 with a "T", seconds, up to
# microseconds, and an explicit offset (a naive time is taken as UTC by the model, refused by Arrow),
# in the years 1900-2999 (Arrow would accept an offset that moves 0001-01-01 before year 1; the model not).
_TS = r"^(?:19|2[0-9])[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
_TS_TYPE = pa.timestamp("us", tz="UTC")

# Message keys the model keeps, in its order: a validated message is rebuilt in this order (unknown
# keys dropped), so a message whose keys already are an ordered subset of these serialises the same.
_MSG_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")
_MSG_TYPES: dict[str, tuple[type, ...]] = {
    "role": (str,),
    "content": (str, list, _NONE),
    "name": (str,),
    "tool_calls": (list,),
    "tool_call_id": (str,),
}


_ROLE_CONTENT = ("role", "content")
_CONTENT_TYPES = _MSG_TYPES["content"]


def _ordered_subsets() -> frozenset[tuple[str, ...]]:
    out = set()
    rest = _MSG_KEYS[1:]
    for mask in range(1 << len(rest)):
        out.add(("role", *(k for i, k in enumerate(rest) if mask >> i & 1)))
    return frozenset(out)


_MSG_KEY_ORDERS = _ordered_subsets()


def _bad_types(vals: list[Any], ok: tuple[type, ...]) -> list[int]:
    """Indexes of values whose exact type is not one of `ok` (bool is not an int here)."""
    types = set(map(type, vals))
    if types.issubset(ok):
        return []
    return [i for i, v in enumerate(vals) if type(v) not in ok]


def _arrow(vals: list[Any], typ: pa.DataType, blank: Callable[[list[Any], Iterable[int]], None]) -> pa.Array:
    """`pa.array(vals, typ)`; values Arrow refuses (a number too big for the type) are blanked."""
    try:
        return pa.array(vals, typ)
    except (pa.ArrowException, OverflowError):
        pass
    refused = []
    for i, v in enumerate(vals):
        try:
            pa.array([v], typ)
        except (pa.ArrowException, OverflowError):
            refused.append(i)
    blank(vals, refused)
    return pa.array(vals, typ)


def _range_bad(arr: pa.Array, lo: float | None, hi: float | None) -> list[int]:
    """Indexes of non-null values outside [lo, hi] (None: unbounded)."""
    tests = [pc.less(arr, lo)] if lo is not None else []
    if hi is not None:
        tests.append(pc.greater(arr, hi))
    if not tests:
        return []
    out = (tests[0] if len(tests) == 1 else pc.or_(tests[0], tests[1])).fill_null(False)
    if not pc.any(out).as_py():
        return []
    return np.flatnonzero(out.to_numpy(zero_copy_only=False)).tolist()


def _normalised(vals: list[Any], fn: Callable[[str], str | None]) -> tuple[pa.Array, list[int]]:
    """A string column mapped through `fn` once per distinct value; rows whose value fn rejects."""
    enc = pa.array(vals, pa.string()).dictionary_encode()
    mapped: list[str | None] = []
    rejected: list[int] = []
    for j, s in enumerate(enc.dictionary.to_pylist()):
        try:
            mapped.append(fn(s))
        except ValueError:
            mapped.append(None)
            rejected.append(j)
    out = pa.array(mapped, pa.string()).take(enc.indices)
    if not rejected:
        return out, []
    bad = pc.is_in(enc.indices, pa.array(rejected, enc.indices.type))
    return out, np.flatnonzero(bad.to_numpy(zero_copy_only=False)).tolist()


def _timestamps(vals: list[Any], blank: Callable[[list[Any], Iterable[int]], None]) -> pa.Array:
    """The ts column: canonical ISO strings (the text logs) or UTC datetimes (adapters that compute
    the time), each parsed the model's way; other rows are blanked for the per-row validator."""
    if set(map(type, vals)) == {datetime}:
        blank(vals, [i for i, v in enumerate(vals) if v.tzinfo is not UTC])
        return pa.array(vals, _TS_TYPE)
    blank(vals, _bad_types(vals, (str,)))
    ts = pa.array(vals, pa.string())
    shaped = pc.match_substring_regex(ts, _TS)
    if shaped.null_count or not pc.all(shaped).as_py():
        off = np.flatnonzero(~shaped.fill_null(False).to_numpy(zero_copy_only=False)).tolist()
        blank(vals, [i for i in off if vals[i] is not None])
        ts = pa.array(vals, pa.string())
    try:
        return ts.cast(_TS_TYPE)
    except pa.ArrowInvalid:  # an impossible date (30 February): found value by value
        pass
    refused = []
    for i, v in enumerate(vals):
        try:
            pa.array([v], pa.string()).cast(_TS_TYPE)
        except pa.ArrowInvalid:
            refused.append(i)
    blank(vals, refused)
    return pa.array(vals, pa.string()).cast(_TS_TYPE)


def _ip(v: str) -> str | None:
    return None if v == "" else _normalise_ip(v)


def _country(v: str) -> str | None:
    if v == "":
        return None
    if len(v) != 2 or not v.isalpha():
        raise ValueError(v)
    return v.upper()


def _message_ok(m: Any) -> bool:
    """A message the model keeps as it is: known keys in the model's order, each of its type."""
    if type(m) is not dict:
        return False
    keys = tuple(m)
    if keys == _ROLE_CONTENT:  # by far the commonest shape: checked without a loop
        return type(m["role"]) is str and type(m["content"]) in _CONTENT_TYPES
    if keys not in _MSG_KEY_ORDERS:
        return False
    return all(type(v) in _MSG_TYPES[k] for k, v in m.items())


def _messages(vals: Sequence[Any]) -> tuple[list[Any], list[Any], list[Any], list[Any], list[int]]:
    """Messages as JSON, and the derived prompt, user turns and history overlap (as `to_values`)."""
    n = len(vals)
    js: list[Any] = [None] * n
    prompts: list[Any] = [None] * n
    turns: list[Any] = [None] * n
    overlaps: list[Any] = [None] * n
    bad: list[int] = []
    dumps, ok_msg = orjson.dumps, _message_ok
    for i, msgs in enumerate(vals):
        if type(msgs) is not list or not all(map(ok_msg, msgs)):
            bad.append(i)
            continue
        js[i] = dumps(msgs)
        last_user = -1
        user_turns = 0
        for j, m in enumerate(msgs):
            if m["role"] == "user":
                user_turns += 1
                last_user = j
        turns[i] = user_turns
        if last_user < 0:
            prompts[i] = ""
            continue
        m = msgs[last_user]
        c = m.get("content")
        prompts[i] = prompt = c if type(c) is str else message_text(m)
        for m in reversed(msgs[:last_user]):
            if m["role"] == "assistant":
                prev_answer = message_text(m)
                if prev_answer:
                    overlaps[i] = _overlap(prompt, prev_answer)
                break
    return js, prompts, turns, overlaps, bad


def _json_strings(vals: list[Any]) -> pa.Array:
    """A large_string array of orjson output (bytes, or None): one join and an offsets sum, where
    `pa.array` would check and copy each value (orjson writes valid UTF-8 only)."""
    n = len(vals)
    validity = None
    if None in vals:
        valid = np.fromiter((v is not None for v in vals), dtype=bool, count=n)
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
        vals = [b"" if v is None else v for v in vals]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, vals), dtype=np.int64, count=n), out=offsets[1:])
    data = pa.py_buffer(b"".join(vals))
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), data, validity)


def _attributes(vals: Sequence[Any]) -> tuple[list[Any], list[int]]:
    out: list[Any] = []
    bad: list[int] = []
    dumps = orjson.dumps
    for i, a in enumerate(vals):
        if type(a) is not dict:
            bad.append(i)
            out.append(None)
        elif not a:
            out.append(None)
        elif set(map(type, a.values())) == {str}:
            out.append(dumps(a))
        else:
            bad.append(i)
            out.append(None)
    return out, bad


def row_values(d: dict[str, Any]) -> list[Any]:
    """The raw values of one mapping in field order, defaults filled in (an explicit null stays None).

    Called as each row is parsed, while its dict is still in the CPU cache: picking fields row by row
    costs a tenth of picking them column by column over a whole batch afterwards.
    """
    return list(map(d.get, _FIELDS, _DEFAULTS))


def fast_columns(rows: list[list[Any]]) -> tuple[dict[str, Any], set[int]]:
    """Columns of `ARROW_SCHEMA` (Arrow arrays or Python lists) for `rows` (from `row_values`), and
    the rows the fast path could not vouch for (their entries in the columns are placeholders)."""
    n = len(rows)
    bad: set[int] = set()
    cols: dict[str, Any] = {}
    transposed = list(zip(*rows, strict=True)) if rows else [() for _ in _FIELDS]
    raw = dict(zip(_FIELDS, transposed, strict=True))

    def column(name: str) -> list[Any]:
        return list(raw[name])

    def blank(vals: list[Any], idx: Iterable[int]) -> None:
        for i in idx:
            vals[i] = None
            bad.add(i)

    for name in _STR_REQ:
        vals = column(name)
        blank(vals, _bad_types(vals, (str,)))
        if "" in vals:
            blank(vals, [i for i, v in enumerate(vals) if v == ""])
        cols[name] = vals
    for name in _STR_OPT:
        vals = column(name)
        blank(vals, _bad_types(vals, (str, _NONE)))
        cols[name] = vals
    vals = column("endpoint")
    blank(vals, _bad_types(vals, (str,)))
    cols["endpoint"] = vals

    for name, (dflt, lo, hi) in _INTS.items():
        vals = column(name)
        # A missing field has its default by now; an explicit null is an error for the model.
        blank(vals, _bad_types(vals, (int,) if dflt is not None else (int, _NONE)))
        arr = _arrow(vals, ARROW_SCHEMA.field(name).type, blank)
        out = _range_bad(arr, lo, hi)
        if out:
            blank(vals, out)
            arr = pa.array(vals, ARROW_SCHEMA.field(name).type)
        cols[name] = arr
    for name, (flo, fhi) in _FLOATS.items():
        vals = column(name)
        blank(vals, _bad_types(vals, (float, int, _NONE)))
        arr = _arrow(vals, ARROW_SCHEMA.field(name).type, blank)
        out = _range_bad(arr, flo, fhi)
        if out:
            blank(vals, out)
            arr = pa.array(vals, ARROW_SCHEMA.field(name).type)
        cols[name] = arr
    vals = column("logprobs")
    blank(vals, _bad_types(vals, (bool,)))
    cols["logprobs"] = vals

    cols["ts"] = _timestamps(column("ts"), blank)

    for name, fn in (("client_ip", _ip), ("country", _country)):
        vals = column(name)
        blank(vals, _bad_types(vals, (str, _NONE)))
        arr, out = _normalised(vals, fn)
        if out:
            blank(vals, out)
            arr, _ = _normalised(vals, fn)
        cols[name] = arr

    js, prompts, turns, overlaps, out = _messages(raw["messages"])
    bad.update(out)
    cols["messages"] = _json_strings(js)
    cols["prompt"], cols["user_turns"], cols["history_overlap"] = prompts, turns, overlaps
    attrs, out = _attributes(raw["attributes"])
    bad.update(out)
    cols["attributes"] = attrs
    assert all(len(v) == n for v in cols.values())
    return cols, bad


# Integer columns and the range their Arrow type holds: the model bounds some integers below only, so a
# valid record may still hold one too big to store (the per-row path used to fail the whole ingest).
_INT_RANGES = [
    (i, f.name, f.type, -(1 << (f.type.bit_width - 1)), (1 << (f.type.bit_width - 1)) - 1)
    for i, f in enumerate(ARROW_SCHEMA)
    if pa.types.is_integer(f.type)
]


def unstorable(values: list[Any]) -> str | None:
    """Why a validated row (from `to_values`) cannot be stored, or None when it can."""
    for i, name, typ, lo, hi in _INT_RANGES:
        v = values[i]
        if v is not None and not lo <= v <= hi:
            return f"{name}: {v} does not fit the store's {typ} column"
    return None


def to_batch(rows: list[list[Any]], fallback: Callable[[int], list[Any] | None]) -> pa.RecordBatch:
    """One record batch of `rows`, in order. Rows the fast path cannot vouch for are given to
    `fallback(i)`, which returns their `to_values` row, or None to drop the row (quarantined)."""
    try:
        cols, bad = fast_columns(rows)
    except (pa.ArrowException, OverflowError, ValueError):
        # An odd value Arrow itself refuses (an impossible date, a huge number): row by row.
        cols, bad = {}, set(range(len(rows)))
    if len(bad) == len(rows):
        vals = [v for v in map(fallback, range(len(rows))) if v is not None]
        return values_to_batch(vals)
    keep = np.ones(len(rows), dtype=bool)
    if bad:
        names = ARROW_SCHEMA.names
        patched: dict[int, list[Any]] = {}
        for i in sorted(bad):
            v = fallback(i)
            if v is None:
                keep[i] = False
            else:
                patched[i] = v
        for c, name in enumerate(names):
            col = cols[name]
            if not patched:
                break
            if isinstance(col, pa.Array):
                col = col.to_pylist()
            for i, v in patched.items():
                col[i] = v[c]
            cols[name] = col
    arrays = [
        col if isinstance(col, pa.Array) else pa.array(col, f.type)
        for col, f in ((cols[f.name], f) for f in ARROW_SCHEMA)
    ]
    batch = pa.RecordBatch.from_arrays(arrays, schema=ARROW_SCHEMA)
    if not keep.all():
        batch = batch.filter(pa.array(keep))
    return batch


def read_batches(
    path: Path, adapter: Adapter, quarantine: Quarantine, stats: IngestStats, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """Validated exchanges of one file as Arrow batches of up to `batch_rows` rows, in file order;
    bad rows go to the quarantine (file, line, reason) exactly as `read_exchanges` sends them."""
    read = ok = bad = 0
    recs: list[RawRecord] = []
    values: list[list[Any]] = []

    def fallback(i: int) -> list[Any] | None:
        nonlocal bad
        rec = recs[i]
        try:
            vals = to_values(validate(rec.data))  # type: ignore[arg-type]
        except ValidationError as e:
            reason: str | None = format_validation_error(e)
        except (OverflowError, ValueError, TypeError) as e:
            # A validator that fails outside pydantic's error handling (a date shifted before year 1
            # by its offset): a bad row, not a failed ingest.
            reason = f"invalid record: {type(e).__name__}: {e}"
        else:
            reason = unstorable(vals)
            if reason is None:
                return vals
        raw = rec.raw if rec.raw is not None else orjson.dumps(rec.data, default=str)
        quarantine.put(path, rec.line, reason or "", raw)
        bad += 1
        return None

    try:
        for rec in adapter.records(path):
            read += 1
            if rec.data is not None:
                recs.append(rec)
                values.append(row_values(rec.data))
                if len(recs) < batch_rows:
                    continue
            elif not recs:
                quarantine.put(path, rec.line, rec.error or "unreadable record", rec.raw)
                bad += 1
                continue
            # A full batch, or a row known bad: the rows before it go first, so the quarantine
            # stays in file order.
            b = to_batch(values, fallback)
            ok += b.num_rows
            recs, values = [], []
            yield b
            if rec.data is None:
                quarantine.put(path, rec.line, rec.error or "unreadable record", rec.raw)
                bad += 1
        if recs:
            b = to_batch(values, fallback)
            ok += b.num_rows
            recs, values = [], []
            yield b
    finally:
        stats.add(path, "read", read)
        stats.add(path, "ok", ok)
        stats.add(path, "quarantined", bad)
