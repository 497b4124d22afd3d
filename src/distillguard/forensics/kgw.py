"""KGW green-list watermark (Kirchenbauer et al., 2023) with a keyed hash instead of a permutation.

Generation adds δ to the logits of "green" tokens; a token is green for a context when the keyed hash
of (key, previous h token ids, token) falls below γ·2^64. Every (context, token) pair is green with
probability γ independently of all others, which is what the exact binomial test needs, and the whole
vocabulary's green list is one array expression (no `randperm` per token, as in the reference code).
Detection counts green tokens among the scored windows: under the null (text not marked with this key)
the count is Binomial(n, γ), so the p-value is the exact binomial upper tail.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import stats

from distillguard.forensics.keyed_hash import U64, as_u64, context_hash, keyed_values, threshold
from distillguard.forensics.keys import WatermarkKey
from distillguard.forensics.scheme import FloatArray, HashedScheme, SchemeError, register_scheme


def binomial_tail(count: FloatArray, n: FloatArray, gamma: float) -> FloatArray:
    """P(X >= count) for X ~ Binomial(n, gamma), exactly (scipy's regularised incomplete beta)."""
    p = np.asarray(stats.binom.sf(np.asarray(count) - 1, n, gamma), dtype=np.float64)
    return np.where(np.asarray(n) > 0, p, 1.0)


def binomial_z(count: FloatArray, n: FloatArray, gamma: float) -> FloatArray:
    """(count - γn) / sqrt(nγ(1-γ)): the z-score KGW tools report (0 when nothing was scored)."""
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (np.asarray(count) - gamma * n) / np.sqrt(n * gamma * (1.0 - gamma))
    return np.where(n > 0, z, 0.0)


def check_logits(input_ids: npt.ArrayLike, logits: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Validate and shape (batch, t) ids and (batch, vocab) logits for a `bias` call."""
    ids = np.atleast_2d(np.asarray(input_ids))
    lg = np.atleast_2d(np.asarray(logits, dtype=np.float64))
    if ids.ndim != 2 or lg.ndim != 2:
        raise SchemeError(f"bias needs ids (batch, t) and logits (batch, vocab), got {ids.shape}, {lg.shape}")
    if ids.shape[0] != lg.shape[0]:
        raise SchemeError(f"ids have {ids.shape[0]} rows but logits have {lg.shape[0]}")
    return ids.astype(np.int64, copy=False), lg


@register_scheme("kgw")
class KGW(HashedScheme):
    """Green list of a fraction γ of the vocabulary per context of h previous tokens; bias δ."""

    name = "kgw"

    def __init__(self, gamma: float = 0.25, delta: float = 2.0, context_width: int = 1) -> None:
        if not 0.0 < gamma < 1.0:
            raise SchemeError(f"kgw: gamma must lie in (0, 1), got {gamma}")
        if delta < 0:
            raise SchemeError(f"kgw: delta must be >= 0, got {delta}")
        if not 1 <= context_width <= 8:
            raise SchemeError(f"kgw: context_width must be 1..8, got {context_width}")
        self.gamma = float(gamma)
        self.delta = float(delta)
        self.context_width = int(context_width)
        self._threshold = threshold(self.gamma)

    def __repr__(self) -> str:
        return f"KGW(gamma={self.gamma}, delta={self.delta}, context_width={self.context_width})"

    @property
    def null_mean(self) -> float:
        return self.gamma

    def green_mask(self, seeds: U64, contexts: U64, tokens: U64) -> npt.NDArray[np.bool_]:
        """Green flags (k, n): the keyed hash of each window below γ·2^64, for every key."""
        ctx = context_hash(contexts)
        return keyed_values(seeds[:, None], ctx[None, :], tokens[None, :]) < self._threshold

    def _token_scores(self, seeds: U64, contexts: U64, tokens: U64) -> FloatArray:
        return self.green_mask(seeds, contexts, tokens).astype(np.float64)

    def _p_values(self, statistic: FloatArray, n: FloatArray) -> FloatArray:
        return binomial_tail(statistic, n, self.gamma)

    def _z(self, statistic: FloatArray, n: FloatArray) -> FloatArray:
        return binomial_z(statistic, n, self.gamma)

    def bias(self, input_ids: npt.ArrayLike, logits: npt.ArrayLike, key: WatermarkKey) -> FloatArray:
        ids, lg = check_logits(input_ids, logits)
        if ids.shape[1] < self.context_width:  # no full context yet: nothing to key on
            return lg.copy()
        ctx = context_hash(ids[:, -self.context_width :])
        vocab = np.arange(lg.shape[1], dtype=np.uint64)
        green = (
            keyed_values(np.full(1, key.seed, dtype=np.uint64), ctx[:, None], vocab[None, :])
            < self._threshold
        )
        return lg + self.delta * green


def kgw_green_flags(scheme: KGW, tokens: npt.ArrayLike, key: WatermarkKey) -> npt.NDArray[np.bool_]:
    """Green flag of every position of one sequence (False for the first h): for inspection."""
    ids = as_u64(np.asarray(tokens).ravel())
    out = np.zeros(ids.size, dtype=bool)
    h = scheme.context_width
    if ids.size > h:
        win = np.lib.stride_tricks.sliding_window_view(ids, h + 1)
        out[h:] = scheme.green_mask(np.array([key.seed], np.uint64), win[:, :h], win[:, h])[0]
    return out
