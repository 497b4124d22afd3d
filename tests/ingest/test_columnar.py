"""The column-at-a-time ingest path gives exactly the rows and quarantine of the per-row validator."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from pydantic import ValidationError

from distillguard.exchange import ARROW_SCHEMA, to_values, validate, values_to_batch
from distillguard.ingest import get_adapter
from distillguard.ingest.base import IngestStats, Quarantine, read_exchanges
from distillguard.ingest.columnar import read_batches, row_values, to_batch

FIX = Path(__file__).parent.parent / "fixtures" / "ingest"

BASE: dict[str, Any] = {
    "exchange_id": "e-1",
    "ts": "2026-11-01T10:00:00.130000Z",
    "account_id": "acct-1",
    "org_id": "org-1",
    "client_ip": "10.0.0.1",
    "asn": 3356,
    "country": "us",
    "user_agent": "OpenAI/Python 1.42.0",
    "model": "acme-large-2",
    "messages": [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris is the capital of France."},
        {"role": "user", "content": "And what is the capital of Germany, compared to France?"},
    ],
    "temperature": 0.7,
    "max_tokens": 512,
    "response_text": "Berlin.",
    "prompt_tokens": 20,
    "completion_tokens": 3,
    "latency_ms": 812.5,
}

# Values each field may take: valid ones in the exact form, ones the model coerces, and bad ones.
VARIANTS: dict[str, list[Any]] = {
    "exchange_id": ["e-2", "", 5, None, "é-3"],
    "ts": [
        "2026-11-01T10:00:00Z",
        "2026-11-01T10:00:00.1+05:30",
        "2026-11-01T10:00:00.123456-01:00",
        "2026-11-01T10:00:00",  # naive: the model takes it as UTC
        "2026-11-01 10:00:00Z",
        "2026-11-01",
        "2026-11-01T10:00:00.1234567Z",
        "2026-02-30T10:00:00Z",  # no such day
        "2026-11-01T10:00:60Z",  # nor second
        "2026-11-01T10:00:00+23:59",
        1762000000,
        "yesterday",
        None,
    ],
    "account_id": ["acct-2", "", None, ["a"]],
    "org_id": [None, "", "org-2", 7],
    "client_ip": ["", None, "2001:DB8::1", " 10.0.0.2", "999.1.1.1", "10.0.0.01", 17],
    "asn": [None, 0, -1, 5.0, 5.5, "5", True, 2**40],
    "country": ["", None, "DE", "de", "deu", "1x", "éé", 3],
    "endpoint": ["/v1/completions", None, "", 5],
    "model": ["", None, "m2"],
    "system_prompt": ["You are helpful.", None, "", 1.5],
    "messages": [
        [],
        None,
        "hi",
        [{"role": "user", "content": "hi"}],
        [{"content": "hi", "role": "user"}],  # the model reorders keys
        [{"role": "user", "content": "hi", "extra": 1}],  # ...and drops unknown ones
        [{"role": "user", "content": [{"type": "text", "text": "a"}, "b", {"type": "image"}]}],
        [{"role": "user", "content": None, "name": "bob"}],
        [{"role": "user"}],
        [{"content": "no role"}],
        [{"role": 1, "content": "x"}],
        [{"role": "user", "content": 5}],
        [{"role": "user", "content": "x", "tool_calls": [{"id": "t"}], "tool_call_id": "c"}],
        [{"role": "user", "content": "x", "tool_calls": "no"}],
        [
            {"role": "assistant", "content": "The answer is forty-two, as computed."},
            {"role": "user", "content": "Why forty-two computed?"},
        ],
        ["not a dict"],
    ],
    "n": [1, 2, 0, 1025, None, 2.0, "3"],
    "temperature": [None, 0, 0.0, -0.0, 10, 10.5, -1, "0.5", True, 1e308],
    "top_p": [None, 1, 0.5, 1.5],
    "max_tokens": [None, 0, -5, 2**62, 3.0],
    "logprobs": [True, False, None, 1, "true"],
    "top_logprobs": [None, 5, -1],
    "n_tools": [0, 3, None, -1],
    "response_text": [None, "", "ü" * 10, 12],
    "reasoning_tokens": [None, 700, -1],
    "status": [200, 429, 99, 600, None, "200"],
    "latency_ms": [None, 0, 1.5, -0.5, 2**60],
    "attributes": [{}, None, {"app": "x"}, {"app": 1}, {"a": "b", "c": "d"}, []],
    "unknown_field": ["ignored", None],
}


def reference(rows: list[dict[str, Any]]) -> tuple[pa.RecordBatch, list[int]]:
    """The per-row path: validate each mapping, keep the good ones' values, list the bad ones."""
    vals, bad = [], []
    for i, d in enumerate(rows):
        try:
            vals.append(to_values(validate(d)))
        except ValidationError:
            bad.append(i)
    return values_to_batch(vals), bad


