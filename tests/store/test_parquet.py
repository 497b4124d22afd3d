"""Ingest into Parquet: the parallel path gives exactly what the serial path gives; the fast paths of
`to_values` agree with their plain definitions."""

from __future__ import annotations

import gzip
import itertools
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pyarrow.parquet as pq
import pytest

from distillguard.exchange import Exchange, to_values
from distillguard.ingest.base import (
    IngestError,
    IngestStats,
    LineRange,
    Quarantine,
    iter_json_lines,
    reading_range,
)
from distillguard.ingest.native import NativeJsonl, dump_line
from distillguard.store import parquet
from distillguard.store.parquet import ingest, ingest_workers

T0 = datetime(2026, 11, 1, tzinfo=UTC)
BIG = "lorem ipsum " * (2 * 1024 * 1024 // 12)  # a 2 MB prompt: bigger than a block


def _good(i: int, prompt: str = "") -> bytes:
    msgs: list[Any] = [
        {"role": "user", "content": prompt or f"question {i}: how do I sort a list in Python?"}
    ]
    if i % 3 == 0:  # a follow-up that quotes the answer before it (history_overlap)
        msgs = [
            {"role": "user", "content": "How do I sort a list?"},
            {"role": "assistant", "content": "Use sorted(items) or items.sort(); both accept a key."},
            {"role": "user", "content": "Why would sorted() with a key be slower than sort()?"},
        ]
    ex = Exchange(
        exchange_id=f"e-{i}",
        ts=T0 + timedelta(seconds=i),
        account_id=f"acct-{i % 7}",
        model="acme-large-2",
        client_ip=f"10.0.{i % 5}.{i % 250 + 1}",
        messages=msgs,
        response_text=f"Answer {i}. " + "Sorting is stable in Python. " * (i % 40),
        temperature=0.7 if i % 2 else None,
        attributes={"n": str(i)} if i % 4 == 0 else {},
    )
    return dump_line(ex)


def _bad(i: int, kind: int) -> bytes:
    d = orjson.loads(_good(i))
    if kind == 0:
        return b'{"exchange_id": "e-x", "ts": \n'  # cut short
    if kind == 1:
        return _good(i).replace(b'"e-', b'"e-\xff', 1)  # not UTF-8
    if kind == 2:
        return orjson.dumps({**d, "temperature": "hot"}) + b"\n"  # wrong type
    if kind == 3:
        return orjson.dumps({k: v for k, v in d.items() if k != "model"}) + b"\n"  # missing field
    if kind == 4:
        return b"[1, 2, 3]\n"  # not an object
    return orjson.dumps({**d, "client_ip": "999.1.1.1"}) + b"\n"  # bad address


def _mixed_log(path: Path, n: int = 3000, seed: int = 1) -> tuple[list[str], list[int]]:
    """A log with bad rows, blank lines and two huge rows scattered; returns good ids and bad lines."""
    rnd = random.Random(seed)
    lines: list[bytes] = []
    good: list[str] = []
    bad: list[int] = []
    lines.append(_bad(0, 0))  # line 1 is bad
    bad.append(1)
    for i in range(1, n):
        r = rnd.random()
        if r < 0.03:
            lines.append(_bad(i, rnd.randrange(6)))
            bad.append(len(lines))
        elif r < 0.04:
            lines.append(b"   \n" if r < 0.035 else b"\n")  # blank: neither read nor counted
        else:
            big = i in (n // 3, 2 * n // 3)
            lines.append(_good(i, BIG if big else ""))
            good.append(f"e-{i}")
    lines.append(b'{"exchange_id": "e-last", "ts": "2026')  # a last line cut mid-write, no newline
    bad.append(len(lines))
    path.write_bytes(b"".join(lines))
    return good, bad


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small test files through the parallel path, cut into many blocks (rows straddle no boundary).
    monkeypatch.setattr(parquet, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(parquet, "BLOCK_BYTES", 64 * 1024)


def _run(log: Path, out: Path, workers: int) -> tuple[Any, bytes, IngestStats, list[tuple[int, int]]]:
    calls: list[tuple[int, int]] = []
    stats = ingest(
        [log],
        out / "ex.parquet",
        fmt="native",  # the first line is bad, so the format is named, not sniffed
        quarantine_path=out / "q.jsonl",
        on_progress=lambda b, r: calls.append((b, r)),
        workers=workers,
    )
    q = (out / "q.jsonl").read_bytes() if (out / "q.jsonl").exists() else b""
    return pq.read_table(out / "ex.parquet"), q, stats, calls


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_ingest_gives_the_serial_rows_quarantine_and_counts(tmp_path: Path, workers: int) -> None:
    log = tmp_path / "mixed.jsonl"
    good, bad = _mixed_log(log)
    (tmp_path / "s").mkdir()
    (tmp_path / "p").mkdir()
    t1, q1, s1, c1 = _run(log, tmp_path / "s", workers=1)
    t2, q2, s2, c2 = _run(log, tmp_path / "p", workers=workers)

    assert t1.column("exchange_id").to_pylist() == good  # every good row, in file order
    assert t2.equals(t1)
    assert q2 == q1  # same lines, reasons and raw bytes, in the same order
    assert [orjson.loads(x)["line"] for x in q2.splitlines()] == bad
    assert (
        s2.files
        == s1.files
        == {str(log): {"read": len(good) + len(bad), "ok": len(good), "quarantined": len(bad)}}
    )
    # progress adds up to the file and its rows either way
    assert sum(b for b, _ in c2) == sum(b for b, _ in c1) == log.stat().st_size
    assert sum(r for _, r in c2) == sum(r for _, r in c1) == len(good)
    assert len(c2) > 10  # it did run in many blocks


@pytest.mark.usefixtures("small_blocks")
def test_parallel_ingest_of_several_files_keeps_their_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    good_a, bad_a = _mixed_log(a, 800, seed=2)
    good_b, bad_b = _mixed_log(b, 800, seed=3)
    gz = tmp_path / "c.jsonl.gz"
    gz.write_bytes(gzip.compress(b.read_bytes()))  # compressed: read serially, in its turn
    stats = ingest(
        [a, gz, b], tmp_path / "ex.parquet", "native", quarantine_path=tmp_path / "q.jsonl", workers=2
    )
    ids = pq.read_table(tmp_path / "ex.parquet").column("exchange_id").to_pylist()
    assert ids == good_a + good_b + good_b
    quarantined = [orjson.loads(x) for x in (tmp_path / "q.jsonl").read_bytes().splitlines()]
    assert [(q["file"], q["line"]) for q in quarantined] == (
        [(str(a), n) for n in bad_a] + [(str(gz), n) for n in bad_b] + [(str(b), n) for n in bad_b]
    )
    assert stats.ok == len(good_a) + 2 * len(good_b)


def test_small_and_compressed_files_are_read_serially(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no(*_a: object, **_k: object) -> None:
        raise AssertionError("parallel path taken")

    monkeypatch.setattr(parquet, "_ingest_parallel", no)
    log = tmp_path / "small.jsonl"
    good, _bad = _mixed_log(log, 200)
    assert ingest([log], tmp_path / "a.parquet", "native", workers=4).ok == len(
        good
    )  # under PARALLEL_MIN_BYTES
    monkeypatch.setattr(parquet, "PARALLEL_MIN_BYTES", 0)
    gz = tmp_path / "small.jsonl.gz"
    gz.write_bytes(gzip.compress(log.read_bytes()))
    assert ingest([gz], tmp_path / "b.parquet", "native", workers=4).ok == len(good)


def test_blocks_cover_the_file_and_end_after_a_newline(tmp_path: Path) -> None:
    log = tmp_path / "mixed.jsonl"
    _mixed_log(log, 500)
    data = log.read_bytes()
    blocks = list(parquet._blocks(log, 10_000))
    assert blocks[0][0] == 0 and blocks[-1][1] == len(data)
    assert all(e == s for (_, e), (s, _) in itertools.pairwise(blocks))
    assert all(data[e - 1 : e] == b"\n" for _, e in blocks[:-1])
    # a block holding a huge row is stretched to the end of that row
    assert max(e - s for s, e in blocks) > len(BIG)


def test_reading_range_numbers_lines_from_the_range_start(tmp_path: Path) -> None:
    log = tmp_path / "x.jsonl"
    log.write_bytes(b'{"a": 1}\n\n{"a": 2}\nnot json\n{"a": 3}\n')
    start = len(b'{"a": 1}\n\n')
    rng = LineRange(start, log.stat().st_size)
    with reading_range(log, rng):
        got = [(n, obj, err is not None) for n, obj, _raw, err in iter_json_lines(log)]
    assert got == [(1, {"a": 2}, False), (2, None, True), (3, {"a": 3}, False)]
    assert rng.lines == 3
    # outside the block the whole file is read again
    assert [n for n, *_ in iter_json_lines(log)] == [1, 3, 4, 5]


def test_a_failing_worker_is_a_clear_error(tmp_path: Path) -> None:
    class Unknown(NativeJsonl):
        name: ClassVar[str] = "no-such-format"  # the worker cannot find it and exits at start-up

    log = tmp_path / "x.jsonl"
    log.write_bytes(_good(1) * 10)
    sink = parquet.ParquetSink(tmp_path / "x.parquet")
    with pytest.raises(IngestError, match="ingest worker exited with status 1"):
        parquet._ingest_parallel(log, Unknown(), sink, Quarantine(None), IngestStats(), 2, None)
    sink.close()


@pytest.mark.usefixtures("small_blocks")
def test_a_worker_dying_mid_file_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    log = tmp_path / "mixed.jsonl"
    _mixed_log(log, 3000)
    killed: list[int] = []
    # other tests may leave children of this process running (servers): kill one of ingest's own
    before = {c.pid for c in psutil.Process().children()}

    def kill_one_worker(_nbytes: int, _rows: int) -> None:
        if not killed:
            child = next(c for c in psutil.Process().children() if c.pid not in before)
            killed.append(child.pid)
            child.kill()

    with pytest.raises(IngestError, match=r"ingest worker exited with status -9 at byte \d+"):
        ingest([log], tmp_path / "x.parquet", "native", on_progress=kill_one_worker, workers=2)
    assert killed and not psutil.pid_exists(killed[0])


def test_worker_count_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(parquet.WORKERS_ENV, "3")
    assert ingest_workers() == 3
    monkeypatch.setenv(parquet.WORKERS_ENV, "many")
    with pytest.raises(ValueError, match="whole number"):
        ingest_workers()
    monkeypatch.delenv(parquet.WORKERS_ENV)
    assert ingest_workers() >= 1


# -- to_values: history_overlap, computed by search, equals its definition by tokenising ----------------

_WORD = re.compile(r"\w{4,}")


def _reference_overlap(prompt: str, answer: str) -> float:
    pw = set(_WORD.findall(prompt[:4000].lower()))
    return len(pw & set(_WORD.findall(answer[:8000].lower()))) / len(pw) if pw else 0.0


def _text(rnd: random.Random, n: int) -> str:
    words = ["sort", "sorted", "sorting", "list", "lists", "python", "Straße", "naïve", "émigré", "ПРИВЕТ",
             "привет", "数据库", "data_base", "x_y_z", "1234", "abc", "İstanbul", "ǅemal", "ﬁnal", "keys"]  # fmt: skip
    seps = [" ", "  ", ", ", ". ", "\n", "-", "_", "'", "(", ")", "\u00a0", "—", ""]
    return "".join(rnd.choice(words) + rnd.choice(seps) for _ in range(n))


def test_history_overlap_matches_its_definition() -> None:
    rnd = random.Random(5)
    cases = [
        ("", "anything"),
        ("why?", "because"),
        ("Sort sorted SORTING", "sorting is sorted"),
        ("a" * 5000, "a" * 9000),
    ]
    cases += [(_text(rnd, rnd.randrange(1, 60)), _text(rnd, rnd.randrange(1, 3000))) for _ in range(400)]
    for prompt, answer in cases:
        ex = Exchange(
            exchange_id="e",
            ts=T0,
            account_id="a",
            model="m",
            messages=[
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": answer},
                {"role": "user", "content": prompt},
            ],
        )
        got = to_values(ex)[-1]
        assert got == _reference_overlap(prompt, answer), (prompt[:80], answer[:80])
