"""Ingest logs into one Parquet file of `ARROW_SCHEMA` rows, streaming in bounded batches.

A big plain (uncompressed) log in a line-oriented format is read by several worker processes at once:
the file is cut into blocks at line boundaries, each worker parses, validates and converts its blocks
into Arrow batches, and this process writes the batches in file order, so the Parquet rows, the
quarantine (file, line, reason) and the counts are exactly those of a serial read. Compressed files, the
formats whose records span lines, and small files are read serially. Either way rows are validated and
converted a batch at a time, column by column (`ingest.columnar.read_batches`), with the per-row
validator only for the rows the column checks cannot vouch for.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import queue
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.exchange import ARROW_SCHEMA, Exchange, to_values, values_to_batch
from distillguard.ingest.base import (
    GZIP_MAGIC,
    ZSTD_MAGIC,
    Adapter,
    IngestError,
    IngestStats,
    LineRange,
    Quarantine,
    detect_format,
    get_adapter,
    reading_range,
)
from distillguard.ingest.columnar import read_batches

BATCH_ROWS = 16_384  # rows per Arrow batch (and, about, per row group): bounds memory whatever the log size
ROW_GROUP_ROWS = 131_072

# Parallel ingest. Formats whose records are independent lines (iter_json_lines, one record per line);
# the others pair records across lines or files, or are one JSON document, and are read serially.
SPLITTABLE_FORMATS = frozenset({"native"})
PARALLEL_MIN_BYTES = 128 << 20  # below this, worker start-up (~0.5 s of imports) eats most of the gain
BLOCK_BYTES = 16 << 20  # one worker task, ~6k exchanges of 2.5 KB: ~150 tasks for 1M keep workers even
WINDOW_PER_WORKER = 3  # blocks sent but not yet merged, per worker (bounds results held out of order)
WORKERS_ENV = "DISTILLGUARD_INGEST_WORKERS"  # worker processes (1 = serial); default: the usable CPUs


class ParquetSink:
    """Appends Exchange rows (or ready Arrow batches, in order) to a Parquet file in bounded batches."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._w = pq.ParquetWriter(path, ARROW_SCHEMA, compression="zstd")
        self._rows: list[list[Any]] = []
        self._batches: list[pa.RecordBatch] = []  # always ahead of _rows in file order
        self._batched = 0
        self.count = 0

    def add(self, ex: Exchange) -> None:
        self._rows.append(to_values(ex))
        if len(self._rows) + self._batched >= BATCH_ROWS:
            self.flush()

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Append rows already converted (by an ingest worker); they follow every row added before."""
        if self._rows:
            self._batches.append(values_to_batch(self._rows))
            self._batched += len(self._rows)
            self._rows = []
        self._batches.append(batch)
        self._batched += batch.num_rows
        if self._batched >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            self._batches.append(values_to_batch(self._rows))
            self._batched += len(self._rows)
            # A new list rather than clear(): the old one goes with the batch built from it.
            self._rows = []
        if self._batched:
            # One write per ~BATCH_ROWS rows: each write becomes one row group.
            self._w.write_table(
                pa.Table.from_batches(self._batches, schema=ARROW_SCHEMA), row_group_size=ROW_GROUP_ROWS
            )
            self.count += self._batched
            self._batches = []
            self._batched = 0

    def close(self) -> None:
        self.flush()
        self._w.close()


def write_exchanges(exchanges: Iterable[Exchange], path: Path) -> int:
    sink = ParquetSink(path)
    for ex in exchanges:
        sink.add(ex)
    sink.close()
    return sink.count


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Ingest allocates millions of small containers and frees them in batches without making cycles;
    # the cyclic collector would walk every live one many times over (a sixth of the ingest time).
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def ingest_workers() -> int:
    """Worker processes for a parallel ingest: $DISTILLGUARD_INGEST_WORKERS, else the usable CPUs."""
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError as e:
            raise ValueError(f"{WORKERS_ENV}={env!r}: expected a whole number of workers") from e
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _splittable(path: Path, adapter: Adapter, workers: int) -> bool:
    if workers < 2 or adapter.name not in SPLITTABLE_FORMATS or not sys.executable:
        return False
    if path.stat().st_size < PARALLEL_MIN_BYTES:
        return False
    with open(path, "rb") as f:
        magic = f.read(4)
    return not (magic.startswith(GZIP_MAGIC) or magic == ZSTD_MAGIC)


def ingest(
    paths: Sequence[Path],
    out: Path,
    fmt: str | None = None,
    quarantine_path: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    *,
    workers: int | None = None,
) -> IngestStats:
    """Read every log into `out` (Parquet). Bad rows go to `quarantine_path`. Returns per-file counts.

    `on_progress(bytes_done_delta, rows_ok)` is called now and then, for progress bars. `workers`
    (default `ingest_workers()`) processes read big plain files in parallel; the output is the same.
    """
    n_workers = ingest_workers() if workers is None else max(1, workers)
    stats = IngestStats()
    sink = ParquetSink(out)
    try:
        with Quarantine(quarantine_path) as q, _gc_paused():
            for path in paths:
                adapter: Adapter = get_adapter(fmt) if fmt else detect_format(path)
                if _splittable(path, adapter, n_workers):
                    _ingest_parallel(path, adapter, sink, q, stats, n_workers, on_progress)
                else:
                    _ingest_serial(path, adapter, sink, q, stats, on_progress)
                stats.add(path, "read", 0)  # a file with no row still shows in the summary
    except BaseException:
        with suppress(Exception):  # release the file; the error that stopped the read is the one to see
            sink.close()
        raise
    sink.close()
    return stats


def _ingest_serial(
    path: Path,
    adapter: Adapter,
    sink: ParquetSink,
    q: Quarantine,
    stats: IngestStats,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    for batch in read_batches(path, adapter, q, stats, BATCH_ROWS):
        sink.add_batch(batch)
        if on_progress is not None:
            on_progress(0, batch.num_rows)
    if on_progress is not None:
        on_progress(path.stat().st_size, 0)


# -- parallel ingest ------------------------------------------------------------------------------------
# Workers are plain child interpreters (`python -c ... _worker_main`), not multiprocessing: nothing of the
# parent is copied (a fork would copy the threads of progress bars and Arrow's pools mid-state) and the
# caller's __main__ is never re-run (spawn would, breaking any script without a __main__ guard). Each
# worker reads "index start end" tasks on stdin and answers each with one frame on stdout:
#   MAGIC, u64 meta length, u64 Arrow length, pickled meta (counts, bad rows), Arrow IPC stream (rows).
# Arrow's IPC format is the batches' own memory layout, so a frame costs one copy each way. Tasks go to
# whichever worker is free; results are merged strictly in file order.

_MAGIC = b"DGI1"
_HEAD = struct.Struct("<4sQQ")
_PIPE_BYTES = 1 << 20  # bigger pipes: fewer wake-ups while frames of many MB stream through


def _blocks(path: Path, size: int) -> Iterator[tuple[int, int]]:
    """[start, end) byte ranges of about `size` bytes, each ending just after a newline (or at EOF)."""
    total = path.stat().st_size
    with open(path, "rb") as f:
        start = 0
        while start < total:
            f.seek(min(start + size, total))
            f.readline()  # to the end of the line the cut fell in
            end = min(f.tell(), total)
            yield start, end
            start = end


@dataclass
class _Part:
    """What a worker made of one block: Arrow batches, bad rows (block-relative lines), counts."""

    batches: list[pa.RecordBatch] = field(default_factory=list)
    bad: list[tuple[int, str, bytes | None]] = field(default_factory=list)
    read: int = 0
    ok: int = 0
    lines: int = 0


class _Collect(Quarantine):
    """A worker's quarantine: kept in memory and replayed by the parent with absolute line numbers."""

    def __init__(self) -> None:
        super().__init__(None)
        self.items: list[tuple[int, str, bytes | None]] = []

    def put(self, file: Path, line: int, reason: str, raw: bytes | None = None) -> None:
        self.count += 1
        self.items.append((line, reason, raw))


