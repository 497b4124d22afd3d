from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distillguard.forensics.detect import detect_records, read_records
from distillguard.forensics.keys import ProviderSecret
from distillguard.forensics.kgw import KGW
from distillguard.forensics.scheme import SchemeError


def _bytes_encoder(texts: list[str]) -> list[list[int]]:
    """A byte-level tokenizer: enough to exercise the text path without a model."""
    return [list(t.encode("utf-8")) for t in texts]


def test_reads_a_records_document_with_text_and_prompts(tmp_path: Path) -> None:
    doc = tmp_path / "fixture.json"
    doc.write_text(
        json.dumps({"records": [{"text": "hello there", "prompt": "say hello"}, {"tokens": [5, 6]}]})
    )
    recs = read_records(doc, _bytes_encoder)
    assert recs[0].tokens.tolist() == list(b"hello there")
    assert recs[0].prompt_tokens is not None and recs[0].prompt_tokens.tolist() == list(b"say hello")
    assert recs[1].tokens.tolist() == [5, 6] and recs[1].id == "2"
    with pytest.raises(SchemeError, match="record 1 has text"):
        read_records(doc)


def test_bad_records_are_named(tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"tokens": [1, 2]}\n{"tokens": [[1], [2]]}\n')
    with pytest.raises(SchemeError, match="record 2"):
        read_records(f)
    f.write_text('{"tokens": [1, 2]}\nnot json\n')
    with pytest.raises(SchemeError, match="not JSONL"):
        read_records(f)


def test_prompt_windows_are_excluded_from_detection() -> None:
    """An answer that copies its prompt scores only the windows the prompt does not contain."""
    from distillguard.forensics.detect import Record

    key = ProviderSecret(bytes(range(32))).account_key("a")
    prompt = np.arange(100, 160)
    answer = np.concatenate([prompt, np.arange(500, 540)])
    with_prompt = detect_records([Record("r1", answer, prompt)], KGW(), key=key)
    without = detect_records([Record("r1", answer, prompt)], KGW(), key=key, exclude_prompt=False)
    assert without["per_record"][0]["tokens_scored"] == 99
    assert with_prompt["per_record"][0]["tokens_scored"] == 99 - 59
