"""The combiner: from findings to a score in [0, 1], a level and the evidence behind it.

score = sigmoid(bias + H + max(S + M, min(S, 0)))  with
  H = sum of weight * strength over "hard" findings (generator fingerprints, resampling tricks),
  S = the same over "soft" behavioural findings, M = the same over mitigating findings (negative).
Mitigations (closed-loop follow-ups, narrow templates) explain away behavioural evidence but never
cancel recipe evidence: a customer who chats *and* runs the Alpaca meta-prompt is still harvesting.
Weights are log-odds, set by hand and documented in docs/scoring.md; `calibration` maps a score
threshold to the false-positive rate it has on benign traffic.
"""

from __future__ import annotations

import numpy as np

from distillguard.config import ScoringConfig
from distillguard.detect.evidence import LEVELS, Evidence, Level
from distillguard.detect.signals.base import Finding

MIN_STRENGTH = 0.05  # findings weaker than this are not listed as evidence


def combine(findings: list[Finding], cfg: ScoringConfig) -> tuple[np.ndarray, np.ndarray]:
    """(score per account, logit contribution matrix [finding, account])."""
    if not findings:
        return np.zeros(0), np.zeros((0, 0))
    contrib = np.stack([cfg.weights.get(f.name, 0.0) * f.strength for f in findings])
    hard_mask = np.array([f.name in cfg.hard for f in findings])
    mit_mask = np.array([cfg.weights.get(f.name, 0.0) < 0 for f in findings])
    soft_mask = ~hard_mask & ~mit_mask
    h = contrib[hard_mask].sum(axis=0)
    s = contrib[soft_mask].sum(axis=0)
    m = contrib[mit_mask].sum(axis=0)
    logit = cfg.bias + h + np.maximum(s + m, np.minimum(s, 0.0))
    return sigmoid(logit), contrib


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Score from log-odds: the combiner's last step."""
    return 1.0 / (1.0 + np.exp(-z))


def logit(p: np.ndarray | float, eps: float = 1e-12) -> np.ndarray:
    """The combiner's log-odds of a score (scores are clipped `eps` off 0 and 1 first)."""
    q = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(q / (1 - q))


def level_of(score: float, cfg: ScoringConfig) -> Level:
    lvl: Level = "ok"
    for name in LEVELS[1:]:
        if score >= cfg.levels[name]:
            lvl = name
    return lvl


def levels(scores: np.ndarray, cfg: ScoringConfig) -> list[Level]:
    return [level_of(float(s), cfg) for s in scores]


def evidence_for(
    i: int, findings: list[Finding], contrib: np.ndarray, max_examples: int = 3
) -> list[Evidence]:
    """Evidence list for account (or campaign) i, strongest contribution first."""
    out = []
    for k, f in enumerate(findings):
        st = float(f.strength[i])
        if st < MIN_STRENGTH or contrib[k, i] == 0:
            continue
        value = float(f.value[i])
        ex = list(f.examples[i])[:max_examples] if f.examples is not None else []
        try:
            detail = f.describe.format(value=value)
        except (ValueError, KeyError):
            detail = f"{f.name} = {value:.3g}"
        out.append(
            Evidence(
                signal=f.name,
                value=round(value, 6),
                threshold=f.threshold,
                weight=round(float(contrib[k, i]), 4),
                detail=detail,
                examples=[str(e) for e in ex],
                indicator=f.indicators[i] if f.indicators is not None else None,
            )
        )
    out.sort(key=lambda e: -abs(e.weight))
    return out
