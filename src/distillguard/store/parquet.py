"""Ingest logs into one Parquet file of `ARROW_SCHEMA` rows, streaming in bounded batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from distillguard.exchange import ARROW_SCHEMA, Exchange, to_values, values_to_batch
from distillguard.ingest.base import (
    Adapter,
    IngestStats,
    Quarantine,
    detect_format,
    get_adapter,
    read_exchanges,
)

BATCH_ROWS = 16_384  # rows per Arrow batch: bounds memory whatever the log size
ROW_GROUP_ROWS = 131_072


class ParquetSink:
    """Appends Exchange rows to a Parquet file in bounded batches."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._w = pq.ParquetWriter(path, ARROW_SCHEMA, compression="zstd")
        self._rows: list[list[Any]] = []
        self.count = 0

    def add(self, ex: Exchange) -> None:
        self._rows.append(to_values(ex))
        if len(self._rows) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            self._w.write_batch(values_to_batch(self._rows), row_group_size=ROW_GROUP_ROWS)
            self.count += len(self._rows)
            self._rows.clear()

    def close(self) -> None:
        self.flush()
        self._w.close()


def write_exchanges(exchanges: Iterable[Exchange], path: Path) -> int:
    sink = ParquetSink(path)
    for ex in exchanges:
        sink.add(ex)
    sink.close()
    return sink.count


def ingest(
    paths: Sequence[Path],
    out: Path,
    fmt: str | None = None,
    quarantine_path: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> IngestStats:
    """Read every log into `out` (Parquet). Bad rows go to `quarantine_path`. Returns per-file counts.

    `on_progress(bytes_done_delta, rows_ok)` is called now and then, for progress bars.
    """
    stats = IngestStats()
    sink = ParquetSink(out)
    with Quarantine(quarantine_path) as q:
        for path in paths:
            adapter: Adapter = get_adapter(fmt) if fmt else detect_format(path)
            n = 0
            for _line, ex in read_exchanges(path, adapter, q, stats):
                sink.add(ex)
                n += 1
                if on_progress is not None and n % 10_000 == 0:
                    on_progress(0, 10_000)
            if on_progress is not None:
                on_progress(path.stat().st_size, n % 10_000)
            stats.add(path, "read", 0)  # a file with no row still shows in the summary
    sink.close()
    return stats
