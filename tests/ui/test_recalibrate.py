from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillguard.config import ScoringConfig, load
from distillguard.detect.recalibrate import (
    RecalibrationError,
    expand_decisions,
    recalibrate,
    scoring_toml,
)
from distillguard.detect.scoring import combine
from distillguard.detect.signals.base import Finding


def _write_scan(out: Path, rows: list[tuple[str, dict[str, float]]], cfg: ScoringConfig) -> dict[str, float]:
    """accounts.parquet whose scores are what the real combiner gives for these signal strengths."""
    names = sorted({k for _, s in rows for k in s})
    findings = [
        Finding(name=n, value=np.array([s.get(n, 0.0) for _, s in rows]),
                strength=np.array([s.get(n, 0.0) for _, s in rows]), threshold=1.0, describe="{value}")
        for n in names
    ]  # fmt: skip
    scores, contrib = combine(findings, cfg)
    ev = [
        [{"signal": n, "value": s.get(n, 0.0), "threshold": 1.0, "weight": float(contrib[k, i]),
          "detail": "", "examples": [], "indicator": None} for k, n in enumerate(names) if s.get(n, 0.0) > 0]
        for i, (_, s) in enumerate(rows)
    ]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "account_id": [a for a, _ in rows],
                "score": scores,
                "own_score": scores,
                "evidence": [orjson.dumps(e).decode() for e in ev],
            }
        ),
        out / "accounts.parquet",
    )
    return dict(zip([a for a, _ in rows], scores.tolist(), strict=True))


def _scan(tmp_path: Path) -> tuple[Path, dict[str, float]]:
    cfg = ScoringConfig()
    rng = np.random.default_rng(5)
    rows: list[tuple[str, dict[str, float]]] = []
    # back-office jobs: round the clock, single-turn, reused templates (the false-positive pattern)
    for i in range(30):
        rows.append((f"office{i}", {"timing.round_the_clock": 1.0, "open_loop.single_turn": 1.0,
                                    "skeleton.reuse": float(rng.uniform(0.5, 1)), "volume.vs_peers": 1.0}))  # fmt: skip
    # harvesters: chain-of-thought elicitation at a fixed budget, single-turn, regular timing
    for i in range(30):
        rows.append((f"harvest{i}", {"cot.elicitation": float(rng.uniform(0.6, 1)), "shape.max_tokens": 1.0,
                                     "open_loop.single_turn": 1.0, "timing.regular": float(rng.uniform(0.3, 1))}))  # fmt: skip
    for i in range(100):
        rows.append((f"chat{i}", {"open_loop.follow_ups": 1.0, "open_loop.single_turn": 0.2}))
    return tmp_path / "scan", _write_scan(tmp_path / "scan", rows, cfg)


def test_dismissals_lower_the_false_positive_pattern_not_the_harvest(tmp_path: Path) -> None:
    scan, scores = _scan(tmp_path)
    cfg = ScoringConfig()
    labels = {f"office{i}": 0 for i in range(20)} | {"harvest0": 1, "harvest1": 1}
    res = recalibrate(scan, labels, cfg)
    w0, w1 = cfg.weights, res.scoring.weights
    assert w1["timing.round_the_clock"] < w0["timing.round_the_clock"] - 0.2
    assert w1["cot.elicitation"] >= w0["cot.elicitation"] - 1e-3  # only harvesters show it
    assert res.scoring.bias == cfg.bias  # a global shift is what the levels are for
    assert res.reviewed_after["dismissed"] < res.reviewed_before["dismissed"]
    assert (res.n_dismissed, res.n_confirmed) == (20, 2)
    # rescoring with the new weights: the unreviewed office jobs fall too, the harvesters do not
    rows_new = _write_scan(tmp_path / "re", _rows_again(tmp_path / "scan", cfg), res.scoring)

    def drop(name: str, n: int) -> float:
        lg = lambda p: np.log(p / (1 - p))  # noqa: E731
        return float(np.mean([lg(scores[f"{name}{i}"]) - lg(rows_new[f"{name}{i}"]) for i in range(n)]))

    assert all(rows_new[f"office{i}"] < scores[f"office{i}"] for i in range(20, 30))
    # single-turn is shared by both, so the harvest may move a little, but far less than the office jobs
    assert drop("harvest", 30) < 0.25 * drop("office", 30)
    # mitigations keep their sign
    assert all(np.sign(w1[k]) == np.sign(v) for k, v in w0.items() if v != 0)


def _rows_again(scan: Path, cfg: ScoringConfig) -> list[tuple[str, dict[str, float]]]:
    t = pq.read_table(scan / "accounts.parquet").to_pylist()
    return [(r["account_id"], {e["signal"]: e["weight"] / cfg.weights[e["signal"]] for e in orjson.loads(r["evidence"])})
            for r in t]  # fmt: skip


def test_toml_loads_in_scan_config(tmp_path: Path) -> None:
    scan, _ = _scan(tmp_path)
    cfg = ScoringConfig(levels={"watch": 0.02, "suspect": 0.05, "block": 0.9})
    res = recalibrate(scan, {f"office{i}": 0 for i in range(10)}, cfg)
    p = tmp_path / "scoring.toml"
    p.write_text(scoring_toml(res.scoring, "test\nsecond line"))
    loaded = load(p).scoring
    assert loaded.weights == res.scoring.weights and loaded.levels == cfg.levels
    assert loaded.hard == cfg.hard and loaded.bias == res.scoring.bias


def test_errors_name_the_problem(tmp_path: Path) -> None:
    scan, _ = _scan(tmp_path)
    with pytest.raises(RecalibrationError, match="not in"):
        recalibrate(scan, {"acct_elsewhere": 0}, ScoringConfig())
    with pytest.raises(RecalibrationError, match="no confirmed or dismissed"):
        recalibrate(scan, {}, ScoringConfig())
    with pytest.raises(RecalibrationError, match=r"accounts\.parquet missing"):
        recalibrate(tmp_path / "nothing", {"a": 0}, ScoringConfig())


def test_campaign_decisions_cover_members_unless_overridden() -> None:
    got = expand_decisions(
        {"C1": "confirm", "a2": "dismiss", "a9": "escalate", "C2": "escalate"},
        {"C1": ["a1", "a2"], "C2": ["a3"]},
    )
    assert got == {"a1": 1, "a2": 0}
