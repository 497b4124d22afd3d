"""OpenAI Batch API files: the input/output join, either file alone, no double counting, bad lines."""

from __future__ import annotations

import gzip
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from distillguard.exchange import Exchange, tool_set_key
from distillguard.ingest import IngestStats, Quarantine, read_exchanges
from distillguard.ingest.openai_batch import OpenAIBatch, batch_name

FIX = Path(__file__).parent.parent / "fixtures" / "ingest"
INPUT, OUTPUT, ERRORS = (FIX / f"batch_demo_{k}.jsonl" for k in ("input", "output", "errors"))


def read_all(
    path: Path, tmp_path: Path, adapter: OpenAIBatch | None = None
) -> tuple[list[tuple[int, Exchange]], list[dict[str, Any]]]:
    qpath = tmp_path / "q.jsonl"
    qpath.unlink(missing_ok=True)
    with Quarantine(qpath) as q:
        good = list(read_exchanges(path, adapter or OpenAIBatch(), q, IngestStats()))
    bad = [orjson.loads(x) for x in qpath.read_bytes().splitlines()] if qpath.exists() else []
    return good, bad


def test_output_file_is_joined_with_its_input(tmp_path: Path) -> None:
    good, bad = read_all(OUTPUT, tmp_path)
    assert bad == []
    assert [line for line, _ in good] == [1, 2]
    r2, r1 = (ex for _, ex in good)  # output order, not input order

    assert r2.exchange_id == "batch_req_002"
    assert r2.ts == datetime(2025, 1, 1, 12, 1, 40, tzinfo=UTC)  # response `created`
    assert r2.account_id == "batch_demo"  # no `user`: the batch name
    assert r2.attributes["account_source"] == "file"
    assert r2.model == "o3-mini"
    assert r2.attributes["response_model"] == "o3-mini-2025-01-31"
    assert r2.system_prompt == "Think step by step."  # developer message
    assert r2.messages == [{"role": "user", "content": "How many primes are below 100?"}]
    assert r2.max_tokens == 2048  # max_completion_tokens
    assert r2.reasoning_effort == "high"
    assert r2.n_tools == 1
    assert r2.tool_set == tool_set_key([{"name": "calc"}])  # which tools, by name
    assert r2.response_text == "There are 25 primes below 100."
    assert (r2.prompt_tokens, r2.completion_tokens, r2.reasoning_tokens) == (24, 410, 384)
    assert r2.finish_reason == "stop" and r2.status == 200
    assert r2.attributes["seed"] == "7"
    assert r2.attributes["custom_id"] == "r-2"
    assert r2.attributes["system_fingerprint"] == "fp_ef58bd3122"
    assert r2.attributes["request_id"] == "req_b2"

    assert r1.account_id == "cust-7" and r1.end_user == "cust-7"
    assert r1.attributes["account_source"] == "user"
    assert (r1.temperature, r1.max_tokens) == (0.7, 256)
    assert r1.system_prompt == "You are a helpful tutor."
    assert r1.response_text == "Assume sqrt(2) = p/q in lowest terms..."


def test_error_file_is_joined_too(tmp_path: Path) -> None:
    [(line, ex)], bad = read_all(ERRORS, tmp_path)
    assert bad == [] and line == 1
    assert ex.exchange_id == "batch_req_003"
    assert ex.status == 500 and ex.error == "batch_expired"
    assert ex.model == "gpt-4o-mini"  # from the input body
    assert (ex.n, ex.logprobs, ex.top_logprobs) == (2, True, 3)
    assert ex.response_text is None
    assert ex.attributes["ts_source"] == "file_mtime"


def test_input_file_keeps_only_unanswered_requests(tmp_path: Path) -> None:
    # r-1 and r-2 are in the output file, r-3 in the error file: only r-4 is left to the input file
    [(line, ex)], bad = read_all(INPUT, tmp_path)
    assert bad == [] and line == 4
    assert ex.exchange_id == "batch_demo:r-4"
    assert ex.endpoint == "/v1/embeddings"
    assert ex.model == "text-embedding-3-small"
    assert ex.messages == [{"role": "user", "content": "hello world"}]
    # scanning all three files counts every request exactly once
    ids = {ex.attributes["custom_id"] for p in (INPUT, OUTPUT, ERRORS) for _, ex in read_all(p, tmp_path)[0]}
    assert ids == {"r-1", "r-2", "r-3", "r-4"}


def test_input_file_alone_yields_request_only_exchanges(tmp_path: Path) -> None:
    d = tmp_path / "alone"
    d.mkdir()
    path = shutil.copy(INPUT, d / "batch_demo_input.jsonl")
    good, bad = read_all(Path(path), tmp_path)
    assert bad == []
    assert [line for line, _ in good] == [1, 2, 3, 4]
    first = good[0][1]
    assert first.exchange_id == "batch_demo:r-1"
    assert first.response_text is None and first.prompt_tokens is None
    assert first.ts == datetime.fromtimestamp(Path(path).stat().st_mtime, UTC)
    assert first.system_prompt == "You are a helpful tutor."


def test_output_file_alone_keeps_what_the_output_has(tmp_path: Path) -> None:
    d = tmp_path / "alone"
    d.mkdir()
    path = Path(shutil.copy(OUTPUT, d / "results.jsonl"))
    good, bad = read_all(path, tmp_path)
    assert bad == []
    r2 = good[0][1]
    assert r2.model == "o3-mini-2025-01-31"  # only the served snapshot is known
    assert r2.messages == [] and r2.system_prompt is None
    assert r2.response_text == "There are 25 primes below 100."
    assert r2.attributes["request"] == "missing"
    assert r2.account_id == "results"


