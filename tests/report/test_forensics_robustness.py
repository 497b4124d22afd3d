"""The forensics section's robustness table: read from forensics.json / evidence.json, rendered as HTML.

A small JSON fixture, no model: the numbers are the benchmark's format (benchmarks/forensics_radioactivity.py).
"""

from __future__ import annotations

import html as html_lib
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from distillguard.report.data import load
from distillguard.report.forensics import EVIDENCE, FILE, load_forensics
from distillguard.report.html import render

ROBUSTNESS: list[dict[str, Any]] = [
    {"attack": "none", "texts": 64, "median_tokens": 121.0, "median_p_value": 3.2e-19,
     "share_below_1e6": 1.0, "share_below_1e3": 1.0, "share_account_named": 1.0},
    {"attack": "synonym substitution 25%", "texts": 64, "median_tokens": 123.5, "median_p_value": 4.1e-9,
     "share_below_1e6": 0.8125, "share_below_1e3": 0.96875, "share_account_named": 0.90625,
     "share_words_changed": 0.0123},
    {"attack": "paraphrase (SmolLM2, unwatermarked)", "texts": 24, "median_tokens": 140.0,
     "median_p_value": 0.37, "share_below_1e6": 0.0, "share_below_1e3": 0.0, "share_account_named": None},
]  # fmt: skip
TEST = {"suspect": "transformer student, 5% watermarked", "setting": "open", "scheme": "kgw",
        "p_value": 2.5e-6, "tokens_scored": 9120, "accounts_implicated": ["acct-0333@0"]}  # fmt: skip


def _scan_with(scan_dir: Path, root: Path, name: str, doc: dict[str, Any]) -> Path:
    """A copy of the shared scan (linked) whose forensics file is `doc`."""
    out = root / "scan"
    out.mkdir()
    for f in scan_dir.iterdir():
        if f.name not in (FILE, EVIDENCE):
            (out / f.name).symlink_to(f)
    (out / name).write_bytes(orjson.dumps(doc))
    return out


def _rows(html: str, table_id: str) -> list[list[str]]:
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S)
    assert table is not None, f"no table {table_id}"
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)
    return [
        [
            html_lib.unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r, re.S)
        ]
        for r in rows
    ]


def test_robustness_table_is_rendered_in_the_forensics_section(scan_dir: Path, tmp_path: Path) -> None:
    scan = _scan_with(
        scan_dir, tmp_path, FILE, {"schema_version": 1, "tests": [TEST], "robustness": ROBUSTNESS}
    )
    html = render(load(scan))
    rows = _rows(html, "forensics-robustness")
    assert rows[0] == ["attack", "words changed", "texts", "median tokens", "median p-value", "p < 1e-6", "p < 1e-3",
                       "account named"]  # fmt: skip
    assert rows[1:] == [
        ["none", "-", "64", "121", "3.2e-19", "100%", "100%", "100%"],
        ["synonym substitution 25%", "1.2%", "64", "124", "4.1e-09", "81%", "97%", "91%"],
        ["paraphrase (SmolLM2, unwatermarked)", "-", "24", "140", "0.37", "0%", "0%", "-"],
    ]
    # inside the forensics section, after the tests table
    assert html.index('id="forensics-table"') < html.index('id="forensics-robustness"')


def test_no_robustness_rows_no_table(scan_dir: Path, tmp_path: Path) -> None:
    scan = _scan_with(scan_dir, tmp_path, FILE, {"schema_version": 1, "tests": [TEST]})
    html = render(load(scan))
    assert 'id="forensics-table"' in html and 'id="forensics-robustness"' not in html


def test_robustness_of_an_evidence_document_is_kept(tmp_path: Path) -> None:
    ev = {"suspect": "students/5pct", "scheme": "KGW(...)", "alpha": 1e-3,
          "tests": [{"setting": "open", "p_value": 2.5e-6, "tokens_scored": 9120, "implicated": ["a@0"]}],
          "robustness": ROBUSTNESS}  # fmt: skip
    (tmp_path / EVIDENCE).write_bytes(orjson.dumps(ev))
    rep = load_forensics(tmp_path)
    assert rep is not None
    assert [r.attack for r in rep.robustness] == [r["attack"] for r in ROBUSTNESS]
    assert rep.robustness[1].share_below_1e6 == pytest.approx(0.8125)


def test_a_share_outside_zero_one_names_the_field(tmp_path: Path) -> None:
    bad = dict(ROBUSTNESS[0], share_below_1e3=1.5)
    (tmp_path / FILE).write_bytes(orjson.dumps({"tests": [], "robustness": [bad]}))
    with pytest.raises(ValueError, match=r"forensics.json: field robustness.0.share_below_1e3"):
        load_forensics(tmp_path)
