"""LiteLLM spend logs: JSONL, JSON array and CSV layouts, the column mapping, bad rows in each layout."""

from __future__ import annotations

import csv
import gzip
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from distillguard.exchange import Exchange
from distillguard.ingest import IngestStats, Quarantine, read_exchanges
from distillguard.ingest.litellm import LiteLLMSpendLogs, iter_json_array

FIX = Path(__file__).parent.parent / "fixtures" / "ingest"
JSONL, ARRAY, CSV = FIX / "litellm_spend.jsonl", FIX / "litellm_spend.json", FIX / "litellm_spend.csv"


def read_all(path: Path, tmp_path: Path) -> tuple[list[tuple[int, Exchange]], list[dict[str, Any]]]:
    qpath = tmp_path / "q.jsonl"
    qpath.unlink(missing_ok=True)
    with Quarantine(qpath) as q:
        good = list(read_exchanges(path, LiteLLMSpendLogs(), q, IngestStats()))
    bad = [orjson.loads(x) for x in qpath.read_bytes().splitlines()] if qpath.exists() else []
    return good, bad


def test_rows_map_to_exchanges(tmp_path: Path) -> None:
    good, bad = read_all(JSONL, tmp_path)
    assert bad == []
    assert [line for line, _ in good] == [1, 2, 3]
    ok, quiet, failed = (ex for _, ex in good)

    assert ok.exchange_id == "chatcmpl-9f1c2d"
    assert ok.ts == datetime(2025, 1, 2, 9, 15, 0, 250000, tzinfo=UTC)
    assert ok.latency_ms == 1250.0
    assert ok.account_id == "internal-user-1"  # `user`
    assert ok.org_id == "org-acme"  # metadata.user_api_key_org_id
    assert ok.api_key_id == "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
    assert ok.end_user == "student-881"
    assert ok.client_ip == "198.51.100.23"
    assert ok.user_agent == "AsyncOpenAI/Python 1.55.3"
    assert ok.model == "gpt-4o"  # the model group the client asked for
    assert ok.endpoint == "/v1/chat/completions"
    assert ok.system_prompt == "Answer in one paragraph."
    assert ok.messages == [{"role": "user", "content": "Why is the sky blue?"}]
    assert (ok.temperature, ok.max_tokens, ok.n) == (0.3, 300, 1)
    assert ok.response_text == "Rayleigh scattering favours short wavelengths."
    assert ok.finish_reason == "stop"
    assert (ok.prompt_tokens, ok.completion_tokens) == (21, 36)
    assert ok.status == 200 and ok.error is None
    assert ok.attributes == {
        "litellm_model": "azure/gpt-4o-eu",
        "account_source": "user",
        "ttft_ms": "500",
        "call_type": "acompletion",
        "spend": "0.00042",
        "cache_hit": "False",
        "session_id": "sess-1",
        "model_id": "b8e1f0",
        "api_base": "https://eu.openai.azure.com/",
        "custom_llm_provider": "azure",
        "request_tags": '["prod","tutor"]',
        "key_alias": "prod-app",
    }

    # prompt logging off: messages {} and response {}; the account falls back to team_id
    assert quiet.account_id == "team-growth"
    assert quiet.attributes["account_source"] == "team_id"
    assert quiet.org_id == "team-growth"
    assert quiet.messages == [] and quiet.response_text is None
    assert (quiet.prompt_tokens, quiet.completion_tokens) == (12, 28)
    assert quiet.latency_ms == 900.0

    assert failed.status == 429 and failed.error == "RateLimitError"
    assert failed.temperature == 0.0
    assert failed.messages == [{"role": "user", "content": "Summarise this contract."}]


