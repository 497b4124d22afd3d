"""`distillguard audit`: outputs (console, JSON, CSV), --fail-on exit codes, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from distillguard.cli import app

OPENAI_INPUT = 174_262_287  # fixtures/README.md


def _run(*args: str | Path):
    return CliRunner().invoke(app, ["audit", *map(str, args)])


def test_tables_as_json_and_csv(openai_export: Path, anthropic_export: Path, tmp_path: Path) -> None:
    r = _run(openai_export, anthropic_export, "--json", tmp_path / "j", "--csv", tmp_path / "c")
    assert r.exit_code == 0, r.output
    assert "Volume by API key" in r.output and "Sudden jump" in r.output
    names = {
        "totals",
        "volume_by_project",
        "volume_by_key",
        "volume_by_model",
        "volume_by_day",
        "volume_by_key_day",
        "risks",
    }
    assert {p.stem for p in (tmp_path / "c").glob("*.csv")} == names
    assert {p.stem for p in (tmp_path / "j").glob("*.json")} == names | {"audit"}
    summary = json.loads((tmp_path / "j" / "audit.json").read_text())
    assert summary["verdict"] == "suspect" and summary["risks"] == {"watch": 2, "suspect": 1}
    assert summary["prices"]["as_of"]
    with open(tmp_path / "c" / "totals.csv") as f:
        tot = {row["provider"]: row for row in csv.DictReader(f)}
    assert int(tot["openai"]["input_tokens"]) == OPENAI_INPUT
    assert tot["anthropic"]["requests"] == ""  # not reported, not zero
    with open(tmp_path / "c" / "risks.csv") as f:
        risks = list(csv.DictReader(f))
    assert {r["kind"] for r in risks} == {"volume_jump", "reasoning_heavy"}
    assert json.loads(risks[0]["evidence"])["tokens"] == 29_300_297


def test_fail_on_exit_codes(openai_export: Path, anthropic_export: Path, tmp_path: Path) -> None:
    assert _run(openai_export, "--fail-on", "suspect").exit_code == 1
    assert _run(openai_export, "--fail-on", "watch").exit_code == 1
    assert _run(anthropic_export, "--fail-on", "watch").exit_code == 0  # a clean export
    # raise the bar for suspect jumps: only watch findings remain
    cfg = tmp_path / "dg.toml"
    cfg.write_text("[audit]\njump_suspect_ratio = 100\n")
    assert _run(openai_export, "--config", cfg, "--fail-on", "suspect").exit_code == 0
    assert _run(openai_export, "--config", cfg, "--fail-on", "watch").exit_code == 1


def test_errors_and_strict(openai_export: Path, tmp_path: Path) -> None:
    r = _run(openai_export, "--fail-on", "block")
    assert r.exit_code == 2 and "--fail-on" in r.output
    assert _run(tmp_path / "missing.json").exit_code == 2
    cfg = tmp_path / "dg.toml"
    cfg.write_text("[audit]\njump_ratio = 0.5\n")
    r = _run(openai_export, "--config", cfg)
    assert r.exit_code == 2 and "audit.jump_ratio" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text(openai_export.read_text() + '{"object": "page", "data": [{"start_time": "x"}]}\n')
    r = _run(bad, "--strict", "--json", tmp_path / "j")
    assert r.exit_code == 3
    q = (tmp_path / "j" / "quarantine.jsonl").read_text()
    assert "data[0].start_time" in q and f'"line":{len(openai_export.read_text().splitlines()) + 1}' in q
