"""Confidence decay of indicators: the polynomial model of MISP (and OpenCTI).

An indicator's confidence falls with the time since it was last seen:

    score(t) = base * (1 - (t / lifetime) ** (1 / speed))   for 0 <= t < lifetime, else 0

(MISP's "Polynomial" decaying model, from "An indicator scoring method for MISP platforms": `tau` is the
lifetime, `delta` the speed). A speed above 1 drops fast at first and then flattens; below 1 it stays
high and falls off near the end of the lifetime; 1 is linear.

Lifetimes differ by type because the things they name change hands at different rates: an IP address
behind a residential proxy is reassigned within days, an ASN or a user agent names infrastructure that
stays for months, and a keyed digest of an account or payment fingerprint names the operator itself.
These defaults are distillguard's own starting points, not numbers taken from MISP; tune them in the
config (`DecaySettings` is a pydantic model so it can be read from TOML).
"""

from __future__ import annotations

from typing import overload

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from distillguard.intel.indicator import IndicatorType

DAY = 86_400.0


class DecayModel(BaseModel):
    """One polynomial decay curve: `lifetime_days` (MISP `tau`) and `speed` (MISP `delta`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lifetime_days: float = Field(gt=0, description="Days after the last sighting when the score reaches 0.")
    speed: float = Field(gt=0, description=">1: drops fast early; 1: linear; <1: holds, then falls late.")

    @overload
    def score(self, base: float, elapsed_s: float) -> float: ...
    @overload
    def score(self, base: np.ndarray | float, elapsed_s: np.ndarray) -> np.ndarray: ...
    @overload
    def score(self, base: np.ndarray, elapsed_s: np.ndarray | float) -> np.ndarray: ...

    def score(self, base: np.ndarray | float, elapsed_s: np.ndarray | float) -> np.ndarray | float:
        """Decayed score after `elapsed_s` seconds; works on scalars and numpy arrays alike."""
        return polynomial(base, elapsed_s, self.lifetime_days, self.speed)


@overload
def polynomial(base: float, elapsed_s: float, lifetime_days: float, speed: float) -> float: ...
@overload
def polynomial(
    base: np.ndarray | float, elapsed_s: np.ndarray | float, lifetime_days: float, speed: float
) -> np.ndarray | float: ...


def polynomial(
    base: np.ndarray | float, elapsed_s: np.ndarray | float, lifetime_days: float, speed: float
) -> np.ndarray | float:
    """`base * (1 - (t / lifetime) ** (1 / speed))`, 0 from the lifetime on.

    A negative elapsed time (a peer's clock ahead of ours, or an assessment at a time before the last
    sighting) counts as just seen: full base score, rather than MISP's 0, so clock skew cannot silence
    a fresh indicator.
    """
    t = np.maximum(np.asarray(elapsed_s, dtype=np.float64), 0.0) / (lifetime_days * DAY)
    out = np.asarray(base, dtype=np.float64) * (1.0 - np.minimum(t, 1.0) ** (1.0 / speed))
    out = np.maximum(out, 0.0)
    if np.ndim(out) == 0:
        return float(out)
    return out


def _defaults() -> dict[IndicatorType, DecayModel]:
    fast_ip = DecayModel(lifetime_days=30, speed=2.0)  # residential/proxy addresses rotate within days
    return {
        IndicatorType.IPV4: fast_ip,
        IndicatorType.IPV6: fast_ip,
        IndicatorType.CIDR: DecayModel(lifetime_days=60, speed=1.5),  # a range outlives its addresses
        IndicatorType.ASN: DecayModel(lifetime_days=180, speed=1.0),
        IndicatorType.USER_AGENT: DecayModel(lifetime_days=120, speed=1.0),
        # digests name the operator's own accounts and instruments: they stay valid until burned
        IndicatorType.ACCOUNT: DecayModel(lifetime_days=365, speed=0.5),
        IndicatorType.ORGANISATION: DecayModel(lifetime_days=365, speed=0.5),
        IndicatorType.PAYMENT: DecayModel(lifetime_days=365, speed=0.5),
        IndicatorType.DEVICE: DecayModel(lifetime_days=180, speed=0.7),
        IndicatorType.SKELETON: DecayModel(lifetime_days=90, speed=1.0),  # prompt templates get reworded
        IndicatorType.CAMPAIGN: DecayModel(lifetime_days=365, speed=0.5),
    }


class DecaySettings(BaseModel):
    """Decay curve per indicator type. Types given in `models` replace their defaults, the others keep
    them; a type with no curve at all uses `default`."""

    model_config = ConfigDict(extra="forbid")
    models: dict[IndicatorType, DecayModel] = Field(default_factory=_defaults)
    default: DecayModel = DecayModel(lifetime_days=90, speed=1.0)

    @field_validator("models", mode="after")
    @classmethod
    def _over_defaults(cls, v: dict[IndicatorType, DecayModel]) -> dict[IndicatorType, DecayModel]:
        # a config that tunes one type keeps the defaults of the others
        return {**_defaults(), **v}

    def model_for(self, kind: IndicatorType | str) -> DecayModel:
        return self.models.get(IndicatorType(kind), self.default)

    @overload
    def score(self, kind: IndicatorType | str, base: float, elapsed_s: float) -> float: ...
    @overload
    def score(
        self, kind: IndicatorType | str, base: np.ndarray | float, elapsed_s: np.ndarray | float
    ) -> np.ndarray | float: ...

    def score(
        self, kind: IndicatorType | str, base: np.ndarray | float, elapsed_s: np.ndarray | float
    ) -> np.ndarray | float:
        """Decayed score of indicators of one type (scalars, or arrays of bases and elapsed seconds)."""
        m = self.model_for(kind)
        return polynomial(base, elapsed_s, m.lifetime_days, m.speed)

    def scores(self, kinds: np.ndarray, base: np.ndarray, elapsed_s: np.ndarray) -> np.ndarray:
        """Decayed scores of indicators of mixed types: one vectorised pass per type present."""
        kinds = np.asarray(kinds)
        out = np.zeros(len(kinds), dtype=np.float64)
        base = np.broadcast_to(np.asarray(base, dtype=np.float64), out.shape)
        elapsed = np.broadcast_to(np.asarray(elapsed_s, dtype=np.float64), out.shape)
        for kind in np.unique(kinds):
            sel = kinds == kind
            out[sel] = self.score(str(kind), base[sel], elapsed[sel])
        return out