def _read_block(path: Path, adapter: Adapter, start: int, end: int) -> _Part:
    """The exchanges of one block as Arrow batches: the adapter and checks of a serial read, unchanged."""
    q = _Collect()
    st = IngestStats()
    rng = LineRange(start, end)
    part = _Part()
    with reading_range(path, rng):
        part.batches.extend(read_batches(path, adapter, q, st, BATCH_ROWS))
    d = st.files.get(str(path), {})
    part.read, part.ok, part.lines, part.bad = d.get("read", 0), d.get("ok", 0), rng.lines, q.items
    return part


def _write_frame(out: BinaryIO, meta: Any, batches: list[pa.RecordBatch]) -> None:
    m = pickle.dumps(meta, protocol=pickle.HIGHEST_PROTOCOL)
    sink = pa.BufferOutputStream()
    if batches:
        with pa.ipc.new_stream(sink, ARROW_SCHEMA) as w:
            for b in batches:
                w.write_batch(b)
    arrow = sink.getvalue()
    out.write(_HEAD.pack(_MAGIC, len(m), arrow.size))
    out.write(m)
    out.write(memoryview(arrow))
    out.flush()


def _worker_main() -> None:
    """Entry point of a worker process: `python -c '...; _worker_main()' SYS_PATH_JSON PATH FORMAT`."""
    gc.disable()  # see _gc_paused: a worker only ever runs ingest
    # Frames go to the original stdout; anything else printed goes to stderr and cannot corrupt them.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    path = Path(sys.argv[2])
    adapter = get_adapter(sys.argv[3])
    for task in sys.stdin.buffer:
        idx, start, end = (int(x) for x in task.split())
        try:
            part = _read_block(path, adapter, start, end)
        except BaseException:
            _write_frame(out, ("error", idx, traceback.format_exc()), [])
            raise
        _write_frame(out, ("ok", idx, part.read, part.ok, part.lines, part.bad), part.batches)


