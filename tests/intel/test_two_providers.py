"""Issue 3's exchange bar, end to end over TAXII on loopback.

Two providers, each with its own store and TAXII server. A's analysts confirmed a campaign (200
accounts, 30 addresses, 3 prompt templates); A publishes it into a collection on its server; B pulls it
with the key A gave B, matches it against its own traffic (the same operators under other account ids,
with paraphrased templates and other fillers) and flags them through address, ASN and template
matches; B reports its sightings back to a collection on A's server. Every byte that crossed between
them (both directions, both servers) is checked for raw prompts and raw account ids.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distillguard.detect.pipeline import scan
from distillguard.intel.cli import our_org, record_sightings
from distillguard.intel.indicator import IndicatorType, Records, SightingKind
from distillguard.intel.match import Matcher
from distillguard.intel.privacy import Keyring
from distillguard.intel.publish import publish
from distillguard.intel.stix import load_bundle, to_bundle
from distillguard.intel.store import IntelStore
from distillguard.intel.taxii import create_api_key, create_api_root, create_collection
from distillguard.intel.taxii.client import pull, push
from distillguard.intel.taxii.server import create_app, run_in_thread
from distillguard.intel.taxii.store import add_local

from .operation import OP_IPS, TEMPLATES_A, TEMPLATES_B, provider_log

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class Recorder:
    """Pure ASGI wrapper keeping every request and response body that passes through a server."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app
        self.wire: list[bytes] = []

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.wire.append(scope.get("path", "").encode() + b"?" + scope.get("query_string", b""))
        self.wire.extend(v for _, v in scope.get("headers", []))

        async def rx() -> Message:
            m = await receive()
            self.wire.append(m.get("body", b""))
            return m

        async def tx(m: Message) -> None:
            self.wire.append(m.get("body", b""))
            self.wire.extend(v for _, v in m.get("headers", []))
            await send(m)

        await self.app(scope, rx, tx)


def _server(db: str) -> tuple[IntelStore, str, str]:
    """A provider's store with an API root and a 'campaigns' and a 'sightings' collection."""
    store = IntelStore.open(db)
    create_api_root(store.engine, "intel", "intel", default=True)
    return (
        store,
        create_collection(store.engine, "intel", "campaigns"),
        create_collection(store.engine, "intel", "sightings"),
    )


def test_campaign_crosses_providers_without_raw_data(corpora, tmp_path: Path) -> None:
    keyring = Keyring({1: bytes(range(32))})  # the consortium key both hold
    org_a, org_b = our_org("Provider A"), our_org("Provider B")
    store_a, camp_a, sight_a = _server(f"sqlite:///{tmp_path / 'a.db'}")
    store_b, _, _ = _server(f"sqlite:///{tmp_path / 'b.db'}")
    key_for_b = create_api_key(store_a.engine, "provider-b", {camp_a: "r", sight_a: "w"})
    key_a_self = create_api_key(store_a.engine, "provider-a-analyst", {sight_a: "r"})
    rec_a = Recorder(create_app(store_a.engine))
    rec_b = Recorder(create_app(store_b.engine))

    # A: scan, publish the confirmed operation, offer it in its collection
    log_a, ops_a, benign_a = provider_log("a", corpora, tmp_path, per_account=40)
    scan([log_a], tmp_path / "scan-a")
    recs = publish(tmp_path / "scan-a", keyring, org_a, campaigns=[], accounts=ops_a)
    store_a.add(recs, via="publish", org=org_a.id)
    status = add_local(
        store_a.engine, camp_a, to_bundle(store_a.records(source_org=org_a.id), org_a)["objects"]
    )
    assert status["failure_count"] == 0

    log_b, ops_b, benign_b = provider_log("b", corpora, tmp_path)
    with run_in_thread(rec_a) as url_a, run_in_thread(rec_b) as url_b:
        # B pulls A's campaign into its store
        objs = list(pull(f"{url_a}intel/", "campaigns", key=key_for_b))
        got = load_bundle(
            {"type": "bundle", "id": "bundle--6d3c3d0e-9a5b-4c34-8a4e-0d1f2a3b4c5d", "objects": objs}
        )
        store_b.add(got.records, via=f"taxii:{url_a}intel/campaigns")
        assert store_b.count(IndicatorType.IPV4) == 30 and store_b.count(IndicatorType.SKELETON) >= 3

        # B matches its traffic (the operation's log is dated 2026-11-01: assess as of then)
        at = datetime(2026, 11, 2, tzinfo=UTC)
        matcher = Matcher.from_store(store_b, keyring, at, skeleton_threshold=0.5)
        res, _ = scan([log_b], tmp_path / "scan-b", matcher=matcher)
        ids = res.accounts.ids.tolist()
        flagged, via = 0, {"intel.address": 0, "intel.asn": 0, "intel.skeleton": 0}
        for a in ops_b:
            ev = {e.signal: e for e in res.evidence[ids.index(a)]}
            flagged += res.levels[ids.index(a)] in ("suspect", "block")
            for k in via:
                via[k] += k in ev and ev[k].indicator is not None
        assert flagged >= 0.95 * len(ops_b)
        assert via["intel.address"] == len(ops_b) and via["intel.asn"] == len(ops_b)
        assert via["intel.skeleton"] >= 0.75 * len(ops_b)
        assert all(res.levels[ids.index(a)] in ("ok", "watch") for a in benign_b)

        # B reports what it saw back to A (sightings only: indicator ids, counts, times)
        assert record_sightings(store_b, res.intel.sightings, org_b.id) > 0  # type: ignore[union-attr]
        back = store_b.records(source_org=org_a.id)
        mine = Records(sightings=[s for s in back.sightings if s.reporter == org_b.id], organisations=[org_b])
        statuses = push(f"{url_a}intel/", "sightings", to_bundle(mine, org_b)["objects"], key=key_for_b)
        assert sum(s["failure_count"] for s in statuses) == 0
        # ...which A imports: its indicators are now corroborated by B
        seen = list(pull(f"{url_a}intel/", "sightings", key=key_a_self))
        store_a.add(
            load_bundle(
                {"type": "bundle", "id": "bundle--0b7c1a52-3f1e-4a8e-9d2c-1e2f3a4b5c6d", "objects": seen}
            ).records,
            via="taxii:sightings",
        )
        ip = next(i for i in store_a.indicators(type=IndicatorType.IPV4))
        assert store_a.corroboration(ip.id) == 2
        assert any(s.kind is SightingKind.SEEN and s.reporter == org_b.id for s in store_a.sightings(ip.id))
        _ = url_b  # B's server is up (its own members would pull from it); nothing else crossed

    # Nothing that crossed carries a raw prompt or a raw customer identifier.
    wire = b"\n".join(rec_a.wire + rec_b.wire).lower()
    assert len(wire) > 100_000  # the campaign did cross
    for acc in ops_a + ops_b + benign_a + benign_b:
        assert acc.lower().encode() not in wire, acc
    for t in TEMPLATES_A + TEMPLATES_B:
        for i in range(0, len(t) - 30, 15):
            frag = t[i : i + 30].lower()
            if "{" not in frag:
                assert frag.encode() not in wire, frag
    for q in corpora["gsm8k"][:200] + corpora["arena"][:200]:
        frag = q.strip()[:40].lower()
        assert len(frag) < 20 or frag.encode() not in wire, frag
    assert all(ip.encode() in wire for ip in OP_IPS[:3])  # infrastructure does cross, by design
    store_a.close()
    store_b.close()
