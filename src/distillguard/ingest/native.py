"""distillguard's own JSONL: one `Exchange` as JSON per line (what the gateway's audit log writes)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, ClassVar

import orjson

from distillguard.exchange import Exchange
from distillguard.ingest.base import RawRecord, iter_json_lines, register


@register
class NativeJsonl:
    name: ClassVar[str] = "native"
    description: ClassVar[str] = "distillguard exchange JSONL (one Exchange per line)"

    def sniff(self, head: list[bytes]) -> bool:
        try:
            d = orjson.loads(head[0])
        except orjson.JSONDecodeError:
            return False
        return isinstance(d, dict) and "exchange_id" in d and "account_id" in d

    def records(self, path: Path) -> Iterator[RawRecord]:
        for lineno, obj, raw, err in iter_json_lines(path):
            if err is not None:
                yield RawRecord(lineno, None, err, raw)
            elif not isinstance(obj, dict):
                yield RawRecord(lineno, None, f"expected a JSON object, got {type(obj).__name__}", raw)
            else:
                yield RawRecord(lineno, obj)


def dump_line(ex: Exchange) -> bytes:
    """One native JSONL line (the writer side of this format)."""
    return orjson.dumps(ex.model_dump(mode="json", exclude_defaults=True)) + b"\n"


def write_jsonl(exchanges: Iterable[Exchange], out: IO[bytes]) -> int:
    n = 0
    for ex in exchanges:
        out.write(dump_line(ex))
        n += 1
    return n
