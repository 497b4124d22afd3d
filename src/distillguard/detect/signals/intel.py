"""Threat-intel matches as evidence: traffic from addresses, ranges, ASNs or user agents that other
providers (or we) reported, accounts whose keyed identifier digests were reported, and prompt skeletons
that match a reported template sketch.

The columns come from `distillguard.intel.match` (the scan passes them in when it has an intel store);
without them this signal finds nothing. Two kinds of finding:
- `intel.indicator` (hard): a match with an indicator the store lets block on its own (confident,
  corroborated by enough providers, not on a warninglist). Strength = the indicator's decayed confidence
  times how much of the account's traffic it covers.
- `intel.<kind>` (soft): every match, weighted by confidence and coverage, so a warninglisted or
  uncorroborated indicator still adds to behavioural evidence but never flags an account by itself.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from distillguard.detect.signals.base import Columns, Finding, ramp, register

# Coverage (share of the account's exchanges, or of its sampled skeletons) at which a match counts fully.
FULL_COVERAGE = {"address": 0.1, "asn": 0.5, "user_agent": 0.5, "identity": 0.01, "skeleton": 0.2}
WORDS = {
    "address": "{value:.0%} of its exchanges came from addresses or ranges reported in threat intel",
    "asn": "{value:.0%} of its exchanges came from an ASN reported in threat intel",
    "user_agent": "{value:.0%} of its exchanges used a user agent reported in threat intel",
    "identity": "its account, organisation, payment or device fingerprint matches a reported digest "
    "({value:.0%} of exchanges)",
    "skeleton": "{value:.0%} of its sampled prompt skeletons match a reported campaign template",
}


@register
class IntelMatches:
    name: ClassVar[str] = "intel"
    row_columns: ClassVar[dict[str, str]] = {}
    account_columns: ClassVar[dict[str, str]] = {}
    extra_sql: ClassVar[str | None] = None

    def evaluate(self, cols: Columns) -> list[Finding]:
        if "intel_address_share" not in cols:
            return []
        out = []
        n = len(cols["intel_address_share"])
        best = np.zeros(n)
        best_ind = np.full(n, None, dtype=object)
        best_ex = np.full(n, None, dtype=object)
        best_share = np.zeros(n)
        for kind, full in FULL_COVERAGE.items():
            share = np.asarray(cols[f"intel_{kind}_share"], dtype=np.float64)
            cover = ramp(share, 0.0, full)
            conf = np.asarray(cols[f"intel_{kind}_conf"], dtype=np.float64) / 100.0
            block = np.asarray(cols[f"intel_{kind}_block"], dtype=np.float64) / 100.0
            ind = cols[f"intel_{kind}_indicator"]
            ex = _examples(cols[f"intel_{kind}_example"])
            out.append(
                Finding(
                    f"intel.{kind}",
                    share,
                    cover * conf,
                    full,
                    WORDS[kind],
                    examples=ex,
                    indicators=ind,
                )
            )
            hard = cover * block
            better = hard > best
            best = np.where(better, hard, best)
            best_share = np.where(better, share, best_share)
            best_ind = np.where(better, ind, best_ind)
            best_ex = np.where(better, cols[f"intel_{kind}_example"], best_ex)
        out.append(
            Finding(
                "intel.indicator",
                best_share,
                best,
                1.0,
                "matches an indicator that blocks on its own (confident, corroborated, not warninglisted) "
                "on {value:.0%} of its traffic",
                examples=_examples(best_ex),
                indicators=best_ind,
            )
        )
        return out


def _examples(col: np.ndarray) -> np.ndarray:
    return np.array([[e] if isinstance(e, str) else [] for e in col], dtype=object)