def test_explicit_input_path_and_account_override(tmp_path: Path) -> None:
    d = tmp_path / "x"
    d.mkdir()
    path = Path(shutil.copy(OUTPUT, d / "results.jsonl"))
    good, _ = read_all(path, tmp_path, OpenAIBatch(account_id="acme-corp", input_path=INPUT))
    assert [ex.account_id for _, ex in good] == ["acme-corp", "acme-corp"]
    assert all(ex.attributes["account_source"] == "override" for _, ex in good)
    assert good[0][1].messages == [{"role": "user", "content": "How many primes are below 100?"}]


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_compressed_files_read_identically(tmp_path: Path, codec: str) -> None:
    def pack(src: Path, dst: Path) -> None:
        raw = src.read_bytes()
        dst.write_bytes(gzip.compress(raw) if codec == "gzip" else zstandard.ZstdCompressor().compress(raw))

    ext = ".gz" if codec == "gzip" else ".zst"
    d = tmp_path / "c"
    d.mkdir()
    for src in (INPUT, OUTPUT, ERRORS):
        pack(src, d / (src.name + ext))  # the compressed input is indexed via a temporary file
    for src in (INPUT, OUTPUT, ERRORS):
        got = [
            (line, ex.model_dump(exclude={"ts"})) for line, ex in read_all(d / (src.name + ext), tmp_path)[0]
        ]
        want = [(line, ex.model_dump(exclude={"ts"})) for line, ex in read_all(src, tmp_path)[0]]
        assert got == want


def test_batch_name() -> None:
    assert batch_name(Path("/x/batch_abc_output.jsonl.gz")) == "batch_abc"
    assert batch_name(Path("/x/batch_abc_input.jsonl")) == "batch_abc"
    assert batch_name(Path("/data/run7/output.jsonl")) == "run7"


def _line(cid: str, body: dict[str, Any]) -> bytes:
    return (
        orjson.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body})
        + b"\n"
    )


def test_bad_input_lines_are_quarantined_with_their_lines(tmp_path: Path) -> None:
    def body(prompt: str = "hi", **kw: Any) -> dict[str, Any]:
        return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}], **kw}

    big = "lorem " * (10 * 1024 * 1024 // 6)
    no_model = body()
    del no_model["model"]
    lines = [
        _line("a", body()),
        b'{"custom_id": "b", "method": "POST", "url"\n',  # 2: corrupt JSON
        _line("c", body()),
        _line("d", body("caf\u00e9")).replace("é".encode(), b"\xe9"),  # 4: latin-1 byte, not UTF-8
        _line("e", body(temperature="hot")),  # 5: wrong type
        _line("f", no_model),  # 6: no model
        _line("g", body(tools="calc")),  # 7: wrong type in a field the adapter interprets
        _line("h", body(big)),  # 8: a 10 MB prompt is fine
        orjson.dumps({"method": "POST", "url": "/v1/chat/completions", "body": body()})
        + b"\n",  # 9: no custom_id
        _line("j", body(messages="hi")),  # 10: messages not a list
        _line("k", body(user="cust-1")),
    ]
    d = tmp_path / "in"
    d.mkdir()
    path = d / "b_input.jsonl"
    path.write_bytes(b"".join(lines))
    good, bad = read_all(path, tmp_path)
    assert [line for line, _ in good] == [1, 3, 8, 11]
    assert good[2][1].prompt() == big
    assert good[3][1].account_id == "cust-1"
    assert [b["line"] for b in bad] == [2, 4, 5, 6, 7, 9, 10]
    reasons = [b["reason"] for b in bad]
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1] == "not valid UTF-8"
    assert reasons[2].startswith("temperature:")
    assert reasons[3] == "body.model: missing"
    assert reasons[4].startswith("body.tools: expected a list")
    assert reasons[5].startswith("custom_id:")
    assert reasons[6].startswith("body.messages: expected a list")


def test_bad_output_lines_are_quarantined_with_their_lines(tmp_path: Path) -> None:
    def out(cid: str, **kw: Any) -> bytes:
        rec: dict[str, Any] = {
            "id": f"batch_req_{cid}",
            "custom_id": cid,
            "response": {
                "status_code": 200,
                "body": {
                    "object": "chat.completion",
                    "created": 1735732900,
                    "model": "gpt-4o-mini",
                    "choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
                },
            },
            "error": None,
        }
        rec["response"]["body"].update(kw)
        return orjson.dumps(rec) + b"\n"

    d = tmp_path / "o"
    d.mkdir()
    (d / "b_input.jsonl").write_bytes(_line("a", {"model": "gpt-4o-mini", "messages": []}))
    lines = [
        out("a"),
        b"not json at all\n",  # 2
        out("b", model=None),  # 3: no model anywhere (no input line for b either)
        out("c", choices="nope"),  # 4: wrong type
        out("d", created="yesterday"),  # 5: wrong type
        out("e", usage={"prompt_tokens": "many"}),  # 6: validated centrally
        out("f"),
    ]
    path = d / "b_output.jsonl"
    path.write_bytes(b"".join(lines))
    good, bad = read_all(path, tmp_path)
    assert [line for line, _ in good] == [1, 7]
    assert [b["line"] for b in bad] == [2, 3, 4, 5, 6]
    reasons = [b["reason"] for b in bad]
    assert reasons[1].startswith("model:")
    assert reasons[2].startswith("response.body.choices: expected a list")
    assert reasons[3].startswith("response.body.created")
    assert reasons[4].startswith("prompt_tokens:")
