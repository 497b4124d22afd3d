"""Which account leaked: test a text (or a pooled sample) against every account key at once.

Each key is one hypothesis ("this text carries account A's mark"). Testing 1,000 keys at α = 1e-3
without correction would implicate someone by chance in most innocent samples, so p-values are
adjusted for the family (Holm's step-down, which controls the family-wise error rate like
Bonferroni and is uniformly more powerful; Bonferroni on request). An account is implicated when its
adjusted p-value is at most α; the keys are scored in one vectorised pass (`score_keys`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from distillguard.forensics.keys import KeyRing
from distillguard.forensics.scheme import Exclude, KeyScores, SchemeError, Tokens

Correction = Literal["holm", "bonferroni"]


def holm(p_values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Holm step-down adjusted p-values (vectorised): reject H_i iff adjusted_i <= α."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adj = np.empty(m)
    adj[order] = np.minimum(stepped, 1.0)
    return adj


def bonferroni(p_values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    p = np.asarray(p_values, dtype=np.float64)
    return np.minimum(p * p.size, 1.0)


@dataclass(frozen=True)
class Attribution:
    """The result of testing one sample against a key ring."""

    scheme: str
    n_scored: int
    alpha: float
    correction: Correction
    labels: list[str]  # account@epoch of each key, in ring order
    p_values: npt.NDArray[np.float64]  # raw, per key
    adjusted: npt.NDArray[np.float64]  # family-wise adjusted, per key
    z: npt.NDArray[np.float64]
    implicated: list[str] = field(default_factory=list)  # labels with adjusted p <= alpha, best first

    @property
    def best(self) -> str | None:
        return self.labels[int(np.argmin(self.p_values))] if self.labels else None

    @property
    def family_p_value(self) -> float:
        """Adjusted p-value of the best key: the p-value of "some account's mark is present"."""
        return float(self.adjusted.min()) if self.adjusted.size else 1.0

    def to_dict(self, top: int = 5) -> dict[str, object]:
        order = np.argsort(self.p_values, kind="stable")[:top]
        return {
            "scheme": self.scheme,
            "tokens_scored": self.n_scored,
            "keys_tested": len(self.labels),
            "alpha": self.alpha,
            "correction": self.correction,
            "family_p_value": self.family_p_value,
            "implicated": self.implicated,
            "top": [
                {
                    "key": self.labels[i],
                    "p_value": float(self.p_values[i]),
                    "adjusted_p_value": float(self.adjusted[i]),
                    "z": float(self.z[i]),
                }
                for i in order
            ],
        }


def attribute(
    scheme: object,
    tokens: Tokens,
    ring: KeyRing,
    *,
    alpha: float = 1e-3,
    correction: Correction = "holm",
    exclude: Exclude = None,
    dedup: bool = True,
) -> Attribution:
    """Test `tokens` against every key of `ring`; name the accounts whose adjusted p-value <= alpha."""
    if not 0.0 < alpha < 1.0:
        raise SchemeError(f"alpha must lie in (0, 1), got {alpha}")
    if len(ring) == 0:
        raise SchemeError("the key ring is empty: nothing to attribute to")
    score_keys = getattr(scheme, "score_keys", None)
    if score_keys is None:
        raise SchemeError(f"scheme {getattr(scheme, 'name', scheme)!r} cannot score many keys")
    ks: KeyScores = score_keys(tokens, ring.seeds, exclude=exclude, dedup=dedup)
    if correction == "holm":
        adj = holm(ks.p_value)
    elif correction == "bonferroni":
        adj = bonferroni(ks.p_value)
    else:
        raise SchemeError(f"correction must be 'holm' or 'bonferroni', got {correction!r}")
    labels = ring.labels
    hits = np.flatnonzero(adj <= alpha)
    hits = hits[np.argsort(ks.p_value[hits], kind="stable")]
    return Attribution(
        scheme=ks.scheme,
        n_scored=ks.n_scored,
        alpha=alpha,
        correction=correction,
        labels=labels,
        p_values=ks.p_value,
        adjusted=adj,
        z=ks.z,
        implicated=[labels[i] for i in hits],
    )