def test_jsonl_array_and_csv_layouts_agree(tmp_path: Path) -> None:
    by_layout = {p.suffix: read_all(p, tmp_path) for p in (JSONL, ARRAY, CSV)}
    assert all(bad == [] for _, bad in by_layout.values())
    exs = {k: [ex for _, ex in good] for k, (good, _) in by_layout.items()}
    assert exs[".json"] == exs[".jsonl"]
    assert exs[".csv"] == exs[".jsonl"]
    assert [line for line, _ in by_layout[".csv"][0]] == [2, 3, 4]  # the header is line 1
    # array rows report the line where their element starts
    array_text = ARRAY.read_text().splitlines()
    for line, ex in by_layout[".json"][0]:
        assert array_text[line - 1].strip() == "{"
        assert f'"request_id": "{ex.exchange_id}"' in array_text[line]


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
@pytest.mark.parametrize("src", [JSONL, ARRAY, CSV], ids=["jsonl", "array", "csv"])
def test_compressed_files_read_identically(tmp_path: Path, codec: str, src: Path) -> None:
    raw = src.read_bytes()
    path = tmp_path / (src.name + (".gz" if codec == "gzip" else ".zst"))
    path.write_bytes(gzip.compress(raw) if codec == "gzip" else zstandard.ZstdCompressor().compress(raw))
    assert read_all(path, tmp_path) == read_all(src, tmp_path)


def _row(rid: str, prompt: str = "hello", **over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "request_id": rid,
        "call_type": "acompletion",
        "api_key": "hash-" + rid,
        "startTime": "2025-01-02T09:15:00+00:00",
        "endTime": "2025-01-02T09:15:01+00:00",
        "model": "gpt-4o",
        "model_group": "gpt-4o",
        "user": "u1",
        "metadata": {},
        "messages": [{"role": "user", "content": prompt}],
        "response": {},
        "status": "success",
        "proxy_server_request": {"temperature": 0.5},
        "team_id": None,
    }
    row.update(over)
    return row