def columnar(rows: list[dict[str, Any]]) -> tuple[pa.RecordBatch, list[int], list[int]]:
    asked: list[int] = []
    bad: list[int] = []

    def fallback(i: int) -> list[Any] | None:
        asked.append(i)
        try:
            return to_values(validate(rows[i]))
        except ValidationError:
            bad.append(i)
            return None

    return to_batch([row_values(d) for d in rows], fallback), bad, asked


def mutated(rng: random.Random, k: int) -> dict[str, Any]:
    d = orjson.loads(orjson.dumps(BASE))
    d["exchange_id"] = f"e-{k}"
    for name in rng.sample(sorted(VARIANTS), rng.randint(0, 3)):
        v = rng.choice(VARIANTS[name])
        if v is None and rng.random() < 0.5:
            d.pop(name, None)  # missing, rather than null
        else:
            d[name] = orjson.loads(orjson.dumps(v))
    return d


def test_clean_rows_take_the_fast_path_and_match_the_model() -> None:
    rows = [{**BASE, "exchange_id": f"e-{i}"} for i in range(50)]
    batch, bad, asked = columnar(rows)
    ref, ref_bad = reference(rows)
    assert asked == [] and bad == ref_bad == []
    assert batch.equals(ref)
    assert batch.column("country").to_pylist()[0] == "US"  # normalised as the model does
    assert batch.column("user_turns").to_pylist()[0] == 2


@pytest.mark.parametrize("seed", range(6))
def test_mutated_rows_give_the_rows_and_rejections_of_the_model(seed: int) -> None:
    rng = random.Random(seed)
    rows = [mutated(rng, k) for k in range(400)]
    batch, bad, asked = columnar(rows)
    ref, ref_bad = reference(rows)
    assert bad == ref_bad
    assert set(bad) <= set(asked) and len(asked) < len(rows)  # most rows still take the fast path
    assert batch.schema == ARROW_SCHEMA
    assert batch.equals(ref)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_variant_alone_matches_the_model(name: str) -> None:
    rows = []
    for v in VARIANTS[name]:
        d = orjson.loads(orjson.dumps(BASE))
        d[name] = v
        rows.append(d)
        if v is None:
            rows.append({k: x for k, x in d.items() if k != name})
    batch, bad, _ = columnar(rows)
    ref, ref_bad = reference(rows)
    assert bad == ref_bad
    assert batch.equals(ref)


def test_utc_datetimes_from_adapters_take_the_fast_path() -> None:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    rows = [{**BASE, "ts": t0 + timedelta(seconds=i)} for i in range(10)]
    rows.append({**BASE, "ts": datetime(2026, 11, 1, 12, tzinfo=timezone(timedelta(hours=2)))})
    rows.append({**BASE, "ts": datetime(2026, 11, 1, 12)})  # naive: UTC for the model
    batch, bad, asked = columnar(rows)
    ref, _ = reference(rows)
    assert asked == [10, 11] and bad == []
    assert batch.equals(ref)


