"""Risks from usage exports: jumps and reasoning-heavy keys fire on the cases built for them, only there."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa

from distillguard.audit.config import AuditConfig
from distillguard.audit.prices import load
from distillguard.audit.risk import daily_matrix, reasoning_heavy, volume_jumps
from distillguard.audit.usage import read_usage
from distillguard.audit.volume import enrich
from distillguard.ingest.base import Quarantine


def _rows(paths: list[Path], cfg: AuditConfig | None = None) -> pa.Table:
    with Quarantine(None) as q:
        data = read_usage(paths, q)
    return enrich(data.table, load(cfg or AuditConfig()), 0.5)


def test_jumps_fire_only_on_the_built_cases(openai_export: Path, anthropic_export: Path) -> None:
    risks = volume_jumps(_rows([openai_export, anthropic_export]), AuditConfig())
    got = {(r.subject, r.day, r.level) for r in risks}
    assert got == {
        ("openai key key_data_pipeline", date(2026, 11, 5), "suspect"),
        ("openai key key_research_nb", date(2026, 10, 28), "watch"),
    }
    big = next(r for r in risks if r.level == "suspect")
    assert big.evidence["tokens"] == 29_300_297  # fixtures/README.md
    assert 20 <= big.evidence["ratio"] <= 30 and "Sudden jump" in big.summary


def test_jump_thresholds_come_from_config(openai_export: Path) -> None:
    t = _rows([openai_export])
    # a higher ratio bar drops the 7x jump and keeps the 25x one
    assert {r.day for r in volume_jumps(t, AuditConfig(jump_ratio=10))} == {date(2026, 11, 5)}
    # a volume floor above the 25x day silences both
    assert volume_jumps(t, AuditConfig(jump_min_tokens=40_000_000)) == []


def _series(last_day_factor: int) -> tuple[pa.Table, list[date]]:
    """20 steady days of k_steady then one day `last_day_factor` times bigger; k_new is brand new and
    grows fast over its first 4 days (no history: never a jump)."""
    days = [date(2026, 1, d) for d in range(1, 22)]
    rows = []
    for i, d in enumerate(days):
        rows.append(("openai", "k_steady", d, 1_000_000 * (last_day_factor if i == 20 else 1) + i * 1000))
        if i >= 17:
            rows.append(("openai", "k_new", d, 50_000_000 * (i - 16)))
    t = pa.table(
        {
            "provider": [r[0] for r in rows],
            "api_key": [r[1] for r in rows],
            "project": pa.array([None] * len(rows), pa.string()),
            "day": pa.array([r[2] for r in rows], pa.date32()),
            "total_tokens": pa.array([r[3] for r in rows], pa.int64()),
        }
    )
    return t, days


def test_steady_key_and_young_key_do_not_jump() -> None:
    t, _ = _series(3)
    keys, span, m = daily_matrix(t)
    assert keys == [("openai", "key k_new"), ("openai", "key k_steady")] and len(span) == 21
    assert m[1, 0] == 1_000_000 and m[0, 0] == 0
    assert volume_jumps(t, AuditConfig()) == []  # 3x is busy, not a jump
    t, days = _series(10)
    assert [(r.subject, r.day, r.level) for r in volume_jumps(t, AuditConfig())] == [
        ("openai key k_steady", days[-1], "watch")
    ]


def test_reasoning_heavy(openai_export: Path, anthropic_export: Path) -> None:
    risks = reasoning_heavy(_rows([openai_export, anthropic_export]), AuditConfig())
    assert [(r.subject, r.level) for r in risks] == [("openai key key_research_o3", "watch")]
    assert risks[0].evidence["models"] == ["o3-2025-04-16", "o4-mini-2025-04-16"]
    assert reasoning_heavy(_rows([openai_export]), AuditConfig(reasoning_min_output_tokens=10**9)) == []


def test_export_without_keys_is_checked_per_project(openai_export: Path, tmp_path: Path) -> None:
    # the same export as if fetched without group_by=api_key_id: the data pipeline's jump shows on its
    # project; the notebook key's 7x day drowns in its project's reasoning traffic
    text = openai_export.read_text()
    for k in ("key_data_pipeline", "key_research_nb", "key_research_o3", "key_support_bot", "key_marketing"):
        text = text.replace(f'"{k}"', "null")
    p = tmp_path / "nokeys.json"
    p.write_text(text)
    risks = volume_jumps(_rows([p]), AuditConfig())
    assert [(r.subject, r.day, r.level) for r in risks] == [
        ("openai project proj_data", date(2026, 11, 5), "suspect")
    ]