class _Worker:
    """One worker process, its pipes, and a thread that reads its frames as soon as they are written."""

    def __init__(self, path: Path, fmt: str, log: BinaryIO, results: queue.SimpleQueue[Any]) -> None:
        self.sent: deque[int] = deque()  # blocks sent and not yet answered, oldest first
        # The parent's sys.path first, so the child imports this package (and everything else) from
        # wherever the parent did: installed, a source tree, or a path a script added.
        code = (
            "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
            "from distillguard.store.parquet import _worker_main; _worker_main()"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(sys.path), str(path), fmt],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        for pipe in (self.stdin, self.stdout):
            with suppress(ImportError, OSError, AttributeError):  # Linux only, and only a speed-up
                import fcntl

                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        self.reader = threading.Thread(target=self._read, args=(results,), daemon=True)
        self.reader.start()

    def send(self, idx: int, start: int, end: int) -> None:
        self.stdin.write(b"%d %d %d\n" % (idx, start, end))
        self.stdin.flush()
        self.sent.append(idx)

    def _read(self, results: queue.SimpleQueue[Any]) -> None:
        # A worker never waits for the parent to want its result (the pipe would fill and stall it):
        # frames are read here as they come, and None says the worker's output ended.
        try:
            while True:
                head = self.stdout.read(_HEAD.size)
                if len(head) < _HEAD.size:
                    break
                magic, n_meta, n_arrow = _HEAD.unpack(head)
                if magic != _MAGIC:
                    break
                meta = pickle.loads(self.stdout.read(n_meta))
                data = self.stdout.read(n_arrow) if n_arrow else b""
                if len(data) < n_arrow:
                    break
                results.put((self, meta, pa.py_buffer(data) if n_arrow else None))
        except (OSError, ValueError, pickle.UnpicklingError):
            pass  # the pipe closed under us: reported as the end of output
        results.put((self, None, None))