@pytest.mark.parametrize(
    ("fixture", "fmt"),
    [
        ("native.jsonl", "native"),
        ("otel_genai.jsonl", "otel"),
        ("batch_demo_output.jsonl", "openai_batch"),
        ("litellm_spend.jsonl", "litellm"),
        ("litellm_spend.csv", "litellm"),
    ],
)
def test_every_adapter_gives_the_per_row_rows_and_quarantine(tmp_path: Path, fixture: str, fmt: str) -> None:
    path = FIX / fixture
    adapter = get_adapter(fmt)
    q1, q2 = tmp_path / "q1.jsonl", tmp_path / "q2.jsonl"
    s1, s2 = IngestStats(), IngestStats()
    with Quarantine(q1) as q:
        ref = values_to_batch([to_values(ex) for _line, ex in read_exchanges(path, adapter, q, s1)])
    with Quarantine(q2) as q:
        got = pa.Table.from_batches(list(read_batches(path, adapter, q, s2, 4)), schema=ARROW_SCHEMA)
    assert got.num_rows > 0
    assert got.equals(pa.Table.from_batches([ref]))
    assert s1.files == s2.files
    assert (q1.read_bytes() if q1.exists() else b"") == (q2.read_bytes() if q2.exists() else b"")


def test_quarantine_keeps_file_order_across_unreadable_and_invalid_rows(tmp_path: Path) -> None:
    good = orjson.dumps(BASE)
    lines = [
        good,
        orjson.dumps({**BASE, "model": None}),  # 2: invalid (validator)
        b"{not json",  # 3: unreadable (adapter)
        good,
        b"[1]",  # 5
        orjson.dumps({**BASE, "temperature": "hot"}),  # 6
        good,
    ]
    log = tmp_path / "x.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    stats = IngestStats()
    with Quarantine(tmp_path / "q.jsonl") as q:
        batches = list(read_batches(log, get_adapter("native"), q, stats, 2))
    assert sum(b.num_rows for b in batches) == 3
    got = [orjson.loads(x)["line"] for x in (tmp_path / "q.jsonl").read_bytes().splitlines()]
    assert got == [2, 3, 5, 6]
    assert stats.files[str(log)] == {"read": 7, "ok": 3, "quarantined": 4}


def test_valid_numbers_too_big_for_the_store_are_quarantined_not_fatal(tmp_path: Path) -> None:
    lines = [
        orjson.dumps(BASE),
        orjson.dumps({**BASE, "top_logprobs": 2**40}),  # valid for the model, not for an int32 column
        orjson.dumps({**BASE, "asn": 2**63}),  # nor for an int64 one
        orjson.dumps(BASE),
    ]
    log = tmp_path / "big.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    stats = IngestStats()
    with Quarantine(tmp_path / "q.jsonl") as q:
        rows = sum(b.num_rows for b in read_batches(log, get_adapter("native"), q, stats, 16))
    assert rows == 2
    got = [orjson.loads(x) for x in (tmp_path / "q.jsonl").read_bytes().splitlines()]
    assert [(g["line"], g["reason"].split(":")[0]) for g in got] == [(2, "top_logprobs"), (3, "asn")]


def test_a_validator_that_raises_outside_pydantic_quarantines_the_row(tmp_path: Path) -> None:
    lines = [
        orjson.dumps(BASE),
        orjson.dumps({**BASE, "ts": "0001-01-01T00:00:00+01:00"}),  # before year 1 once in UTC
        orjson.dumps(BASE),
    ]
    log = tmp_path / "early.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    stats = IngestStats()
    with Quarantine(tmp_path / "q.jsonl") as q:
        rows = sum(b.num_rows for b in read_batches(log, get_adapter("native"), q, stats, 16))
    assert rows == 2
    (got,) = [orjson.loads(x) for x in (tmp_path / "q.jsonl").read_bytes().splitlines()]
    assert got["line"] == 2 and "OverflowError" in got["reason"]
