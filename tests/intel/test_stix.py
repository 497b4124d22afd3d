"""STIX 2.1 export and import: valid bundles, lossless round trips, other tools' bundles, malformed input."""

from __future__ import annotations

import base64
import copy
import io
import struct
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from stix2validator import ValidationOptions, validate_instance

from distillguard.intel import stix
from distillguard.intel.indicator import (
    ATLAS_EXTRACT_MODEL,
    ATLAS_TRAIN_PROXY,
    KEYED_TYPES,
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
from distillguard.intel.stix import StixError

T0 = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


def _digest(n: int) -> str:
    return f"{n:064x}"


def _sketch(seed: int) -> str:
    return base64.b64encode(
        struct.pack("<64Q", *((seed * 7919 + i) * 2654435761 % 2**64 for i in range(64)))
    ).decode()


VALUES = {
    IndicatorType.IPV4: "198.51.100.7",
    IndicatorType.IPV6: "2001:db8::7",
    IndicatorType.CIDR: "198.51.100.0/24",
    IndicatorType.ASN: "64500",
    IndicatorType.USER_AGENT: "Mozilla/5.0 (it's a \\ 'scraper') python-requests/2.31",
    IndicatorType.ACCOUNT: _digest(1),
    IndicatorType.ORGANISATION: _digest(2),
    IndicatorType.PAYMENT: _digest(3),
    IndicatorType.DEVICE: _digest(4),
    IndicatorType.CAMPAIGN: _digest(5),
    IndicatorType.SKELETON: _sketch(6),
}


def make_records() -> Records:
    """Every indicator type, every TLP, every sighting kind, campaigns and organisations."""
    a = Organisation(name="Provider A", sector="technology", created=T0)
    b = Organisation(name="Provider B", created=T0 + timedelta(seconds=1))
    camp = Campaign(
        name="op-mirror",
        description="200 accounts behind residential proxies",
        source_org=a.id,
        first_seen=T0,
        last_seen=T0 + timedelta(days=3),
        tlp=TLP.AMBER_STRICT,
        created=T0,
        modified=T0 + timedelta(hours=1),
    )
    camp2 = Campaign(
        name="op-named", source_org="Provider C", techniques=[], tlp=TLP.CLEAR, created=T0, modified=T0
    )
    tlps = list(TLP)
    inds = []
    for i, (kind, value) in enumerate(VALUES.items()):
        inds.append(
            Indicator(
                type=kind,
                value=value,
                key_epoch=3
                if kind in (IndicatorType.ACCOUNT, IndicatorType.SKELETON, IndicatorType.DEVICE)
                else (1 if kind in KEYED_TYPES else None),
                confidence=(i * 13) % 101,
                first_seen=T0 + timedelta(minutes=i),
                last_seen=T0 + timedelta(days=1, microseconds=i),
                valid_until=T0 + timedelta(days=90) if i % 2 else None,
                tlp=tlps[i % len(tlps)],
                source_org=a.id if i % 3 else "Provider C",
                campaign_id=camp.id if i % 2 else (None if i % 4 else "local-campaign-17"),
                techniques=[ATLAS_TRAIN_PROXY, ATLAS_EXTRACT_MODEL] if i % 2 else [ATLAS_EXTRACT_MODEL],
                name=f"indicator {i}" if i % 2 else None,
                description="seen scraping" if i % 3 == 0 else None,
                min_corroboration=1 + i % 3,
                provenance=[
                    Provenance(org=a.id, received=T0),
                    Provenance(org="B", received=T0, via="taxii:x"),
                ]
                if i % 2
                else [],
                created=T0,
                modified=T0 + timedelta(milliseconds=i * 10),
            )
        )
    # expired before it was first seen: STIX needs valid_until after valid_from, the record does not
    inds.append(
        Indicator(
            type=IndicatorType.IPV4,
            value="203.0.113.9",
            source_org=b.id,
            first_seen=T0,
            last_seen=T0,
            valid_until=T0 - timedelta(days=1),
            techniques=[],
            created=T0,
            modified=T0,
        )
    )
    inds.append(
        Indicator(
            type=IndicatorType.CIDR,
            value="2001:db8:1::/48",
            source_org=b.id,
            created=T0,
            modified=T0,
            first_seen=T0,
            last_seen=T0,
        )
    )
    sightings = [
        Sighting(
            indicator_id=inds[0].id, reporter=b.id, count=12, first_seen=T0, last_seen=T0 + timedelta(hours=2)
        ),
        Sighting(
            indicator_id=inds[1].id,
            kind=SightingKind.FALSE_POSITIVE,
            reporter="Provider D",
            note="university proxy",
            first_seen=T0,
            last_seen=T0,
        ),
        Sighting(
            indicator_id=inds[2].id, kind=SightingKind.EXPIRED, reporter=a.id, first_seen=T0, last_seen=T0
        ),
        # a sighting of an indicator that is not in this bundle
        Sighting(
            indicator_id="indicator--0b6e4b43-3f44-4b7e-9d0a-2a7f4d3c1b11",
            reporter=b.id,
            first_seen=T0,
            last_seen=T0 + timedelta(seconds=1),
        ),
    ]
    return Records(indicators=inds, sightings=sightings, campaigns=[camp, camp2], organisations=[a, b])


def _validator_report(bundle: dict[str, Any]) -> tuple[bool, list[str], list[str]]:
    results = validate_instance(bundle, ValidationOptions(version="2.1"))
    return results.is_valid, [str(e) for e in results.errors], [str(w) for w in results.warnings]


# -- export ---------------------------------------------------------------------------------------------


def test_exported_bundle_passes_the_validator() -> None:
    records = make_records()
    for producer in (None, Organisation(name="Exporter", created=T0)):
        bundle = stix.to_bundle(records, producer)
        ok, errors, warnings = _validator_report(bundle)
        assert ok and not errors, f"errors: {errors}\nwarnings: {warnings}"
        assert stix.validate(bundle) == []


def test_export_covers_every_type_tlp_and_kind() -> None:
    records = make_records()
    bundle = stix.to_bundle(records)
    objs = bundle["objects"]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for o in objs:
        by_type.setdefault(o["type"], []).append(o)
    assert {o["id"] for o in by_type["marking-definition"]} == set(stix.TLP2_MARKING_IDS.values())
    assert len(by_type["indicator"]) == len(records.indicators)
    assert len(by_type["sighting"]) == len(records.sightings)
    assert [o["id"] for o in by_type["extension-definition"]] == [stix.EXTENSION_ID]
    ext_def = by_type["extension-definition"][0]
    assert ext_def["schema"] == stix.EXTENSION_SCHEMA and ext_def["extension_types"] == ["property-extension"]
    ids = {o["id"] for o in objs}
    for o in objs:
        for ref in o.get("object_marking_refs", []):
            assert ref in ids, f"{o['id']} references a marking the bundle does not carry"
    kinds = {o["extensions"][stix.EXTENSION_ID]["sighting_kind"] for o in by_type["sighting"]}
    assert kinds == {k.value for k in SightingKind}
    atlas = {ref["external_id"] for o in by_type["attack-pattern"] for ref in o["external_references"]}
    assert atlas == {ATLAS_EXTRACT_MODEL, ATLAS_TRAIN_PROXY}
    rels = {
        (r["relationship_type"], r["source_ref"].split("--")[0], r["target_ref"].split("--")[0])
        for r in by_type["relationship"]
    }
    assert rels == {
        ("indicates", "indicator", "campaign"),
        ("indicates", "indicator", "attack-pattern"),
        ("uses", "campaign", "attack-pattern"),
    }
    identities = {o["id"]: o for o in by_type["identity"]}
    assert identities[records.organisations[0].id]["identity_class"] == "organization"


def test_tlp2_markings_are_the_official_objects() -> None:
    bundle = stix.to_bundle(make_records())
    markings = {o["id"]: o for o in bundle["objects"] if o["type"] == "marking-definition"}
    red = markings["marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1"]
    assert red == {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
        "created": "2022-10-01T00:00:00.000Z",
        "name": "TLP:RED",
        "extensions": {
            "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d": {
                "extension_type": "property-extension",
                "tlp_2_0": "red",
            }
        },
    }
    names = {o["name"] for o in markings.values()}
    assert names == {"TLP:CLEAR", "TLP:GREEN", "TLP:AMBER", "TLP:AMBER+STRICT", "TLP:RED"}


@pytest.mark.parametrize(
    ("kind", "value", "pattern", "pattern_type"),
    [
        (IndicatorType.IPV4, "198.51.100.7", "[ipv4-addr:value = '198.51.100.7']", "stix"),
        (IndicatorType.IPV6, "2001:db8::7", "[ipv6-addr:value = '2001:db8::7']", "stix"),
        (IndicatorType.CIDR, "198.51.100.0/24", "[ipv4-addr:value ISSUBSET '198.51.100.0/24']", "stix"),
        (IndicatorType.CIDR, "2001:db8::/32", "[ipv6-addr:value ISSUBSET '2001:db8::/32']", "stix"),
        (IndicatorType.ASN, "AS64500", "[autonomous-system:number = 64500]", "stix"),
        (
            IndicatorType.USER_AGENT,
            "curl/8.0 'x'",
            "[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = 'curl/8.0 \\'x\\'']",
            "stix",
        ),
        (IndicatorType.ACCOUNT, _digest(9), f"distillguard:account:4:{_digest(9)}", "distillguard"),
    ],
)
def test_patterns(kind: IndicatorType, value: str, pattern: str, pattern_type: str) -> None:
    ind = Indicator(type=kind, value=value, key_epoch=4 if kind in KEYED_TYPES else None, source_org="a")
    assert stix.pattern_of(ind) == (pattern, pattern_type)
    if pattern_type == "stix":
        assert stix.parse_stix_pattern(pattern) == (kind, ind.value)


def test_network_patterns_parse_back() -> None:
    for kind, value in VALUES.items():
        if kind in KEYED_TYPES:
            continue
        ind = Indicator(type=kind, value=value, source_org="a")
        pattern, pattern_type = stix.pattern_of(ind)
        assert pattern_type == "stix"
        assert stix.parse_stix_pattern(pattern) == (kind, ind.value), pattern


def test_duplicate_record_ids_are_refused() -> None:
    records = make_records()
    twin = records.indicators[1].model_copy(update={"confidence": 1})
    with pytest.raises(StixError, match="share this id"):
        stix.to_bundle(records.model_copy(update={"indicators": [*records.indicators, twin]}))


def test_export_is_deterministic() -> None:
    records = make_records()
    first = stix.dumps_bundle(records)
    assert stix.dumps_bundle(Records.model_validate(records.model_dump())) == first
    other = records.model_copy(deep=True)
    other.indicators[0].confidence = 99
    assert orjson.loads(stix.dumps_bundle(other))["id"] != orjson.loads(first)["id"]


def test_unexportable_record_names_it() -> None:
    bad = Sighting(indicator_id="not-an-id", reporter="a", first_seen=T0, last_seen=T0)
    with pytest.raises(StixError) as info:
        stix.to_bundle(Records(sightings=[bad]))
    assert bad.id in str(info.value) and "sighting_of_ref" in str(info.value)


# -- round trip -----------------------------------------------------------------------------------------


def test_round_trip_is_lossless() -> None:
    records = make_records()
    data = stix.dumps_bundle(records)
    back = stix.load_bundle(data)
    assert back.skipped == [] and back.ignored == {}
    assert back.records == records
    assert stix.dumps_bundle(back.records) == data


def test_round_trip_with_producer() -> None:
    records = make_records()
    producer = Organisation(name="Exporter", created=T0)
    data = stix.dumps_bundle(records, producer)
    back = stix.from_bundle(data)
    # the producer comes back as an organisation; everything else is unchanged
    assert back.organisations[0] == producer
    assert back.model_copy(update={"organisations": back.organisations[1:]}) == records
    assert stix.dumps_bundle(back, producer) == data
    named = next(o for o in orjson.loads(data)["objects"] if o["id"] == records.indicators[0].id)
    assert named["created_by_ref"] == producer.id  # its source_org is a name


def test_import_accepts_str_dict_path_and_file(tmp_path: Path) -> None:
    records = make_records()
    data = stix.dumps_bundle(records, indent=True)
    path = tmp_path / "bundle.json"
    path.write_bytes(data)
    for source in (data, data.decode(), orjson.loads(data), path, io.BytesIO(data)):
        assert stix.from_bundle(source) == records  # type: ignore[arg-type]


def test_duplicate_identical_objects_are_merged() -> None:
    records = make_records()
    bundle = stix.to_bundle(records)
    bundle["objects"].append(copy.deepcopy(bundle["objects"][-1]))
    assert stix.from_bundle(bundle) == records


# -- other tools' bundles -------------------------------------------------------------------------------

THIRD_PARTY = {
    "type": "bundle",
    "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d",
    "objects": [
        {
            "type": "identity",
            "spec_version": "2.1",
            "id": "identity--f431f809-377b-45e0-aa1c-6a4751cae5ff",
            "created": "2024-06-01T10:00:00.000Z",
            "modified": "2024-06-01T10:00:00.000Z",
            "name": "Other CTI Vendor",
            "identity_class": "organization",
        },
        {
            "type": "indicator",
            "spec_version": "2.1",
            "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
            "created_by_ref": "identity--f431f809-377b-45e0-aa1c-6a4751cae5ff",
            "created": "2024-06-01T10:00:00.000Z",
            "modified": "2024-06-02T10:00:00.000Z",
            "name": "Scraper exit node",
            "indicator_types": ["malicious-activity"],
            "pattern": "[ipv4-addr:value = '198.51.100.3']",
            "pattern_type": "stix",
            "valid_from": "2024-06-01T10:00:00Z",
            "object_marking_refs": ["marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9"],
        },
        {
            "type": "indicator",
            "spec_version": "2.1",
            "id": "indicator--1a8b6a64-3b3c-4d0a-8d0e-5b8f3d3b9c01",
            "created": "2024-06-01T10:00:00.000Z",
            "modified": "2024-06-01T10:00:00.000Z",
            "pattern": "[ipv6-addr:value = '2001:db8::/64']",
            "pattern_type": "stix",
            "valid_from": "2024-06-01T10:00:00Z",
            "confidence": 85,
            "object_marking_refs": ["marking-definition--f88d31f6-486f-44da-b317-01333bde0b82"],
        },
        {
            "type": "indicator",
            "spec_version": "2.1",
            "id": "indicator--2b3c4d5e-6f70-4182-9a3b-4c5d6e7f8091",
            "created": "2024-06-01T10:00:00.000Z",
            "modified": "2024-06-01T10:00:00.000Z",
            "pattern": "[autonomous-system:number = 64496]",
            "pattern_type": "stix",
            "valid_from": "2024-06-01T10:00:00Z",
            "valid_until": "2024-09-01T10:00:00Z",
            "object_marking_refs": ["marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da"],
        },
        {
            "type": "indicator",
            "spec_version": "2.1",
            "id": "indicator--3c4d5e6f-7081-4293-ab4c-5d6e7f809102",
            "created": "2024-06-01T10:00:00.000Z",
            "modified": "2024-06-01T10:00:00.000Z",
            "pattern": "[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = 'Go-http-client/1.1']",
            "pattern_type": "stix",
            "valid_from": "2024-06-01T10:00:00Z",
            "object_marking_refs": ["marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed"],
        },
        {
            "type": "indicator",
            "spec_version": "2.1",
            "id": "indicator--4d5e6f70-8192-43a4-bc5d-6e7f80910213",
            "created": "2024-06-01T10:00:00.000Z",
            "modified": "2024-06-01T10:00:00.000Z",
            "pattern": "[domain-name:value = 'proxy.example.net']",
            "pattern_type": "stix",
            "valid_from": "2024-06-01T10:00:00Z",
        },
        {
            "type": "indicator",
            "spec_version": "2.1",
            "id": "indicator--5e6f7081-9203-44b5-8d6e-7f8091021324",
            "created": "2024-06-01T10:00:00.000Z",
            "modified": "2024-06-01T10:00:00.000Z",
            "pattern": "alert tcp any any -> any 443",
            "pattern_type": "snort",
            "valid_from": "2024-06-01T10:00:00Z",
        },
        {
            "type": "malware",
            "spec_version": "2.1",
            "id": "malware--6f708192-0314-45c6-9e7f-809102132435",
            "created": "2024-06-01T10:00:00.000Z",
            "modified": "2024-06-01T10:00:00.000Z",
            "name": "scraper-kit",
            "is_family": True,
        },
        {
            "type": "campaign",
            "spec_version": "2.1",
            "id": "campaign--70819203-1425-46d7-8f80-910213243546",
            "created": "2024-06-01T10:00:00.000Z",
            "modified": "2024-06-01T10:00:00.000Z",
            "name": "Operation Parrot",
            "created_by_ref": "identity--f431f809-377b-45e0-aa1c-6a4751cae5ff",
        },
        {
            "type": "attack-pattern",
            "spec_version": "2.1",
            "id": "attack-pattern--81920314-2536-47e8-a091-021324354657",
            "created": "2024-06-01T10:00:00.000Z",
            "modified": "2024-06-01T10:00:00.000Z",
            "name": "Extract AI Model",
            "external_references": [{"source_name": "mitre-atlas", "external_id": "AML.T0024.002"}],
        },
        {
            "type": "relationship",
            "spec_version": "2.1",
            "id": "relationship--92031425-3647-48f9-b102-132435465768",
            "created": "2024-06-01T10:00:00.000Z",
            "modified": "2024-06-01T10:00:00.000Z",
            "relationship_type": "indicates",
            "source_ref": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
            "target_ref": "campaign--70819203-1425-46d7-8f80-910213243546",
        },
        {
            "type": "relationship",
            "spec_version": "2.1",
            "id": "relationship--a3142536-4758-4a0a-8213-243546576879",
            "created": "2024-06-01T10:00:00.000Z",
            "modified": "2024-06-01T10:00:00.000Z",
            "relationship_type": "indicates",
            "source_ref": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
            "target_ref": "attack-pattern--81920314-2536-47e8-a091-021324354657",
        },
        {
            "type": "sighting",
            "spec_version": "2.1",
            "id": "sighting--b4253647-5869-4b1b-9324-35465768798a",
            "created": "2024-06-03T10:00:00.000Z",
            "modified": "2024-06-03T10:00:00.000Z",
            "sighting_of_ref": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
            "count": 40,
            "where_sighted_refs": ["identity--f431f809-377b-45e0-aa1c-6a4751cae5ff"],
        },
        {
            "type": "sighting",
            "spec_version": "2.1",
            "id": "sighting--c5364758-697a-4c2c-a435-465768798a9b",
            "created": "2024-06-03T10:00:00.000Z",
            "modified": "2024-06-03T10:00:00.000Z",
            "sighting_of_ref": "indicator--4d5e6f70-8192-43a4-bc5d-6e7f80910213",
        },
    ],
}


def test_third_party_bundle_is_valid_stix() -> None:
    ok, errors, warnings = _validator_report(THIRD_PARTY)
    assert ok and not errors, f"errors: {errors}\nwarnings: {warnings}"


def test_import_third_party_bundle() -> None:
    result = stix.load_bundle(orjson.dumps(THIRD_PARTY))
    recs = result.records
    vendor = "identity--f431f809-377b-45e0-aa1c-6a4751cae5ff"
    by_id = {i.id: i for i in recs.indicators}
    assert [(i.type, i.value, i.tlp) for i in recs.indicators] == [
        (IndicatorType.IPV4, "198.51.100.3", TLP.CLEAR),  # TLP 1.0 white -> clear
        (IndicatorType.CIDR, "2001:db8::/64", TLP.AMBER),
        (IndicatorType.ASN, "64496", TLP.GREEN),
        (IndicatorType.USER_AGENT, "Go-http-client/1.1", TLP.RED),
    ]
    ip = by_id["indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"]
    assert ip.source_org == vendor and ip.name == "Scraper exit node"
    assert ip.campaign_id == "campaign--70819203-1425-46d7-8f80-910213243546"
    assert ip.techniques == [ATLAS_EXTRACT_MODEL]
    assert ip.first_seen == datetime(2024, 6, 1, 10, tzinfo=UTC)
    assert by_id["indicator--1a8b6a64-3b3c-4d0a-8d0e-5b8f3d3b9c01"].confidence == 85
    assert by_id["indicator--2b3c4d5e-6f70-4182-9a3b-4c5d6e7f8091"].valid_until == datetime(
        2024, 9, 1, 10, tzinfo=UTC
    )
    assert [o.name for o in recs.organisations] == ["Other CTI Vendor"]
    assert [(c.name, c.source_org) for c in recs.campaigns] == [("Operation Parrot", vendor)]
    assert [(s.indicator_id, s.count, s.reporter, s.kind) for s in recs.sightings] == [
        ("indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f", 40, vendor, SightingKind.SEEN)
    ]
    skipped = {s.id: s.reason for s in result.skipped}
    assert set(skipped) == {
        "indicator--4d5e6f70-8192-43a4-bc5d-6e7f80910213",  # domain-name: no indicator type
        "indicator--5e6f7081-9203-44b5-8d6e-7f8091021324",  # snort
        "sighting--c5364758-697a-4c2c-a435-465768798a9b",  # of the skipped domain indicator
    }
    assert "snort" in skipped["indicator--5e6f7081-9203-44b5-8d6e-7f8091021324"]
    assert result.ignored == {"malware": 1}
    # what came in goes out as a valid bundle of ours
    ok, errors, warnings = _validator_report(stix.to_bundle(recs))
    assert ok and not errors, f"errors: {errors}\nwarnings: {warnings}"


def test_tlp1_marking_objects_in_bundle() -> None:
    bundle = copy.deepcopy(THIRD_PARTY)
    custom = "marking-definition--d6f1b1c1-0d5b-4b39-9b8e-1f0b6f3b2a11"
    bundle["objects"].insert(
        0,
        {
            "type": "marking-definition",
            "spec_version": "2.1",
            "id": custom,
            "created": "2017-01-20T00:00:00.000Z",
            "definition_type": "tlp",
            "definition": {"tlp": "amber"},
        },
    )
    bundle["objects"][2]["object_marking_refs"] = [custom]
    assert stix.from_bundle(bundle).indicators[0].tlp is TLP.AMBER


# -- malformed bundles ----------------------------------------------------------------------------------

IND_ID = "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"
EXT = f"extensions.{stix.EXTENSION_ID}"


def _ours() -> dict[str, Any]:
    return stix.to_bundle(make_records())


def _find(bundle: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(o for o in bundle["objects"] if o["type"] == kind)


def _mutate(fn: Any) -> Any:
    def build() -> Any:
        bundle = copy.deepcopy(THIRD_PARTY)
        fn(bundle, bundle["objects"][1])  # objects[1] is IND_ID
        return bundle

    return build


def _nest(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


def _set(key: str, value: Any) -> Any:
    return _mutate(lambda b, o: o.__setitem__(key, value))


def _drop(key: str) -> Any:
    return _mutate(lambda b, o: o.pop(key))


def _our_indicator(fn: Any) -> Any:
    def build() -> Any:
        bundle = _ours()
        ind = _find(bundle, "indicator")
        fn(ind, ind["extensions"][stix.EXTENSION_ID])
        return bundle

    return build


MALFORMED = {
    "bad id": (_set("id", "indicator--not-a-uuid"), "objects[1]", "'id'"),
    "id of another type": (_set("id", "malware--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"), "objects[1]", "'id'"),
    "missing id": (_drop("id"), "objects[1]", "'id'"),
    "wrong spec_version": (_set("spec_version", "2.0"), IND_ID, "'spec_version'"),
    "missing spec_version": (_drop("spec_version"), IND_ID, "'spec_version'"),
    "missing pattern": (_drop("pattern"), IND_ID, "'pattern'"),
    "missing valid_from": (_drop("valid_from"), IND_ID, "'valid_from'"),
    "missing created": (_drop("created"), IND_ID, "'created'"),
    "bad timestamp": (_set("modified", "2024-06-02 10:00"), IND_ID, "'modified'"),
    "valid_until before valid_from": (_set("valid_until", "2020-01-01T00:00:00Z"), IND_ID, "'valid_until'"),
    "confidence out of range": (_set("confidence", 101), IND_ID, "'confidence'"),
    "bad ref": (_set("created_by_ref", "identity-x"), IND_ID, "'created_by_ref'"),
    "bad marking refs": (_set("object_marking_refs", "marking"), IND_ID, "'object_marking_refs'"),
    "missing campaign name": (
        _mutate(lambda b, o: b["objects"][8].pop("name")),
        "campaign--70819203-1425-46d7-8f80-910213243546",
        "'name'",
    ),
    "missing sighting_of_ref": (
        _mutate(lambda b, o: b["objects"][12].pop("sighting_of_ref")),
        "sighting--b4253647-5869-4b1b-9324-35465768798a",
        "'sighting_of_ref'",
    ),
    "duplicate id, other content": (
        _mutate(lambda b, o: b["objects"].append({**o, "name": "changed"})),
        IND_ID,
        "duplicate",
    ),
    "object not an object": (_mutate(lambda b, o: b["objects"].append(["x"])), "objects[14]", "JSON object"),
    "deep nesting": (_set("x_deep", _nest(70)), IND_ID, "'x_deep'"),
    "bad value in extension": (
        _our_indicator(lambda o, e: e.__setitem__("value", "999.1.1.1")),
        "indicator--",
        f"{EXT}.value",
    ),
    "unknown indicator type": (
        _our_indicator(lambda o, e: e.__setitem__("indicator_type", "domain")),
        "indicator--",
        f"{EXT}.indicator_type",
    ),
    "bad provenance": (
        _our_indicator(lambda o, e: e.__setitem__("provenance", [{"org": "a"}])),
        "indicator--",
        f"{EXT}.provenance[0].received",
    ),
    "keyed without epoch": (
        lambda: _drop_epoch(),
        "indicator--",
        f"{EXT}.key_epoch",
    ),
    "bundle spec_version 2.0": (lambda: {**THIRD_PARTY, "spec_version": "2.0"}, "bundle--", "'spec_version'"),
    "bad bundle id": (lambda: {**THIRD_PARTY, "id": "bundle--1"}, "bundle", "'id'"),
    "objects not a list": (lambda: {**THIRD_PARTY, "objects": {}}, "bundle--", "'objects'"),
    "not a bundle": (lambda: {**THIRD_PARTY, "type": "report"}, "not a bundle", "'type'"),
    "JSON array": (lambda: b"[1, 2]", "not a bundle", "list"),
    "not JSON": (lambda: b'{"type": "bundle", "objects": [', "not JSON", "line 1"),
    "too deep for orjson": (lambda: b"[" * 2000 + b"]" * 2000, "nested too deeply", "64"),
}


def _drop_epoch() -> dict[str, Any]:
    bundle = _ours()
    for o in bundle["objects"]:
        ext = o.get("extensions", {}).get(stix.EXTENSION_ID, {})
        if ext.get("indicator_type") == "account":
            ext.pop("key_epoch")
    return bundle


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_bundles_are_rejected(case: str) -> None:
    build, where, what = MALFORMED[case]
    bundle = build()
    with pytest.raises(StixError) as info:
        stix.from_bundle(bundle)
    message = str(info.value)
    assert where in message and what in message, message
    assert "Traceback" not in message


def test_rejection_is_all_or_nothing() -> None:
    # every record before the bad object is fine; none of them comes back
    bundle = _ours()
    bundle["objects"].append({**_find(bundle, "indicator"), "id": "indicator--bad"})
    with pytest.raises(StixError, match="objects"):
        stix.from_bundle(bundle)


def _huge(size: int) -> bytes:
    head = b'{"type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d", "objects": ['
    obj = orjson.dumps(THIRD_PARTY["objects"][1]) + b","
    body = obj * ((size - len(head)) // len(obj) + 1)
    return head + body[:-1] + b"]}"


def test_50mb_bundle_is_rejected_before_parsing(tmp_path: Path) -> None:
    data = _huge(50 * 1024 * 1024)
    path = tmp_path / "big.json"
    path.write_bytes(data)
    for source in (data, path, io.BytesIO(data)):
        start = time.perf_counter()
        with pytest.raises(StixError, match="over the limit"):
            stix.from_bundle(source)  # type: ignore[arg-type]
        assert time.perf_counter() - start < 1.0
    start = time.perf_counter()
    with pytest.raises(StixError, match="over the limit"):
        stix.from_bundle(data.decode())
    assert time.perf_counter() - start < 1.0
    # the limit is the caller's to raise
    with pytest.raises(StixError, match="over the limit"):
        stix.from_bundle(_huge(200_000), max_bytes=100_000)


def test_validate_reports_errors() -> None:
    bundle = copy.deepcopy(THIRD_PARTY)
    del bundle["objects"][1]["pattern"]
    errors = stix.validate(bundle)
    assert errors and any("pattern" in e for e in errors)
