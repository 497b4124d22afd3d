"""Review decisions as intel records: confirmed accounts are `seen`, dismissed ones `false_positive`.

Per intel's privacy rules only keyed digests of account ids leave (`Keyring.digest`), never the raw id
or the analyst's note (notes may quote customer data). A confirmed account becomes an `account`
indicator with a `seen` sighting. A dismissed account becomes no indicator (that would put a benign
customer on other members' lists), only `false_positive` sightings: of the indicator id a confirmation
of the same digest would get, and of every account indicator with that digest already in the store
(from a peer or a campaign publication), so a peer's bad indicator is contradicted where it lives.
Ids are derived from the digest, so exporting the same decisions twice replaces, not doubles.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from distillguard.intel.indicator import (
    ATLAS_EXTRACT_MODEL,
    TLP,
    Indicator,
    IndicatorType,
    Organisation,
    Provenance,
    Records,
    Sighting,
    SightingKind,
)
from distillguard.intel.privacy import Keyring
from distillguard.intel.publish import stable_id
from distillguard.ui.decisions import DecisionRecord


def review_indicator_id(digest: str) -> str:
    return stable_id("indicator", "review", IndicatorType.ACCOUNT.value, digest)


def decision_records(
    decisions: Iterable[DecisionRecord],
    campaigns: dict[str, list[str]],
    keyring: Keyring,
    org: Organisation,
    at: datetime,
    known: dict[str, list[str]] | None = None,
    valid_days: int = 90,
    tlp: TLP = TLP.AMBER,
) -> Records:
    """Records for the account decisions (a campaign's decision covers its members without their own).

    `known`: account digest -> ids of indicators with that digest already in the store.
    """
    per_account: dict[str, DecisionRecord] = {}
    decided = list(decisions)
    for d in decided:
        if d.kind == "campaign":
            for a in campaigns.get(d.subject, []):
                per_account.setdefault(a, d)
    for d in decided:
        if d.kind == "account":
            per_account[d.subject] = d
    recs = Records(organisations=[org])
    known = known or {}
    accounts = sorted(a for a, d in per_account.items() if d.decision in ("confirm", "dismiss"))
    for account, digest in zip(accounts, keyring.digests(IndicatorType.ACCOUNT, accounts), strict=True):
        d = per_account[account]
        ind_id = review_indicator_id(digest)
        kind = SightingKind.SEEN if d.decision == "confirm" else SightingKind.FALSE_POSITIVE
        if d.decision == "confirm":
            recs.indicators.append(
                Indicator(
                    id=ind_id,
                    type=IndicatorType.ACCOUNT,
                    value=digest,
                    key_epoch=keyring.current,
                    confidence=90,
                    first_seen=d.at,
                    last_seen=d.at,
                    valid_until=at + timedelta(days=valid_days),
                    tlp=tlp,
                    source_org=org.id,
                    techniques=[ATLAS_EXTRACT_MODEL],
                    name="account confirmed by analyst review",
                    provenance=[Provenance(org=org.id, received=at, via="review")],
                )
            )
        for target in dict.fromkeys([ind_id, *known.get(digest, [])]):
            recs.sightings.append(
                Sighting(
                    id=stable_id("sighting", target, org.id, kind.value),
                    indicator_id=target,
                    kind=kind,
                    first_seen=d.at,
                    last_seen=d.at,
                    reporter=org.id,
                    note="analyst review",
                )
            )
    return recs
