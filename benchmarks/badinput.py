"""The bad-input benchmark: a realistic log salted with every kind of bad row, scanned end to end.

The log is `n_good` real rows of the bench log with bad rows (corrupt JSON, wrong types, missing fields,
non-UTF-8 bytes, a 10 MB corrupt line, a last line cut mid-write...) scattered among them, plus rows that
look odd but are good (a 10 MB prompt, CRLF, unknown fields, emoji) and blank lines (neither). It is big
enough to take the parallel ingest path. The checks: the scan exits 0; the quarantine holds exactly the
bad lines, by number, each with its file and a reason; Parquet holds exactly the good rows, in order;
and a serial ingest of the same log gives the same quarantine and rows (the parallel path loses nothing).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

BIG = 10 * 1024 * 1024  # "a 10 MB prompt"


def _bad_rows(d: dict[str, Any], line: bytes) -> list[tuple[str, bytes]]:
    """(what, line bytes) for each kind of bad row, built from one good row `d` (`line` as read)."""

    def js(x: Any) -> bytes:
        return orjson.dumps(x) + b"\n"

    def without(k: str) -> bytes:
        return js({f: v for f, v in d.items() if f != k})

    big_bad = dict(d, messages=[{"role": "user", "content": "x" * (BIG // 2) + "\ufffd" + "y" * (BIG // 2)}])
    return [
        ("corrupt: cut in half", line[: len(line) // 2] + b"\n"),
        ("corrupt: binary garbage", b"\x00\x01\x02 binary \xfe\xff garbage\n"),
        ("corrupt: NaN literal", line.rstrip(b"\n")[:-1] + b', "temperature": NaN}\n'),
        ("corrupt: nested 2000 deep", b"[" * 2000 + b"]" * 2000 + b"\n"),
        (
            "corrupt: lone surrogate escape",
            js(dict(d, end_user="x")).replace(b'"end_user":"x"', b'"end_user":"\\ud800"'),
        ),
        (
            "non-UTF-8: byte 0xff in a string",
            js(dict(d, end_user="x")).replace(b'"end_user":"x"', b'"end_user":"\xff"'),
        ),
        (
            "non-UTF-8: Latin-1 text",
            js(dict(d, end_user="café")).replace("café".encode(), "café".encode("latin-1")),
        ),
        ("non-UTF-8: a byte order mark", b"\xef\xbb\xbf" + line),
        ("non-UTF-8: a 10 MB line", js(big_bad).replace("\ufffd".encode(), b"\xff")),
        ("wrong type: temperature", js(dict(d, temperature="hot"))),
        ("wrong type: messages", js(dict(d, messages="hello"))),
        ("wrong type: ts", js(dict(d, ts="yesterday"))),
        ("wrong type: account_id", js(dict(d, account_id=12345))),
        ("out of range: n", js(dict(d, n=0))),
        ("out of range: status", js(dict(d, status=999))),
        ("invalid: client_ip", js(dict(d, client_ip="999.1.1.1"))),
        ("invalid: country", js(dict(d, country="Narnia"))),
        ("invalid: empty account_id", js(dict(d, account_id=""))),
        ("missing: exchange_id", without("exchange_id")),
        ("missing: account_id", without("account_id")),
        ("missing: model", without("model")),
        ("missing: ts", without("ts")),
        ("not an object: array", b"[1, 2, 3]\n"),
        ("not an object: string", b'"an exchange"\n'),
        ("not an object: null", b"null\n"),
        ("not an object: number", b"42\n"),
    ]


def _odd_good_rows(d: dict[str, Any], line: bytes) -> list[tuple[str, dict[str, Any], bytes]]:
    """Rows that look unusual but are valid: (what, record, line bytes). Ids are made unique."""
    big = "lorem ipsum dolor sit amet " * (BIG // 27 + 1)
    rows = [
        ("a 10 MB prompt", dict(d, messages=[{"role": "user", "content": big[:BIG]}])),
        ("unknown extra fields", dict(d, x_gateway_region="eu-west-1", x_trace={"id": 7})),
        ("emoji and CJK", dict(d, messages=[{"role": "user", "content": "用中文解释递归 🙂 please"}])),
        ("CRLF line end", dict(d)),
    ]
    out = []
    for i, (what, r) in enumerate(rows):
        r = dict(r, exchange_id=f"bench-odd-{i}")
        b = orjson.dumps(r) + (b"\r\n" if what == "CRLF line end" else b"\n")
        out.append((what, r, b))
    return out


def build(source: Path, out: Path, n_good: int, seed: int = 11) -> dict[str, Any]:
    """Write the salted log; return what a correct scan must find (good ids, bad lines and kinds)."""
    good_lines: list[bytes] = []
    with open(source, "rb") as src:
        for line in src:
            if len(good_lines) >= n_good:
                break
            good_lines.append(line)
    d0 = orjson.loads(good_lines[0])
    bad = _bad_rows(d0, good_lines[0])
    odd = _odd_good_rows(d0, good_lines[0])
    rnd = random.Random(seed)
    # Each bad kind twice at random places, once more as the very first line; blank lines here and there.
    events: list[tuple[str, Any]] = [("bad", b) for b in bad * 2] + [("odd", o) for o in odd]
    events += [("blank", b"\n"), ("blank", b"  \t \n")] * 5
    slots = sorted(rnd.sample(range(1, len(good_lines)), len(events)))
    rnd.shuffle(events)
    at = dict(zip(slots, events, strict=True))

    expect_good: list[str] = []
    expect_bad: list[tuple[int, str]] = []
    lineno = 0
    with open(out, "wb") as f:

        def put(b: bytes) -> None:
            nonlocal lineno
            f.write(b)
            lineno += 1

        first = bad[0]
        put(first[1])
        expect_bad.append((lineno, first[0]))
        for i, line in enumerate(good_lines):
            ev = at.get(i)
            if ev is not None:
                kind, what = ev
                if kind == "bad":
                    put(what[1])
                    expect_bad.append((lineno, what[0]))
                elif kind == "odd":
                    put(what[2])
                    expect_good.append(what[1]["exchange_id"])
                else:
                    put(what)
            put(line if line.endswith(b"\n") else line + b"\n")
            expect_good.append(orjson.loads(line)["exchange_id"])
        # A writer killed mid-line: the last line is cut short and has no newline.
        put(good_lines[-1][: len(good_lines[-1]) // 3])
        expect_bad.append((lineno, "corrupt: last line cut mid-write, no newline"))
    return {
        "good_ids": expect_good,
        "bad": expect_bad,
        "kinds": sorted({w for _, w in expect_bad}),
        "odd_good": [w for w, _, _ in odd],
    }


def check(
    log: Path, scan_dir: Path, expect: dict[str, Any], serial_ingest: Callable[..., Any]
) -> dict[str, Any]:
    """Compare a scan of `log` (in `scan_dir`) with what `build` expected; plus a serial re-ingest."""
    import pyarrow.parquet as pq

    res: dict[str, Any] = {"problems": []}
    problems: list[str] = res["problems"]
    summary = orjson.loads((scan_dir / "summary.json").read_bytes())
    qpath = scan_dir / "quarantine.jsonl"
    quarantined = [orjson.loads(x) for x in qpath.read_bytes().splitlines()] if qpath.exists() else []
    want_lines = [n for n, _ in expect["bad"]]
    got_lines = [q["line"] for q in quarantined]
    res.update(
        good_expected=len(expect["good_ids"]),
        bad_expected=len(want_lines),
        summary_exchanges=summary["exchanges"],
        summary_quarantined=summary["quarantined"],
        quarantine_lines=len(got_lines),
    )
    if got_lines != want_lines:
        missing = sorted(set(want_lines) - set(got_lines))[:10]
        extra = sorted(set(got_lines) - set(want_lines))[:10]
        problems.append(f"quarantine lines differ: missing {missing}, unexpected {extra}")
    if any(q["file"] != str(log) or not q.get("reason") for q in quarantined):
        problems.append("a quarantine entry lacks the file name or a reason")
    if summary["quarantined"] != len(want_lines):
        problems.append(f"summary counts {summary['quarantined']} quarantined, expected {len(want_lines)}")
    if summary["exchanges"] != len(expect["good_ids"]):
        problems.append(
            f"summary counts {summary['exchanges']} exchanges, expected {len(expect['good_ids'])}"
        )
    table = pq.read_table(scan_dir / "exchanges.parquet", columns=["exchange_id", "prompt"])
    ids = table.column("exchange_id").to_pylist()
    res["parquet_rows"] = len(ids)
    if ids != expect["good_ids"]:
        lost = len(set(expect["good_ids"]) - set(ids))
        problems.append(f"Parquet rows differ from the good rows ({lost} good rows lost, {len(ids)} rows)")
    else:
        big = table.column("prompt")[ids.index("bench-odd-0")].as_py()
        if len(big) != BIG:
            problems.append(f"the 10 MB prompt came back with {len(big)} characters")
    # The same log read serially: the parallel scan must have produced the same rows and quarantine.
    serial_dir = scan_dir.parent / (scan_dir.name + "-serial")
    serial_dir.mkdir(parents=True, exist_ok=True)
    (serial_dir / "q.jsonl").unlink(missing_ok=True)
    serial_ingest(
        [log], serial_dir / "ex.parquet", "native", quarantine_path=serial_dir / "q.jsonl", workers=1
    )
    same_q = (serial_dir / "q.jsonl").read_bytes() == (qpath.read_bytes() if qpath.exists() else b"")
    same_rows = pq.read_table(serial_dir / "ex.parquet").equals(pq.read_table(scan_dir / "exchanges.parquet"))
    res["same_as_serial"] = same_q and same_rows
    if not same_q:
        problems.append("quarantine differs from a serial ingest of the same log")
    if not same_rows:
        problems.append("Parquet rows differ from a serial ingest of the same log")
    return res
