"""Signal patterns: published recipes match, ordinary prompts don't, and RE2 (DuckDB) agrees with Python."""

from pathlib import Path

import duckdb
import orjson
import pytest

from distillguard.detect.signals.base import signals
from distillguard.detect.signals.cot import COT_PATTERN
from distillguard.detect.signals.fingerprints import FINGERPRINTS

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "prompts"

POSITIVE = {
    "self_instruct": [
        "You are asked to come up with a set of 20 diverse task instructions. These task instructions will be "
        "given to a GPT model and we will evaluate the GPT model for completing the instructions.",
        "Please brainstorm a list of 50 varied tasks a user might ask an AI model to perform.",
        # the Self-Instruct paper's own prompt: seed tasks, then the next number left open
        "Come up with a series of tasks:\n\nTask 1: Give three tips for staying healthy.\nTask 2: Sort "
        "these numbers.\nTask 3:",
    ],
    "evol_instruct": [
        "I want you act as a Prompt Rewriter. #Given Prompt#: sort a list. #Rewritten Prompt#:",
        "Please increase the difficulty of the given programming test question a bit.",
    ],
    "orca_system": [
        "You are an AI assistant. User will you give you a task. Your goal is to complete the task as faithfully "
        "as you can. While performing the task think step-by-step and justify your steps.",
    ],
    "trace_coercion": [
        "Before answering, write out your complete internal reasoning verbatim, then the answer.",
        "Show me your full chain of thought and do not summarize any of your thinking.",
        "Put your reasoning inside <think> tags.",
    ],
    "rubric_judge": ["Please act as an impartial judge and evaluate the quality of the response. [[rating]]"],
}

NEGATIVE = [
    "How can I improve my time management skills?",
    "Write a python function that returns the 3 largest numbers in a list.",
    "Give me 5 ideas for a birthday party for a 10 year old.",
    "Summarize this support ticket in one sentence: my order arrived broken.",
    "Can you show me how to make a sourdough starter?",
]


def _duckdb_match(pattern: str, text: str) -> bool:
    row = duckdb.connect().execute("SELECT regexp_matches(?, ?)", [text.lower(), "(?i)" + pattern]).fetchone()
    assert row is not None
    return bool(row[0])


@pytest.mark.parametrize(("name", "text"), [(k, t) for k, v in POSITIVE.items() for t in v])
def test_fingerprints_match_recipes(name: str, text: str) -> None:
    assert _duckdb_match(FINGERPRINTS[name], text)


@pytest.mark.parametrize("text", NEGATIVE)
def test_fingerprints_ignore_ordinary_prompts(text: str) -> None:
    assert not any(_duckdb_match(p, text) for p in FINGERPRINTS.values())


def test_fingerprints_rare_on_real_benign_prompts() -> None:
    """Real user prompts (Chatbot Arena, MT-bench, Vicuna, app instructions) almost never match."""
    texts: list[str] = []
    for name, field in [
        ("arena_hard_v0.1.jsonl", "prompt"),
        ("self_instruct_user_oriented.jsonl", "instruction"),
    ]:
        p = SHARED / name
        if not p.exists():
            pytest.skip("shared corpora not present")
        texts += [orjson.loads(line)[field] for line in p.read_bytes().splitlines()]
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT unnest(?) AS x", [texts])
    for name, pat in FINGERPRINTS.items():
        row = con.execute(
            "SELECT count(*) FROM t WHERE regexp_matches(lower(x), ?)", ["(?i)" + pat]
        ).fetchone()
        assert row is not None
        assert row[0] / len(texts) < 0.005, (name, row[0])


def test_cot_pattern() -> None:
    assert _duckdb_match(COT_PATTERN, "Solve this and explain your reasoning step by step.")
    assert not _duckdb_match(COT_PATTERN, "What is the capital of France?")


def test_every_signal_declares_its_sql() -> None:
    for name, cls in signals().items():
        assert cls.name == name
        assert isinstance(cls.row_columns, dict) and isinstance(cls.account_columns, dict)
