"""Compliance risk from usage exports alone: sudden jumps in a key's daily volume, reasoning-heavy keys.

Every finding is a `Risk`: a level (watch or suspect), a kind, the key or account it is about, a sentence
in plain words and the numbers behind it. Patterns that need the prompts (bulk single-turn generation,
step-by-step elicitation, benchmark sweeps) come from full logs: see `audit.logs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.lib.stride_tricks import sliding_window_view

from distillguard.audit.config import AuditConfig

RiskLevel = Literal["watch", "suspect"]
RISK_LEVELS: tuple[RiskLevel, ...] = ("watch", "suspect")


@dataclass
class Risk:
    level: RiskLevel
    kind: str  # volume_jump, reasoning_heavy, bulk_generation, step_by_step, benchmark_sweep, ...
    subject: str  # "openai key key_abc", "account acct_1"
    summary: str  # plain words, for the people who act on it
    day: date | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "kind": self.kind,
            "subject": self.subject,
            "day": self.day,
            "summary": self.summary,
            "evidence": self.evidence,
        }


def _fmt(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


def daily_matrix(t: pa.Table) -> tuple[list[tuple[str, str]], list[date], np.ndarray]:
    """(provider, who) pairs, the days from the first to the last, and total tokens per pair and day.

    `who` is "key K"; usage with no key (an export not grouped by key, playground use) is followed per
    project ("project P"), else as "usage without a key or project", so that it is checked too.
    """
    key, proj = t.column("api_key"), t.column("project")
    who = pc.coalesce(
        pc.binary_join_element_wise("key ", key, ""),
        pc.binary_join_element_wise("project ", proj, ""),
        pa.scalar("usage without a key or project"),
    )
    keyed = pa.table(
        {
            "provider": t.column("provider"),
            "api_key": who,
            "day": t.column("day"),
            "total_tokens": t.column("total_tokens"),
        }
    )
    g = keyed.group_by(["provider", "api_key", "day"], use_threads=False).aggregate([("total_tokens", "sum")])
    if g.num_rows == 0:
        return [], [], np.zeros((0, 0))
    pair = pc.binary_join_element_wise(g.column("provider"), g.column("api_key"), "\x1f")
    uniq = pc.unique(pair)
    uniq = uniq.take(pc.sort_indices(uniq))
    rows = np.asarray(pc.index_in(pair, uniq).to_numpy(zero_copy_only=False), dtype=np.int64)
    day = np.asarray(pc.cast(g.column("day"), pa.int32()).to_numpy(zero_copy_only=False), dtype=np.int64)
    first = int(day.min())
    span = [date(1970, 1, 1) + timedelta(days=d) for d in range(first, int(day.max()) + 1)]
    m = np.zeros((len(uniq), len(span)))
    m[rows, day - first] = np.asarray(
        g.column("total_tokens_sum").to_numpy(zero_copy_only=False), dtype=np.float64
    )
    keys = [(p, k) for p, _, k in (s.partition("\x1f") for s in uniq.to_pylist())]
    return keys, span, m


def _nanmedian_rows(h: np.ndarray) -> np.ndarray:
    """Median of each row ignoring NaN (every row has a value): a sort, much faster than np.nanmedian."""
    n = np.sum(~np.isnan(h), axis=1)
    srt = np.sort(h, axis=1)  # NaN sorts last
    lo = np.take_along_axis(srt, ((n - 1) // 2)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(srt, (n // 2)[:, None], axis=1)[:, 0]
    return np.asarray((lo + hi) / 2.0)


def volume_jumps(t: pa.Table, cfg: AuditConfig) -> list[Risk]:
    """Days on which a key's tokens jump far above its own trailing history (ratio and robust z).

    History is the key's active days (any usage) in the trailing window: a key that runs a weekly batch
    is compared with its batch days, not with the idle days between them. The MAD scale is floored at
    5% of the median, so that a perfectly steady key does not turn every wobble into an infinite z.
    """
    keys, span, m = daily_matrix(t)
    w = cfg.jump_window_days
    if not keys or len(span) <= cfg.jump_min_history_days:
        return []
    # hist[k, d, :] is the w days before day d (NaN before the first day, and on idle days)
    act = np.where(m > 0, m, np.nan)
    padded = np.concatenate([np.full((len(keys), w), np.nan), act], axis=1)
    hist = sliding_window_view(padded, w, axis=1)[:, : len(span), :]
    n_hist = np.sum(~np.isnan(hist), axis=2)
    ok = n_hist >= cfg.jump_min_history_days
    with np.errstate(all="ignore"):
        # only the days with enough history are computed (nanmedian over all-NaN rows warns)
        med = np.full(m.shape, np.nan)
        mad = np.full(m.shape, np.nan)
        h = hist[ok]
        med[ok] = _nanmedian_rows(h)
        mad[ok] = _nanmedian_rows(np.abs(h - med[ok][:, None]))
        scale = np.maximum(np.maximum(1.4826 * mad, 0.05 * med), 1.0)
        z = (m - med) / scale
        ratio = m / np.maximum(med, 1.0)
    hit = ok & (m >= cfg.jump_min_tokens) & (ratio >= cfg.jump_ratio) & (z >= cfg.jump_z)
    out = []
    for k, d in zip(*np.nonzero(hit), strict=True):
        provider, who = keys[k]
        r = float(ratio[k, d])
        out.append(
            Risk(
                level="suspect" if r >= cfg.jump_suspect_ratio else "watch",
                kind="volume_jump",
                subject=f"{provider} {who}",
                day=span[d],
                summary=(
                    f"Sudden jump: {_fmt(m[k, d])} tokens on {span[d]}, {r:.0f}x this key's usual "
                    f"{_fmt(med[k, d])} a day (robust z {z[k, d]:.0f} over {int(n_hist[k, d])} active days). "
                    "A bulk job on a key is how training-data collection usually starts: check who ran it "
                    "and what the outputs were used for."
                ),
                evidence={
                    "tokens": int(m[k, d]),
                    "median_tokens": float(med[k, d]),
                    "ratio": round(r, 2),
                    "robust_z": round(float(z[k, d]), 2),
                    "history_days": int(n_hist[k, d]),
                },
            )
        )
    return out


def reasoning_heavy(t: pa.Table, cfg: AuditConfig) -> list[Risk]:
    """Keys whose output tokens go mostly to reasoning models, at volume."""
    keyed = t.filter(pc.is_valid(t.column("api_key")))
    g = keyed.group_by(["provider", "api_key"], use_threads=False).aggregate(
        [("output_tokens", "sum"), ("reasoning_output_tokens", "sum")]
    )
    rm = (
        keyed.filter(keyed.column("reasoning"))
        .group_by(["provider", "api_key"], use_threads=False)
        .aggregate([("model", "distinct")])
    )
    models = {
        (p, k): sorted(x for x in ms if x is not None)
        for p, k, ms in zip(
            *(rm.column(c).to_pylist() for c in ("provider", "api_key", "model_distinct")), strict=True
        )
    }
    out = []
    for r in g.sort_by([("provider", "ascending"), ("api_key", "ascending")]).to_pylist():
        total, reas = r["output_tokens_sum"] or 0, r["reasoning_output_tokens_sum"] or 0
        if total == 0 or reas < cfg.reasoning_min_output_tokens or reas / total < cfg.reasoning_share:
            continue
        names = models.get((r["provider"], r["api_key"]), [])
        out.append(
            Risk(
                level="watch",
                kind="reasoning_heavy",
                subject=f"{r['provider']} key {r['api_key']}",
                summary=(
                    f"Heavy reasoning-model use: {reas / total:.0%} of this key's {_fmt(total)} output tokens "
                    f"went to reasoning models ({', '.join(names)}). Providers watch for harvested reasoning; "
                    "make sure these answers are not collected as training data for another model."
                ),
                evidence={"output_tokens": total, "reasoning_output_tokens": reas, "models": names},
            )
        )
    return out