def _ingest_parallel(
    path: Path,
    adapter: Adapter,
    sink: ParquetSink,
    q: Quarantine,
    stats: IngestStats,
    n_workers: int,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    blocks = enumerate(_blocks(path, BLOCK_BYTES))
    spans: dict[int, tuple[int, int]] = {}  # block index -> (start, bytes), for blocks not yet merged
    done: dict[int, tuple[Any, pa.Buffer | None]] = {}  # results that wait for an earlier block
    merged = 0  # blocks merged, in file order
    line0 = 0  # lines of the file before the next block to merge
    results: queue.SimpleQueue[Any] = queue.SimpleQueue()
    with tempfile.TemporaryFile() as log:
        workers: list[_Worker] = []
        try:
            for _ in range(n_workers):
                workers.append(_Worker(path, adapter.name, log, results))

            def feed(w: _Worker) -> None:
                # Two tasks per worker keep it busy while its last result travels. A window of blocks
                # sent but not merged bounds the memory of results waiting for a slow earlier block.
                while len(w.sent) < 2 and len(spans) < WINDOW_PER_WORKER * n_workers:
                    nxt = next(blocks, None)
                    if nxt is None:
                        return
                    idx, (start, end) = nxt
                    spans[idx] = (start, end - start)
                    try:
                        w.send(idx, start, end)
                    except BrokenPipeError:
                        raise IngestError(_worker_failure(path, start, w, log)) from None

            for w in workers:
                feed(w)
            while spans:
                w, meta, arrow = results.get()
                if meta is None:
                    if w.sent:  # output ended with tasks unanswered: the worker died
                        raise IngestError(_worker_failure(path, spans[w.sent[0]][0], w, log))
                    continue
                w.sent.remove(meta[1])
                if meta[0] != "ok":
                    raise IngestError(f"{path}: ingest worker failed at byte {spans[meta[1]][0]}:\n{meta[2]}")
                done[meta[1]] = (meta, arrow)
                while merged in done:
                    line0 = _merge(
                        path, done.pop(merged), spans.pop(merged)[1], line0, sink, q, stats, on_progress
                    )
                    merged += 1
                for x in workers:
                    feed(x)
        except BaseException:
            for wk in workers:
                wk.proc.kill()  # mid-block: nothing left to wait for
            raise
        finally:
            for wk in workers:
                with suppress(OSError):
                    wk.stdin.close()  # end of tasks: the worker exits
            for wk in workers:
                wk.proc.wait()
                wk.reader.join()
                wk.stdout.close()


def _merge(
    path: Path,
    result: tuple[Any, pa.Buffer | None],
    nbytes: int,
    line0: int,
    sink: ParquetSink,
    q: Quarantine,
    stats: IngestStats,
    on_progress: Callable[[int, int], None] | None,
) -> int:
    """Write one block's rows and bad rows (lines made absolute); returns the lines before the next."""
    (_, _idx, n_read, n_ok, n_lines, bad), arrow = result
    if arrow is not None:
        for b in pa.ipc.open_stream(arrow):
            sink.add_batch(b)
    for line, reason, raw in bad:
        q.put(path, line0 + line, reason, raw)
    stats.add(path, "read", n_read)
    stats.add(path, "ok", n_ok)
    stats.add(path, "quarantined", len(bad))
    if on_progress is not None:
        on_progress(nbytes, n_ok)
    return line0 + n_lines


def _worker_failure(path: Path, start: int, w: _Worker, log: BinaryIO) -> str:
    with suppress(OSError):
        w.stdin.close()
    code = w.proc.wait()
    log.seek(0)
    tail = log.read()[-4000:].decode("utf-8", "replace").strip()
    return f"{path}: ingest worker exited with status {code} at byte {start}" + (f":\n{tail}" if tail else "")
