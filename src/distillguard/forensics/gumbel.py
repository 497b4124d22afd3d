"""Distortion-free Gumbel-max watermark (Aaronson, 2022).

For the context of the previous h tokens, the key gives every vocabulary token a pseudo-random
r ∈ (0, 1); generation picks argmax r^(1/p) over the model's probabilities p. Over the key's randomness
this samples exactly from p (the Gumbel-max trick), so the mark costs no quality; but it is
deterministic given the context, so use a context of several tokens (default h = 4) to avoid loops.
Detection sums -log(1 - r) over the scored windows: for text not marked with the key each term is
Exp(1), so the sum of n terms is Gamma(n, 1) and the p-value is its exact upper tail.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import special

from distillguard.forensics.keyed_hash import U64, context_hash, keyed_values, to_unit
from distillguard.forensics.keys import WatermarkKey
from distillguard.forensics.kgw import check_logits
from distillguard.forensics.scheme import FloatArray, HashedScheme, SchemeError, register_scheme


def gamma_tail(statistic: FloatArray, n: FloatArray) -> FloatArray:
    """P(S >= statistic) for S ~ Gamma(n, 1): the regularised upper incomplete gamma Q(n, s)."""
    n = np.asarray(n, dtype=np.float64)
    safe_n = np.where(n > 0, n, 1.0)
    return np.where(n > 0, special.gammaincc(safe_n, np.asarray(statistic, dtype=np.float64)), 1.0)


@register_scheme("gumbel")
class Gumbel(HashedScheme):
    """Aaronson's Gumbel-max sampling keyed on the previous h tokens."""

    name = "gumbel"

    def __init__(self, context_width: int = 4) -> None:
        if not 1 <= context_width <= 8:
            raise SchemeError(f"gumbel: context_width must be 1..8, got {context_width}")
        self.context_width = int(context_width)

    def __repr__(self) -> str:
        return f"Gumbel(context_width={self.context_width})"

    @property
    def null_mean(self) -> float:
        return 1.0

    def uniforms(self, seeds: U64, contexts: U64, tokens: U64) -> FloatArray:
        """r (k, n) for every key and window."""
        ctx = context_hash(contexts)
        return to_unit(keyed_values(seeds[:, None], ctx[None, :], tokens[None, :]))

    def _token_scores(self, seeds: U64, contexts: U64, tokens: U64) -> FloatArray:
        return -np.log1p(-self.uniforms(seeds, contexts, tokens))

    def _p_values(self, statistic: FloatArray, n: FloatArray) -> FloatArray:
        return gamma_tail(statistic, n)

    def _z(self, statistic: FloatArray, n: FloatArray) -> FloatArray:
        n = np.asarray(n, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (np.asarray(statistic) - n) / np.sqrt(n)
        return np.where(n > 0, z, 0.0)

    def choose(
        self, input_ids: npt.ArrayLike, logits: npt.ArrayLike, key: WatermarkKey
    ) -> npt.NDArray[np.int64]:
        """The token each row picks: argmax r^(1/p) = argmax log p - log(-log r) (stable in log space)."""
        ids, lg = check_logits(input_ids, logits)
        shifted = lg - lg.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        if ids.shape[1] < self.context_width:
            return np.asarray(np.argmax(logp, axis=1), dtype=np.int64)
        ctx = context_hash(ids[:, -self.context_width :])
        vocab = np.arange(lg.shape[1], dtype=np.uint64)
        r = to_unit(keyed_values(np.full(1, key.seed, dtype=np.uint64), ctx[:, None], vocab[None, :]))
        return np.asarray(np.argmax(logp - np.log(-np.log(r)), axis=1), dtype=np.int64)

    def bias(self, input_ids: npt.ArrayLike, logits: npt.ArrayLike, key: WatermarkKey) -> FloatArray:
        """Logits that allow only the chosen token (0 there, -inf elsewhere).

        The choice already is the sample (the randomness is the key's), so masking the rest makes any
        downstream decoding (greedy, sampling, temperature) emit it. Before the context is full the
        model's argmax is forced, which keeps generation deterministic for a given key.
        """
        choice = self.choose(input_ids, logits, key)
        lg = np.atleast_2d(np.asarray(logits, dtype=np.float64))
        out = np.full(lg.shape, -np.inf)
        out[np.arange(lg.shape[0]), choice] = 0.0
        return out
