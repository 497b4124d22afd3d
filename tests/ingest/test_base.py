"""Format detection across adapters, and ingest into Parquet end to end with a quarantine."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
import zstandard

from distillguard.exchange import Exchange
from distillguard.ingest import IngestError, adapters, detect_format
from distillguard.ingest.base import head_lines
from distillguard.ingest.native import dump_line
from distillguard.ingest.otel import to_otlp_line
from distillguard.store.parquet import ingest

FIX = Path(__file__).parent.parent / "fixtures" / "ingest"
EXPECTED = {
    "native.jsonl": "native",
    "otel_genai.jsonl": "otel",
    "batch_demo_input.jsonl": "openai_batch",
    "batch_demo_output.jsonl": "openai_batch",
    "batch_demo_errors.jsonl": "openai_batch",
    "litellm_spend.jsonl": "litellm",
    "litellm_spend.json": "litellm",
    "litellm_spend.csv": "litellm",
}


def test_every_fixture_is_covered() -> None:
    assert sorted(p.name for p in FIX.iterdir()) == sorted(EXPECTED)
    assert {"native", "otel", "openai_batch", "litellm"} <= set(adapters())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_detect_format_picks_the_right_adapter(name: str) -> None:
    assert detect_format(FIX / name).name == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exactly_one_adapter_claims_each_fixture(name: str) -> None:
    head = head_lines(FIX / name)
    claimed = [n for n, cls in adapters().items() if cls().sniff(head)]
    assert claimed == [EXPECTED[name]]


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_detect_format_through_compression(tmp_path: Path, name: str, codec: str) -> None:
    raw = (FIX / name).read_bytes()
    path = tmp_path / (name + (".gz" if codec == "gzip" else ".zst"))
    path.write_bytes(gzip.compress(raw) if codec == "gzip" else zstandard.ZstdCompressor().compress(raw))
    assert detect_format(path).name == EXPECTED[name]


def test_native_line_is_not_claimed_by_the_other_adapters() -> None:
    ex = Exchange(
        exchange_id="e-1",
        ts=datetime(2025, 1, 1, tzinfo=UTC),
        account_id="a",
        model="m",
        attributes={"custom_id": "x", "request_id": "r", "call_type": "acompletion"},
    )
    # even a native record that happens to carry other formats' keys at the top level stays native
    line = orjson.dumps(
        {**orjson.loads(dump_line(ex)), "custom_id": "c", "response": {}, "request_id": "r", "call_type": "x"}
    )
    claimed = [n for n, cls in adapters().items() if cls().sniff([line])]
    assert claimed == ["native"]


def test_writer_output_is_detected_as_otel(tmp_path: Path) -> None:
    ex = Exchange(exchange_id="e", ts=datetime(2025, 1, 1, tzinfo=UTC), account_id="a", model="m")
    path = tmp_path / "spans.jsonl"
    path.write_bytes(to_otlp_line([ex]))
    assert detect_format(path).name == "otel"


def test_unknown_format_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"hello": "world"}\n')
    with pytest.raises(IngestError, match="format not recognised"):
        detect_format(path)


def test_parquet_ingest_counts_good_rows_and_quarantines_bad_ones(tmp_path: Path) -> None:
    ts = datetime(2025, 1, 1, tzinfo=UTC)

    def good(i: int, prompt: str = "hi") -> bytes:
        return dump_line(
            Exchange(
                exchange_id=f"e-{i}",
                ts=ts,
                account_id=f"acct-{i % 3}",
                model="gpt-4o",
                messages=[{"role": "user", "content": prompt}],
            )
        )

    def with_(i: int, **kw: object) -> bytes:
        d = orjson.loads(good(i))
        d.update(kw)
        return orjson.dumps({k: v for k, v in d.items() if v is not None}) + b"\n"

    big = "lorem " * (10 * 1024 * 1024 // 6)
    lines = [
        good(1),
        b'{"exchange_id": "e-2", "ts": \n',  # 2: corrupt
        good(3),
        good(4).replace(b'"hi"', b'"h\xffi"'),  # 4: not UTF-8
        with_(5, temperature="hot"),  # 5
        with_(6, model=None),  # 6: no model
        with_(7, account_id=None),  # 7: no account
        good(8, big),  # 8: a 10 MB prompt is fine
        b"[1, 2]\n",  # 9: not an object
        with_(10, client_ip="999.1.1.1"),  # 10
        good(11),
    ]
    log = tmp_path / "mixed.jsonl.zst"
    log.write_bytes(zstandard.ZstdCompressor().compress(b"".join(lines)))
    out, qpath = tmp_path / "ex.parquet", tmp_path / "q.jsonl"
    stats = ingest([log], out, quarantine_path=qpath)

    assert stats.ok == 4 and stats.quarantined == 7
    assert stats.files[str(log)] == {"read": 11, "ok": 4, "quarantined": 7}
    table = pq.read_table(out)
    assert table.num_rows == stats.ok
    assert table.column("exchange_id").to_pylist() == ["e-1", "e-3", "e-8", "e-11"]
    assert table.column("prompt").to_pylist()[2] == big
    quarantined = [orjson.loads(x) for x in qpath.read_bytes().splitlines()]
    assert [q["line"] for q in quarantined] == [2, 4, 5, 6, 7, 9, 10]
    assert all(q["file"] == str(log) for q in quarantined)
    reasons = [q["reason"] for q in quarantined]
    assert reasons[1] == "not valid UTF-8"
    assert reasons[2].startswith("temperature:")
    assert reasons[3].startswith("model:")
    assert reasons[4].startswith("account_id:")
    assert reasons[5] == "expected a JSON object, got list"
    assert reasons[6].startswith("client_ip:")
