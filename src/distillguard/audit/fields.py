"""Field readers shared by the usage parsers: each names the JSON path of a bad value in its error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


class RowError(ValueError):
    """A usage row (or bucket) that cannot be counted; the message starts with the JSON path at fault."""


def count(obj: dict[str, Any], key: str, where: str, required: bool = True) -> int:
    """A non-negative integer token or request count (`None` or absent is 0 when not required)."""
    v = obj.get(key)
    if v is None:
        if required:
            raise RowError(f"{where}.{key}: missing (a token count is required)")
        return 0
    # bool is an int subclass: `true` is not a count
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not v.is_integer()):
        raise RowError(f"{where}.{key}: expected a non-negative integer, got {v!r}")
    if v < 0:
        raise RowError(f"{where}.{key}: negative count {v!r}")
    return int(v)


def text(obj: dict[str, Any], key: str, where: str) -> str | None:
    """An optional grouping id (project, key, model...): a string or null."""
    v = obj.get(key)
    if v is None or isinstance(v, str):
        return v or None
    raise RowError(f"{where}.{key}: expected a string or null, got {v!r}")


def unix_time(obj: dict[str, Any], key: str, where: str) -> datetime:
    """A bucket bound in Unix seconds (OpenAI)."""
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise RowError(f"{where}.{key}: expected Unix seconds, got {v!r}")
    try:
        return datetime.fromtimestamp(v, UTC)
    except (OverflowError, OSError, ValueError):
        raise RowError(f"{where}.{key}: {v!r} is not a valid time") from None


def rfc3339(obj: dict[str, Any], key: str, where: str) -> datetime:
    """A bucket bound as an RFC 3339 string (Anthropic); a time without an offset is taken as UTC."""
    v = obj.get(key)
    if not isinstance(v, str):
        raise RowError(f"{where}.{key}: expected an RFC 3339 time, got {v!r}")
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise RowError(f"{where}.{key}: {v!r} is not an RFC 3339 time") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def buckets(page: Any, where: str = "page") -> list[Any]:
    """The `data` list of a page."""
    if not isinstance(page, dict):
        raise RowError(f"{where}: expected a page object, got {type(page).__name__}")
    data = page.get("data")
    if not isinstance(data, list):
        raise RowError(f"{where}.data: expected a list of buckets, got {data!r:.60}")
    return data


def int_leaves(arr: pa.Array, prefix: str = "") -> list[tuple[str, pa.Array]]:
    """(dotted name, array) of every integer field of a (nested) struct array."""
    out = []
    for i in range(arr.type.num_fields):
        f = arr.type.field(i)
        child = arr.field(i)
        if pa.types.is_struct(f.type):
            out += int_leaves(child, f"{prefix}{f.name}.")
        elif pa.types.is_integer(f.type):
            out.append((prefix + f.name, child))
    return out


def _as_float(t: pa.StructType) -> pa.StructType:
    """The integer fields of `t` (nested ones too) as floats; the rest left out (converting is costly)."""
    fields = []
    for f in t:
        if pa.types.is_struct(f.type):
            fields.append((f.name, _as_float(f.type)))
        elif pa.types.is_integer(f.type):
            fields.append((f.name, pa.float64()))
    return pa.struct(fields)


def checked_structs(rows: list[Any], struct: pa.StructType) -> pa.StructArray | None:
    """`rows` (result objects) as one struct array, or None when any row needs the row-by-row path.

    Converting in Arrow's C++ is the fast path; it must accept only what the row-by-row readers accept:
    strings where ids go, whole non-negative numbers where counts go. Arrow rejects strings and bools for
    integers but truncates 5.5 to 5, so the rows are also converted with float counts and compared.
    """
    try:
        a = pa.array(rows, struct)
        f = pa.array(rows, _as_float(struct))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    if a.null_count:
        return None
    floats = dict(int_leaves_float(f))
    for name, col in int_leaves(a):
        # min_count=0: an all-null column (a field no row has) is true, not null
        if not pc.all(pc.equal(pc.cast(col, pa.float64()), floats[name]), min_count=0).as_py():
            return None
        if pc.any(pc.less(col, 0)).as_py():
            return None
    return a


def int_leaves_float(arr: pa.Array, prefix: str = "") -> list[tuple[str, pa.Array]]:
    out = []
    for i in range(arr.type.num_fields):
        f = arr.type.field(i)
        if pa.types.is_struct(f.type):
            out += int_leaves_float(arr.field(i), f"{prefix}{f.name}.")
        elif pa.types.is_floating(f.type):
            out.append((prefix + f.name, arr.field(i)))
    return out


Result = tuple[str, dict[str, Any] | None, str | None, Any]


def bucket_results(
    page: Any,
    start_key: str,
    end_key: str,
    parse_time: Callable[[dict[str, Any], str, str], Any],
    record: Callable[[Any, str, Any, Any], dict[str, Any]],
) -> Iterator[Result]:
    """(JSON path, usage record or None, error, raw value) for every result of every bucket of a usage
    page; the two APIs differ only in their bucket bounds' names and formats and their result records."""
    try:
        data = buckets(page)
    except RowError as e:
        yield "page", None, str(e), page
        return
    for i, b in enumerate(data):
        w = f"data[{i}]"
        try:
            if not isinstance(b, dict):
                raise RowError(f"{w}: expected a bucket object, got {type(b).__name__}")
            start, end = parse_time(b, start_key, w), parse_time(b, end_key, w)
            if end <= start:
                raise RowError(f"{w}.{end_key}: {b.get(end_key)!r} is not after {start_key}")
            res = b.get("results")
            if not isinstance(res, list):
                raise RowError(f"{w}.results: expected a list, got {res!r:.60}")
        except RowError as e:
            yield w, None, str(e), b
            continue
        for j, r in enumerate(res):
            rw = f"{w}.results[{j}]"
            try:
                yield rw, record(r, rw, start, end), None, r
            except RowError as e:
                yield rw, None, str(e), r


def nonempty(a: pa.Array) -> pa.Array:
    """Empty ids are no id (as the row-by-row reader reads them)."""
    return pc.if_else(pc.equal(a, ""), pa.scalar(None, pa.string()), a)
