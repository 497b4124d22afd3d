"""The indicator store, on an SQLite file and on PostgreSQL (`db_url`)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.exc import OperationalError

from distillguard.intel import store as store_mod
from distillguard.intel.indicator import (
    TLP,
    Campaign,
    Indicator,
    IndicatorType,
    Organisation,
    Provenance,
    Records,
    Sighting,
    SightingKind,
)
from distillguard.intel.privacy import Keyring
from distillguard.intel.store import STORE_TABLE_NAMES, STORE_TABLES, IntelStore, StoreError, StorePolicy

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Iterator[IntelStore]:
    with IntelStore.open(db_url) as s:
        yield s


def ip(value: str = "192.0.2.1", **kw: Any) -> Indicator:
    kw = {"source_org": "org-a", "confidence": 80, "last_seen": T0, "first_seen": T0, **kw}
    return Indicator(type=IndicatorType.IPV4, value=value, **kw)


def seen(
    ind: Indicator, reporter: str, at: datetime = T0, kind: SightingKind = SightingKind.SEEN
) -> Sighting:
    return Sighting(indicator_id=ind.id, reporter=reporter, kind=kind, first_seen=at, last_seen=at)


def snapshot(st: IntelStore) -> Records:
    return st.records()


# -- schema ---------------------------------------------------------------------------------------------
def test_migration_matches_the_tables(store: IntelStore) -> None:
    mine = MetaData()
    for t in STORE_TABLES:
        t.to_metadata(mine)
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                # only the store's tables: the TAXII branch owns the others
                "include_name": lambda name, kind, _parent: kind != "table" or name in STORE_TABLE_NAMES,
            },
        )
        diff = compare_metadata(ctx, mine)
    assert diff == []


# -- adding, upserting, reading -----------------------------------------------------------------------------
def test_round_trip_keeps_every_field(store: IntelStore) -> None:
    k = Keyring.generate(epoch=3)
    ind = Indicator(
        type=IndicatorType.ACCOUNT,
        value=k.digest("account", "alice"),
        key_epoch=3,
        confidence=70,
        first_seen=T0 - timedelta(days=2),
        last_seen=T0,
        valid_until=T0 + timedelta(days=90),
        tlp=TLP.AMBER_STRICT,
        source_org="identity--org-a",
        campaign_id="campaign--x",
        techniques=["AML.T0024.002", "AML.T0005.001"],
        name="scraper account",
        description="seen in campaign x",
        min_corroboration=2,
        created=T0 - timedelta(days=2),
        modified=T0 + timedelta(microseconds=123),
    )
    camp = Campaign(id="campaign--x", name="x", source_org="identity--org-a", modified=T0)
    org = Organisation(id="identity--org-a", name="Org A", sector="technology")
    res = store.add(Records(indicators=[ind], campaigns=[camp], organisations=[org]), via="stix:b.json")
    assert (res.added, res.updated, res.unchanged) == (3, 0, 0)
    got = store.get(ind.id)
    assert isinstance(got, Indicator)
    assert got.model_dump(exclude={"provenance"}) == ind.model_dump(exclude={"provenance"})
    assert got.modified.tzinfo is not None  # naive SQLite values come back as UTC
    assert [(p.org, p.via) for p in got.provenance] == [("identity--org-a", "stix:b.json")]
    assert store.get("campaign--x") == camp
    assert store.get("identity--org-a") == org
    assert store.get("indicator--missing") is None
    assert store.count() == 1 and store.count("ipv4") == 0


def test_upsert_by_modified(store: IntelStore) -> None:
    v1 = ip(confidence=40, modified=T0)
    store.add(Records(indicators=[v1]))
    older = v1.model_copy(update={"confidence": 10, "modified": T0 - timedelta(days=1)})
    same = v1.model_copy(update={"confidence": 20})
    res = store.add(Records(indicators=[older, same]))
    assert (res.added, res.updated, res.unchanged) == (0, 0, 2)
    assert store.get(v1.id).confidence == 40  # type: ignore[union-attr]
    newer = v1.model_copy(update={"confidence": 90, "modified": T0 + timedelta(seconds=1)})
    res = store.add(Records(indicators=[newer]))
    assert (res.added, res.updated, res.unchanged) == (0, 1, 0)
    assert store.get(v1.id).confidence == 90  # type: ignore[union-attr]
    assert store.count() == 1


def test_one_id_twice_in_a_batch_keeps_the_newest(store: IntelStore) -> None:
    a = ip(confidence=30, modified=T0)
    b = a.model_copy(update={"confidence": 60, "modified": T0 + timedelta(hours=1)})
    c = a.model_copy(update={"confidence": 10, "modified": T0 - timedelta(hours=1)})
    res = store.add(Records(indicators=[a, b, c]))
    assert (res.added, res.updated, res.unchanged) == (1, 1, 1)
    assert store.get(a.id).confidence == 60  # type: ignore[union-attr]


def test_campaigns_upsert_by_modified_and_organisations_by_content(store: IntelStore) -> None:
    camp = Campaign(name="op", source_org="a", modified=T0)
    org = Organisation(name="A")
    store.add(Records(campaigns=[camp], organisations=[org]))
    res = store.add(
        Records(
            campaigns=[camp.model_copy(update={"name": "renamed", "modified": T0 + timedelta(1)})],
            organisations=[org, org.model_copy(update={"sector": "cloud"})],
        )
    )
    assert (res.added, res.updated, res.unchanged) == (0, 2, 1)
    assert [c.name for c in store.campaigns()] == ["renamed"]
    assert [o.sector for o in store.organisations()] == ["cloud"]


def test_sightings_are_added_and_replaced_by_id(store: IntelStore) -> None:
    ind = ip()
    store.add(Records(indicators=[ind]))
    s = seen(ind, "org-b")
    assert store.add_sighting(s).added == 1
    assert store.add_sighting(s).unchanged == 1
    assert store.add_sighting(s.model_copy(update={"count": 7})).updated == 1
    assert [x.count for x in store.sightings(ind.id)] == [7]
    store.add_sighting(seen(ind, "org-c", kind=SightingKind.FALSE_POSITIVE))
    assert len(store.sightings(kind="false_positive")) == 1
    with pytest.raises(StoreError, match="no indicator 'indicator--nope'"):
        store.add_sighting(Sighting(indicator_id="indicator--nope", reporter="x"))


def test_sightings_of_unknown_indicators_are_kept_from_peers(store: IntelStore) -> None:
    # a peer's bundle may sight an indicator we do not hold yet: it counts once the indicator arrives
    ind = ip(min_corroboration=2)
    store.add(Records(sightings=[seen(ind, "org-b")]))
    store.add(Records(indicators=[ind]))
    assert store.corroboration(ind.id) == 2


# -- provenance -----------------------------------------------------------------------------------------------
def test_provenance_is_appended_per_hop(store: IntelStore) -> None:
    ind = ip(source_org="org-a")
    store.add(Records(indicators=[ind]))
    store.add(Records(indicators=[ind]))  # a retry: nothing new to trace
    store.add(Records(indicators=[ind]), via="taxii:https://b.example/c1", org="org-b")
    newer = ind.model_copy(update={"modified": ind.modified + timedelta(seconds=1)})
    store.add(Records(indicators=[newer]), via="stix:update.json", org="org-a")
    hops = store.provenance(ind.id)
    assert [(p.org, p.via) for p in hops] == [
        ("org-a", "local"),
        ("org-b", "taxii:https://b.example/c1"),
        ("org-a", "stix:update.json"),
    ]
    assert hops == sorted(hops, key=lambda p: p.received)
    assert store.asserted_by("org-b") == [ind.id]
    assert store.asserted_by("org-z") == []


def test_provenance_from_earlier_hops_is_kept(store: IntelStore, db_url: str, tmp_path: Any) -> None:
    first = Provenance(org="org-a", received=T0, via="local")
    ind = ip(provenance=[first])
    store.add(Records(indicators=[ind]), via="taxii:a", org="org-a")
    exported = store.records()
    # a second store gets what the first exported: the history travels with it
    with IntelStore.open(tmp_path / "second.db") as other:
        other.add(exported, via="stix:bundle.json", org="org-b")
        hops = other.provenance(ind.id)
    assert [(p.org, p.via) for p in hops] == [
        ("org-a", "local"),
        ("org-a", "taxii:a"),
        ("org-b", "stix:bundle.json"),
    ]


# -- atomicity ------------------------------------------------------------------------------------------------
def test_a_failing_record_leaves_the_store_unchanged(store: IntelStore) -> None:
    kept = ip(confidence=40)
    store.add(Records(indicators=[kept], sightings=[seen(kept, "org-b")]))
    before = snapshot(store)
    counts = store.counts()
    newer = kept.model_copy(update={"confidence": 99, "modified": kept.modified + timedelta(1)})
    # built without validation, as a buggy importer might: the database's CHECK rejects it
    bad = Indicator.model_construct(**{**ip("192.0.2.99").model_dump(), "confidence": 500})
    batch = Records(
        indicators=[ip("192.0.2.50"), newer],
        sightings=[seen(kept, "org-c")],
        campaigns=[Campaign(name="c", source_org="a")],
        organisations=[Organisation(name="O")],
    )
    batch.indicators.append(bad)
    with pytest.raises(StoreError, match=r"nothing was stored.*confidence"):
        store.add(batch)
    assert store.counts() == counts
    assert snapshot(store) == before
    assert store.get(kept.id).confidence == 40  # type: ignore[union-attr]


def test_a_failure_after_writes_rolls_back(store: IntelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = ip(confidence=40)
    store.add(Records(indicators=[kept]))
    before = snapshot(store)
    real = IntelStore._upsert_replace

    def failing(self: IntelStore, s: Any, row: Any, recs: Any, res: Any) -> None:
        real(self, s, row, recs, res)
        if row is store_mod.SightingRow:  # the last step: indicators and provenance are written by now
            raise OperationalError("insert", {}, Exception("connection lost"))

    monkeypatch.setattr(IntelStore, "_upsert_replace", failing)
    newer = kept.model_copy(update={"confidence": 99, "modified": kept.modified + timedelta(1)})
    batch = Records(indicators=[newer, ip("192.0.2.7")], sightings=[seen(kept, "org-b")])
    with pytest.raises(StoreError, match="nothing was stored: connection lost"):
        store.add(batch)
    assert snapshot(store) == before


# -- corroboration, decay, assessment --------------------------------------------------------------------------
def test_corroboration_counts_independent_organisations(store: IntelStore) -> None:
    ind = ip(source_org="org-a")
    store.add(Records(indicators=[ind]))
    assert store.corroboration(ind.id) == 1
    store.add_sighting(seen(ind, "org-a"))  # the source sighting its own indicator adds nothing
    store.add_sighting(seen(ind, "org-b"))
    store.add_sighting(seen(ind, "org-b", T0 + timedelta(1)))  # nor does a second report by org-b
    store.add_sighting(seen(ind, "org-c"))
    assert store.corroboration(ind.id) == 3
    store.add_sighting(seen(ind, "org-c", kind=SightingKind.FALSE_POSITIVE))  # org-c takes it back
    assert store.corroboration(ind.id) == 2
    with pytest.raises(StoreError, match="no indicator"):
        store.corroboration("indicator--missing")


def test_confidence_decays_from_the_last_sighting(store: IntelStore) -> None:
    ind = ip(confidence=100, last_seen=T0)  # ipv4 default: 30 days, speed 2
    store.add(Records(indicators=[ind]))
    assert store.effective_confidence(ind, T0) == pytest.approx(100)
    assert store.effective_confidence(ind, T0 + timedelta(days=15)) == pytest.approx(100 * (1 - 0.5**0.5))
    assert store.effective_confidence(ind, T0 + timedelta(days=30)) == 0
    # another organisation sees it 10 days later: the clock restarts from then
    store.add_sighting(seen(ind, "org-b", T0 + timedelta(days=10)))
    assert store.effective_confidence(ind, T0 + timedelta(days=25)) == pytest.approx(100 * (1 - 0.5**0.5))


def test_confidence_is_zero_after_valid_until_or_expiry(store: IntelStore) -> None:
    ind = ip(valid_until=T0 + timedelta(days=5))
    store.add(Records(indicators=[ind]))
    assert store.effective_confidence(ind, T0 + timedelta(days=4)) > 0
    assert store.effective_confidence(ind, T0 + timedelta(days=5)) == 0
    other = ip("192.0.2.2")
    store.add(Records(indicators=[other]))
    store.add_sighting(seen(other, "org-b", T0 + timedelta(days=2), SightingKind.EXPIRED))
    assert store.effective_confidence(other, T0 + timedelta(days=1)) > 0
    assert store.effective_confidence(other, T0 + timedelta(days=2)) == 0


def test_false_positive_rule(store: IntelStore) -> None:
    at = T0 + timedelta(hours=1)
    by_source = ip("192.0.2.1", source_org="org-a")
    by_others = ip("192.0.2.2", source_org="org-a")
    store.add(Records(indicators=[by_source, by_others]))
    base = store.effective_confidence(by_others, at)
    store.add_sighting(seen(by_source, "org-a", kind=SightingKind.FALSE_POSITIVE))
    assert store.effective_confidence(by_source, at) == 0  # the source withdrew it
    store.add_sighting(seen(by_others, "org-b", kind=SightingKind.FALSE_POSITIVE))
    assert store.effective_confidence(by_others, at) == pytest.approx(base)  # one rival cannot withdraw it
    store.add_sighting(seen(by_others, "org-c", kind=SightingKind.FALSE_POSITIVE))
    assert store.effective_confidence(by_others, at) == 0  # the quorum (2) can
    strict = IntelStore(store.engine, StorePolicy(false_positive_quorum=3))
    assert strict.effective_confidence(by_others, at) == pytest.approx(base)


def test_assessment_says_why(store: IntelStore) -> None:
    at = T0 + timedelta(hours=1)
    strong = ip("192.0.2.1", confidence=90)
    weak = ip("192.0.2.2", confidence=30)
    lonely = ip("192.0.2.3", confidence=90, min_corroboration=2)
    cloud = Indicator(type="asn", value="AS16509", source_org="org-a", confidence=100, last_seen=T0)
    store.add(Records(indicators=[strong, weak, lonely, cloud]))

    a = store.assess(strong, at)
    assert a.blocks and a.corroboration == 1 and a.warninglist is None
    assert a.reasons[-1] == "blocks on its own"
    a = store.assess(weak, at)
    assert not a.blocks
    assert any("(base 30, last seen 0 days ago) is below the blocking threshold 50" in r for r in a.reasons)
    a = store.assess(lonely, at)
    assert not a.blocks
    assert "asserted by only 1 independent organisation (org-a); 2 required" in a.reasons
    store.add_sighting(seen(lonely, "org-b"))
    a = store.assess(lonely, at)
    assert a.blocks and "asserted by 2 independent organisations (org-a, org-b); 2 required" in a.reasons
    a = store.assess(cloud, at)
    assert not a.blocks and a.warninglist == "Cloud provider networks (sample, by ASN)"
    assert any("warninglist" in r and "never blocks alone" in r for r in a.reasons)
    assert a.reasons[-1] == "does not block on its own: adds evidence only"
    # the threshold is policy
    lenient = IntelStore(store.engine, StorePolicy(block_threshold=20))
    assert lenient.assess(weak, at).blocks


def test_assessment_of_withdrawn_and_expired(store: IntelStore) -> None:
    ind = ip(valid_until=T0 + timedelta(days=1))
    store.add(Records(indicators=[ind]))
    a = store.assess(ind, T0 + timedelta(days=2))
    assert not a.blocks and a.confidence == 0
    assert a.reasons[0].startswith("expired: valid until")
    store.add_sighting(seen(ind, "org-a", kind=SightingKind.FALSE_POSITIVE))
    a = store.assess(ind, T0)
    assert not a.blocks
    assert "withdrawn: its source organisation org-a reported a false positive" in a.reasons


def test_writes_refresh_the_sightings_snapshot(store: IntelStore) -> None:
    ind = ip()
    store.add(Records(indicators=[ind]))
    (listed,) = store.indicators()
    assert store.effective_confidence(listed, T0) > 0
    store.add_sighting(seen(ind, "org-a", kind=SightingKind.FALSE_POSITIVE))
    assert store.effective_confidence(listed, T0) == 0


# -- queries ------------------------------------------------------------------------------------------------
def test_queries_and_active_values(store: IntelStore) -> None:
    fresh = ip("192.0.2.1", last_seen=T0, campaign_id="campaign--c")
    stale = ip("192.0.2.2", last_seen=T0 - timedelta(days=40))
    ended = ip("192.0.2.3", valid_until=T0 - timedelta(days=1))
    other_org = ip("192.0.2.4", source_org="org-b")
    asn = Indicator(type="asn", value="64500", source_org="org-a", last_seen=T0)
    store.add(Records(indicators=[fresh, stale, ended, other_org, asn]))

    assert len(store.indicators()) == 5
    assert {i.id for i in store.indicators(type="ipv4")} == {fresh.id, stale.id, ended.id, other_org.id}
    assert [i.id for i in store.indicators(campaign_id="campaign--c")] == [fresh.id]
    assert [i.id for i in store.indicators(source_org="org-b")] == [other_org.id]
    active = {i.id for i in store.indicators(active_at=T0)}
    assert active == {fresh.id, other_org.id, asn.id}
    assert len(store.indicators(limit=2)) == 2
    assert len(store.indicators(active_at=T0, limit=1)) == 1
    assert [i.id for i in store.lookup("ipv4", "192.0.2.1")] == [fresh.id]

    values = store.active_values("ipv4", T0 + timedelta(days=3))
    assert {v[1] for v in values} == {"192.0.2.1", "192.0.2.4"}
    conf = dict((v[0], v[3]) for v in values)
    assert conf[fresh.id] == pytest.approx(store.effective_confidence(fresh, T0 + timedelta(days=3)))
    listed = store.indicators(type="ipv4")
    np.testing.assert_allclose(
        store.effective_confidences(listed, T0), [store.effective_confidence(i, T0) for i in listed]
    )
    assert [a.blocks for a in store.assess_many(listed, T0)] == [store.assess(i, T0).blocks for i in listed]


def test_filtered_records_for_export(store: IntelStore) -> None:
    camp = Campaign(id="campaign--c", name="c", source_org="identity--a")
    orgs = [Organisation(id="identity--a", name="A"), Organisation(id="identity--z", name="Z")]
    mine = ip("192.0.2.1", campaign_id="campaign--c", source_org="identity--a")
    theirs = ip("192.0.2.2", source_org="identity--z")
    s = seen(mine, "identity--a")
    store.add(Records(indicators=[mine, theirs], sightings=[s], campaigns=[camp], organisations=orgs))
    recs = store.records(campaign_id="campaign--c")
    assert [i.id for i in recs.indicators] == [mine.id]
    assert [x.id for x in recs.sightings] == [s.id]
    assert [c.id for c in recs.campaigns] == ["campaign--c"]
    assert [o.id for o in recs.organisations] == ["identity--a"]
    assert len(store.records()) == 2 + 1 + 1 + 2


def test_long_sketch_values_are_indexed(store: IntelStore) -> None:
    # a 256-permutation MinHash is ~2.7 kB of base64: longer than a PostgreSQL B-tree entry may be
    sig = base64.b64encode(np.arange(256, dtype="<u8").tobytes()).decode()
    ind = Indicator(type="skeleton", value=sig, key_epoch=1, source_org="org-a")
    store.add(Records(indicators=[ind]))
    assert [i.id for i in store.lookup("skeleton", sig)] == [ind.id]


def test_delete_removes_history(store: IntelStore) -> None:
    ind = ip()
    store.add(Records(indicators=[ind], sightings=[seen(ind, "org-b")]))
    assert store.delete([ind.id]) == 1
    assert store.counts() == {k: 0 for k in store.counts()}


def test_bad_targets_are_named(tmp_path: Any) -> None:
    with pytest.raises(StoreError, match="cannot open intel database"):
        IntelStore.open(tmp_path / "no" / "such" / "dir" / "x.db")


def test_matcher_loads_from_the_store(store: IntelStore) -> None:
    from distillguard.intel.match import Matcher

    strong = ip("192.0.2.1", confidence=90, last_seen=T0)
    cloud = Indicator(type="asn", value="16509", source_org="org-a", confidence=90, last_seen=T0)
    store.add(Records(indicators=[strong, cloud, ip("192.0.2.9", valid_until=T0)]))
    m = Matcher.from_store(store, None, T0)
    assert len(m) == 2
    blocking = {i.value: bool(b) for i, b in zip(m.indicators, m.blocking, strict=True)}
    assert blocking == {"192.0.2.1": True, "16509": False}  # AS16509 is on a cloud warninglist