BIG = "lorem " * (10 * 1024 * 1024 // 6)


def _bad_rows() -> list[dict[str, Any] | bytes]:
    """Rows 1..9 in order; bytes stand for a corrupt or non-UTF-8 record."""
    return [
        _row("r1"),
        b"CORRUPT",  # 2
        _row("r3"),
        b"NOT-UTF8",  # 4
        _row("r5", proxy_server_request={"temperature": "hot"}),  # 5: wrong type
        _row("r6", model="", model_group=None),  # 6: no model
        _row("r7", user=None, api_key=""),  # 7: no account
        _row("r8", BIG),  # 8: a 10 MB prompt is a good row
        _row("r9"),
    ]


def _check_bad(good: list[tuple[int, Exchange]], bad: list[dict[str, Any]], lines: list[int]) -> None:
    """`lines[i]` is the file line of row i+1."""
    assert [line for line, _ in good] == [lines[i] for i in (0, 2, 7, 8)]
    assert [ex.exchange_id for _, ex in good] == ["r1", "r3", "r8", "r9"]
    assert good[2][1].prompt() == BIG
    assert [b["line"] for b in bad] == [lines[i] for i in (1, 3, 4, 5, 6)]
    reasons = [b["reason"] for b in bad]
    assert "UTF-8" in reasons[1]
    assert reasons[2].startswith("temperature:")
    assert reasons[3].startswith("model:")
    assert reasons[4].startswith("account:")


def test_bad_jsonl_rows(tmp_path: Path) -> None:
    out = []
    for r in _bad_rows():
        if r == b"CORRUPT":
            out.append(b'{"request_id": "r2", "call_type": ')
        elif r == b"NOT-UTF8":
            out.append(orjson.dumps(_row("r4", "caf\u00e9")).replace("é".encode(), b"\xe9"))
        else:
            out.append(orjson.dumps(r))
    path = tmp_path / "spend.jsonl"
    path.write_bytes(b"\n".join(out) + b"\n")
    good, bad = read_all(path, tmp_path)
    _check_bad(good, bad, list(range(1, 10)))
    assert bad[0]["reason"].startswith("invalid JSON")


def test_bad_csv_rows(tmp_path: Path) -> None:
    cols = list(_row("x"))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in _bad_rows():
        if r == b"CORRUPT":
            w.writerow(["r2", "acompletion"])  # too few fields
        elif r == b"NOT-UTF8":
            w.writerow(["r4-\udce9" if c == "request_id" else "x" for c in cols])
        else:
            assert isinstance(r, dict)
            w.writerow(
                [
                    ""
                    if r[c] is None
                    else orjson.dumps(r[c]).decode()
                    if isinstance(r[c], dict | list)
                    else r[c]
                    for c in cols
                ]
            )
    path = tmp_path / "spend.csv"
    path.write_bytes(buf.getvalue().encode("utf-8", "surrogateescape"))
    good, bad = read_all(path, tmp_path)
    _check_bad(good, bad, list(range(2, 11)))
    assert bad[0]["reason"] == "CSV record has 2 fields, the header has 14"


def test_csv_json_column_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text(
        "request_id,call_type,startTime,model,user,metadata\nr1,acompletion,2025-01-01T00:00:00Z,m,u,{oops\n"
    )
    good, bad = read_all(path, tmp_path)
    assert good == [] and [(b["line"], b["reason"]) for b in bad] == [(2, "metadata: not valid JSON")]


def test_bad_array_elements_pretty_printed(tmp_path: Path) -> None:
    parts: list[str] = []
    for r in _bad_rows():
        if r == b"CORRUPT":
            parts.append('  {\n    "request_id": "r2",\n    "call_type": acompletion\n  }')
        elif r == b"NOT-UTF8":
            parts.append('  {"request_id": "r4", "model": "caf\udce9"}')  # written as the lone byte 0xE9
        else:
            text = orjson.dumps(r, option=orjson.OPT_INDENT_2).decode()
            parts.append("\n".join("  " + x for x in text.splitlines()))
    text = "[\n" + ",\n".join(parts) + "\n]\n"
    path = tmp_path / "spend.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    starts = [i + 1 for i, x in enumerate(text.splitlines()) if x.startswith("  {")]
    assert len(starts) == 9
    good, bad = read_all(path, tmp_path)
    _check_bad(good, bad, starts)
    assert bad[0]["reason"].startswith("invalid JSON in element 2")


def test_array_one_element_per_line_resyncs(tmp_path: Path) -> None:
    rows = [orjson.dumps(_row(f"r{i}")).decode() for i in range(1, 5)]
    rows[1] = rows[1][:-10]  # element 2 cut short, on its own line
    path = tmp_path / "spend.json"
    path.write_text("[" + ",\n".join(rows) + "]")
    good, bad = read_all(path, tmp_path)
    assert [(line, ex.exchange_id) for line, ex in good] == [(1, "r1"), (3, "r3"), (4, "r4")]
    assert [b["line"] for b in bad] == [2]


def test_array_truncated_or_single_line(tmp_path: Path) -> None:
    rows = [orjson.dumps(_row(f"r{i}")).decode() for i in range(1, 4)]
    cut = tmp_path / "cut.json"
    cut.write_text("[\n" + ",\n".join(rows)[:-20])  # the export stopped mid-element
    good, bad = read_all(cut, tmp_path)
    assert [ex.exchange_id for _, ex in good] == ["r1", "r2"]
    assert [(b["line"], b["reason"].split(":")[0]) for b in bad] == [(4, "truncated JSON array")]

    one = tmp_path / "one.json"
    one.write_text("[" + rows[0] + ", {broken}, " + rows[2] + "]")
    good, bad = read_all(one, tmp_path)
    assert [ex.exchange_id for _, ex in good] == ["r1"]
    assert len(bad) == 1 and "cannot be recovered" in bad[0]["reason"]

    unclosed = tmp_path / "unclosed.json"
    unclosed.write_text("[" + rows[0] + ",\n")
    good, bad = read_all(unclosed, tmp_path)
    assert [ex.exchange_id for _, ex in good] == ["r1"]
    assert [b["reason"] for b in bad] == ["truncated JSON array: no closing ']' after element 1"]


def test_array_streams_large_elements_across_reads(tmp_path: Path) -> None:
    # elements far larger than one read, and many small ones: all come back, in order
    rows = [_row(f"r{i}", BIG if i % 3 == 0 else "x") for i in range(7)]
    path = tmp_path / "big.json"
    path.write_bytes(b"[\n" + b",\n".join(orjson.dumps(r) for r in rows) + b"\n]")
    got = list(iter_json_array(path))
    assert [(line, obj["request_id"]) for line, obj, _, _ in got] == [(i + 2, f"r{i}") for i in range(7)]
    assert got[3][1]["messages"][0]["content"] == BIG


def test_sniff_layouts() -> None:
    a = LiteLLMSpendLogs()
    assert a.sniff([JSONL.read_bytes().splitlines()[0]])
    assert a.sniff(ARRAY.read_bytes().splitlines()[:5])
    assert a.sniff([CSV.read_bytes().splitlines()[0]])
    assert not a.sniff([b"a,b,c"])
    assert not a.sniff([b'{"exchange_id": "e", "account_id": "a", "request_id": "r", "call_type": "x"}'])
