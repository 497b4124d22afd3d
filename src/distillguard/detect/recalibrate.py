"""Recalibrate the combiner from analysts' decisions (`distillguard calibrate --decisions DB`).

The reviewed accounts are labelled examples: confirmed = distillation, dismissed = benign. What is fitted
is one multiplicative correction per signal weight, `w_k * exp(d_k)` (a weight keeps its sign, so a
mitigation stays a mitigation and recipe evidence stays recipe evidence), and a shift of the bias, by
penalised logistic regression through the combiner itself:

    logit_i(d, b) = logit(score_i) + f_i(d, b) - f_i(0, 0)

where f is `scoring.combine`'s logit rebuilt from account i's evidence (strength = contribution /
weight), and what the evidence does not explain (campaign inheritance, client slices, intel) stays as
it was. Two things hold the fit near the current weights, because twenty decisions cannot re-derive a
scorer: a Gaussian prior on every d_k and on b, and the unreviewed accounts, each a soft observation
of its own current score (so a correction that silences the dismissed accounts' pattern but also drags
down the accounts the scorer is sure of costs what it should). No rule names an account: what changes
are the weights of the signals that produced the false positives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
from scipy.optimize import minimize

from distillguard.config import ScoringConfig
from distillguard.detect.scoring import logit, sigmoid

_EPS = 1e-9


class RecalibrationError(ValueError):
    pass


@dataclass
class Recalibration:
    scoring: ScoringConfig
    n_confirmed: int
    n_dismissed: int
    changes: dict[str, tuple[float, float]]  # signal -> (old weight, new weight), changed ones
    bias_change: tuple[float, float]
    reviewed_before: dict[str, float]  # mean score of dismissed / confirmed before
    reviewed_after: dict[str, float]


def expand_decisions(decisions: dict[str, str], campaigns: dict[str, list[str]]) -> dict[str, int]:
    """account -> 1 (confirmed) / 0 (dismissed); a campaign's decision applies to its members unless an
    account has a decision of its own. Escalations are not labels."""
    out: dict[str, int] = {}
    for subject, d in decisions.items():
        if subject in campaigns and d in ("confirm", "dismiss"):
            for a in campaigns[subject]:
                out[a] = 1 if d == "confirm" else 0
    for subject, d in decisions.items():
        if subject not in campaigns and d in ("confirm", "dismiss"):
            out[subject] = 1 if d == "confirm" else 0
    return out


def recalibrate(
    scan_dir: Path,
    labels: dict[str, int],
    cfg: ScoringConfig,
    prior_sd: float = 1.0,
    bias_sd: float | None = None,
    anchor_weight: float = 1.0,
) -> Recalibration:
    """Fit weight corrections (and, with `bias_sd`, a bias shift) on the reviewed accounts of `scan_dir`.

    The bias stays by default: shifting it moves every account's score alike, which is what the level
    cut-offs are for, and on the simulator it costs attack accounts near the cut-off (their campaign
    membership needs an own score above `scan.campaign_inherit_floor`) for little gain.
    """
    path = scan_dir / "accounts.parquet"
    if not path.exists():
        raise RecalibrationError(f"{scan_dir} holds no scan (accounts.parquet missing)")
    t = pq.read_table(path, columns=["account_id", "score", "evidence"]).to_pydict()
    ids: list[str] = t["account_id"]
    unknown = sorted(set(labels) - set(ids))
    if unknown:
        raise RecalibrationError(
            f"{len(unknown)} decided accounts are not in {scan_dir} (first: {unknown[0]}): "
            "were the decisions made on another scan?"
        )
    if not labels:
        raise RecalibrationError("no confirmed or dismissed accounts to learn from")
    signals = sorted(k for k, w in cfg.weights.items() if w != 0)
    col = {s: j for j, s in enumerate(signals)}
    w0 = np.array([cfg.weights[s] for s in signals])
    strength = np.zeros((len(ids), len(signals)))
    for i, raw in enumerate(t["evidence"]):
        try:
            evidence = orjson.loads(raw or "[]")
        except orjson.JSONDecodeError as exc:
            raise RecalibrationError(f"{path}: account {ids[i]}: evidence is not JSON ({exc})") from None
        for ev in evidence:
            j = col.get(ev["signal"])
            if j is not None:
                strength[i, j] = float(ev["weight"]) / w0[j]
    hard = np.array([s in cfg.hard for s in signals])
    mit = w0 < 0
    soft = ~hard & ~mit

    def f(w: np.ndarray, bias: float) -> np.ndarray:
        c = strength * w
        s = c[:, soft].sum(axis=1)
        return np.asarray(
            bias + c[:, hard].sum(axis=1) + np.maximum(s + c[:, mit].sum(axis=1), np.minimum(s, 0.0))
        )

    z0 = logit(np.asarray(t["score"], dtype=np.float64), _EPS)
    f0 = f(w0, cfg.bias)
    reviewed = np.array([a in labels for a in ids])
    y = np.array([labels.get(a, 0) for a in ids], dtype=np.float64)
    # unreviewed accounts: soft targets at their current scores; reviewed: the analysts' labels
    target = np.where(reviewed, y, sigmoid(z0))
    weight = np.where(reviewed, 1.0, anchor_weight)
    n = len(signals)

    def loss(theta: np.ndarray) -> float:
        d, b = theta[:n], theta[n]
        z = z0 + f(w0 * np.exp(d), cfg.bias + b) - f0
        # binary cross-entropy in a numerically stable form
        bce = np.logaddexp(0.0, z) - target * z
        return float(
            (weight * bce).sum()
            + (d**2).sum() / (2 * prior_sd**2)
            + (b**2 / (2 * bias_sd**2) if bias_sd else 0.0)
        )

    bias_bound = (-3.0, 3.0) if bias_sd is not None else (0.0, 0.0)
    res = minimize(loss, np.zeros(n + 1), method="L-BFGS-B", bounds=[(-4.0, 1.0)] * n + [bias_bound])
    d, b = res.x[:n], float(res.x[n])
    w1 = w0 * np.exp(d)
    z1 = z0 + f(w1, cfg.bias + b) - f0
    new_weights = dict(cfg.weights)
    changes: dict[str, tuple[float, float]] = {}
    for s, old, new in zip(signals, w0, w1, strict=True):
        new_weights[s] = round(float(new), 4)
        if abs(new - old) >= 5e-4:
            changes[s] = (float(old), round(float(new), 4))
    scoring = cfg.model_copy(update={"weights": new_weights, "bias": round(cfg.bias + b, 4)})

    def means(z: np.ndarray) -> dict[str, float]:
        p = sigmoid(z)
        out = {}
        for name, lab in (("dismissed", 0), ("confirmed", 1)):
            m = reviewed & (y == lab)
            out[name] = float(p[m].mean()) if m.any() else float("nan")
        return out

    return Recalibration(
        scoring=scoring,
        n_confirmed=int((reviewed & (y == 1)).sum()),
        n_dismissed=int((reviewed & (y == 0)).sum()),
        changes=changes,
        bias_change=(cfg.bias, round(cfg.bias + b, 4)),
        reviewed_before=means(z0),
        reviewed_after=means(z1),
    )


def scoring_toml(scoring: ScoringConfig, header: str) -> str:
    """A `[scoring]` table `distillguard scan --config` loads (json.dumps writes valid TOML strings)."""
    lines = [f"# {line}" for line in header.splitlines()]
    lines += ["[scoring]", f"bias = {scoring.bias!r}", f"hard = {json.dumps(list(scoring.hard))}"]
    if scoring.calibration is not None:
        lines.append(f"calibration = {json.dumps(str(scoring.calibration))}")
    lines += ["", "[scoring.levels]"]
    lines += [f"{k} = {v!r}" for k, v in scoring.levels.items()]
    lines += ["", "[scoring.weights]"]
    lines += [f"{json.dumps(k)} = {float(v)!r}" for k, v in scoring.weights.items()]
    return "\n".join(lines) + "\n"
