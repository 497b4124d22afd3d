"""Our TAXII 2.1 server, driven by the reference client (`taxii2-client`) over loopback HTTP."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import requests
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, select
from taxii2client.v21 import ApiRoot, Collection, Server, as_pages

from distillguard.intel.db import Base, open_db
from distillguard.intel.taxii import (
    create_api_key,
    create_api_root,
    create_collection,
    forward_objects,
    grant,
    revoke_api_key,
)
from distillguard.intel.taxii.server import create_app, run_in_thread
from distillguard.intel.taxii.store import TLP_MARKINGS, Filters, ingest, query_page, timestamp_to_us
from distillguard.intel.taxii.tables import TABLE_NAMES, ApiKey
from distillguard.intel.taxii.tables import Collection as CollectionRow

TAXII = "application/taxii+json;version=2.1"
RED = "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1"
GREEN = "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb"


def indicator(
    n: int = 0,
    *,
    oid: str | None = None,
    modified: str = "2024-01-01T00:00:00.000Z",
    marking: str | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": oid or f"indicator--{uuid.uuid4()}",
        "created": "2024-01-01T00:00:00.000Z",
        "modified": modified,
        "name": f"scraper egress {n}",
        "pattern": f"[ipv4-addr:value = '198.51.100.{n % 250}']",
        "pattern_type": "stix",
        "valid_from": "2024-01-01T00:00:00Z",
    }
    if marking:
        obj["object_marking_refs"] = [marking]
    return obj


@dataclass
class Taxii:
    base: str  # http://127.0.0.1:port/
    engine: Engine
    a: str  # collection ids
    b: str
    shared: str
    writer: str  # keys: rw on A and B
    reader_b: str  # r on B only
    reader_a: str  # r on A only
    nobody: str  # no grants (only the shared collection's defaults)

    def coll(self, cid: str, key: str) -> Collection:
        return Collection(f"{self.base}api1/collections/{cid}/", user="member", password=key)

    def objects_url(self, cid: str) -> str:
        return f"{self.base}api1/collections/{cid}/objects/"


@pytest.fixture
def taxii(db_url: str) -> Iterator[Taxii]:
    engine = open_db(db_url)
    create_api_root(engine, "api1", "Distillation indicators", "shared with the consortium", default=True)
    a = create_collection(engine, "api1", "A", "provider A's campaigns", alias="a")
    b = create_collection(engine, "api1", "B")
    shared = create_collection(engine, "api1", "shared", can_read=True)
    keys = {
        "writer": create_api_key(engine, "writer", {a: "rw", b: "rw"}),
        "reader_b": create_api_key(engine, "reader-b", {b: "r"}),
        "reader_a": create_api_key(engine, "reader-a", {a: "r"}),
        "nobody": create_api_key(engine, "nobody", {}),
    }
    with run_in_thread(create_app(engine, title="test feed")) as base:
        yield Taxii(base, engine, a, b, shared, **keys)
    engine.dispose()


def test_migration_matches_the_tables(db_url: str) -> None:
    engine = open_db(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)

    def table_of(d: Any) -> str:
        op = d[0] if isinstance(d, list) else d  # modify_* come grouped per column
        if op[0] in ("add_table", "remove_table"):
            return str(op[1].name)
        if op[0] in (
            "add_index",
            "remove_index",
            "add_constraint",
            "remove_constraint",
            "add_fk",
            "remove_fk",
        ):
            return str(op[1].table.name)
        return str(op[2])  # add_column, remove_column, modify_*: (kind, schema, table, ...)

    ours = [d for d in diff if table_of(d) in TABLE_NAMES]
    assert ours == []
    engine.dispose()


def test_keys_are_stored_hashed(taxii: Taxii) -> None:
    with taxii.engine.connect() as conn:
        hashes = set(conn.execute(select(ApiKey.key_hash)).scalars())
    assert taxii.writer not in hashes and all(len(h) == 64 for h in hashes)


def test_discovery_api_root_and_collections(taxii: Taxii) -> None:
    server = Server(f"{taxii.base}taxii2/", user="member", password=taxii.writer)
    assert server.title == "test feed"
    assert [r.url for r in server.api_roots] == [f"{taxii.base}api1/"]
    root = server.default
    assert root is not None and root.title == "Distillation indicators"
    assert root.versions == [TAXII] and root.max_content_length > 0
    colls = {c.title: c for c in root.collections}
    assert set(colls) == {"A", "B", "shared"}
    assert colls["A"].can_read and colls["A"].can_write and colls["A"].alias == "a"
    assert colls["shared"].can_read and not colls["shared"].can_write
    # a reader sees only what it has rights on, with its own rights
    mine = ApiRoot(f"{taxii.base}api1/", user="member", password=taxii.reader_b).collections
    assert {c.title: (c.can_read, c.can_write) for c in mine} == {"B": (True, False), "shared": (True, False)}


def test_add_get_filters_manifest_versions_status(taxii: Taxii) -> None:
    coll = taxii.coll(taxii.a, taxii.writer)
    base = [indicator(i) for i in range(120)]
    revised = [dict(o, modified="2024-02-01T00:00:00.000Z") for o in base[:10]]
    other = {
        "type": "ipv4-addr",
        "spec_version": "2.1",
        "id": f"ipv4-addr--{uuid.uuid4()}",
        "value": "203.0.113.9",
    }
    status = coll.add_objects({"objects": [*base[:100]]})
    assert (status.status, status.success_count, status.failure_count, status.total_count) == (
        "complete",
        100,
        0,
        100,
    )
    coll.add_objects({"objects": [*base[100:], *revised, other]})

    # default: the latest version of every object
    objs = coll.get_objects()["objects"]
    assert len(objs) == 121
    by_id = {o["id"]: o for o in objs}
    assert by_id[base[0]["id"]]["modified"] == "2024-02-01T00:00:00.000Z"
    assert by_id[base[50]["id"]] == base[50]  # served exactly as posted

    assert len(coll.get_objects(version="all")["objects"]) == 131
    assert {o["modified"] for o in coll.get_objects(version="first", id=base[0]["id"])["objects"]} == {
        "2024-01-01T00:00:00.000Z"
    }
    at = coll.get_objects(version="2024-01-01T00:00:00Z", id=[base[0]["id"], base[50]["id"]])["objects"]
    assert {o["id"] for o in at} == {base[0]["id"], base[50]["id"]} and len(at) == 2
    assert [o["id"] for o in coll.get_objects(type="ipv4-addr")["objects"]] == [other["id"]]
    assert coll.get_objects(spec_version="2.0") == {}
    assert len(coll.get_objects(spec_version="2.1")["objects"]) == 121

    # added_after: only what came after the first envelope
    first_page = httpx.get(
        taxii.objects_url(taxii.a),
        params={"limit": 100, "match[version]": "all"},
        headers={"Accept": TAXII},
        auth=("m", taxii.writer),
    )
    last = first_page.headers["X-TAXII-Date-Added-Last"]
    assert first_page.headers["X-TAXII-Date-Added-First"] < last
    later = coll.get_objects(added_after=last, version="all")["objects"]
    assert {o["id"] for o in later} == {o["id"] for o in [*base[100:], *revised, other]}
    assert len(later) == 31

    manifest = coll.get_manifest(type="indicator")["objects"]
    assert len(manifest) == 120
    entry = next(m for m in manifest if m["id"] == base[0]["id"])
    assert entry["version"] == "2024-02-01T00:00:00.000Z"
    assert entry["media_type"] == "application/stix+json;version=2.1"
    timestamp_to_us(entry["date_added"])

    versions = coll.object_versions(base[0]["id"])
    assert versions["versions"] == ["2024-01-01T00:00:00.000Z", "2024-02-01T00:00:00.000Z"]
    one = coll.get_object(base[0]["id"], version="all")["objects"]
    assert len(one) == 2

    root = ApiRoot(f"{taxii.base}api1/", user="member", password=taxii.writer)
    again = root.get_status(status.id)
    assert again.success_count == 100 and again.id == status.id
    with pytest.raises(requests.HTTPError) as e:  # another key cannot read someone else's status
        ApiRoot(f"{taxii.base}api1/", user="member", password=taxii.reader_a).get_status(status.id)
    assert e.value.response.status_code == 404

    coll.delete_object(base[0]["id"])
    with pytest.raises(requests.HTTPError) as e:
        coll.get_object(base[0]["id"])
    assert e.value.response.status_code == 404
    assert len(coll.get_objects()["objects"]) == 120


def test_partial_success_and_duplicates(taxii: Taxii) -> None:
    coll = taxii.coll(taxii.a, taxii.writer)
    good = [indicator(i) for i in range(5)]
    bad: list[Any] = [
        {"type": "indicator", "id": "indicator--not-a-uuid"},
        {"type": "malware", "id": f"indicator--{uuid.uuid4()}"},
        dict(indicator(9), modified="yesterday"),
        "not an object",
        dict(indicator(10), spec_version="3.0"),
    ]
    status = coll.add_objects({"objects": [*good, *bad]})
    assert (status.success_count, status.failure_count, status.total_count) == (5, 5, 10)
    assert all(f["message"] for f in status.failures)
    again = coll.add_objects({"objects": good})  # a retried batch: idempotent, nothing new stored
    assert again.success_count == 5
    assert len(coll.get_objects()["objects"]) == 5


def test_paging_returns_each_object_once(taxii: Taxii) -> None:
    coll = taxii.coll(taxii.a, taxii.writer)
    objs = [indicator(i) for i in range(250)]
    for i in range(0, 250, 100):
        coll.add_objects({"objects": objs[i : i + 100]})
    ids: list[str] = []
    pages = 0
    for env in as_pages(coll.get_objects, per_request=33):
        ids += [o["id"] for o in env.get("objects", [])]
        pages += 1
    assert pages == 8 and sorted(ids) == sorted(o["id"] for o in objs) and len(set(ids)) == 250
    # the order is date_added order, i.e. posting order
    assert ids == [o["id"] for o in objs]
    man = [m["id"] for env in as_pages(coll.get_manifest, per_request=100) for m in env["objects"]]
    assert man == ids

    # objects added while paging show up once, on a later page
    h = httpx.Client(auth=("m", taxii.writer), headers={"Accept": TAXII})
    page1 = h.get(taxii.objects_url(taxii.a), params={"limit": 200}).json()
    late = [indicator(1000 + i) for i in range(3)]
    coll.add_objects({"objects": late})
    page2 = h.get(taxii.objects_url(taxii.a), params={"limit": 200, "next": page1["next"]}).json()
    seen = [o["id"] for o in page1["objects"] + page2["objects"]]
    assert len(seen) == len(set(seen)) == 253 and page2["more"] is False

    # a `next` token is bound to its filters
    r = h.get(
        taxii.objects_url(taxii.a), params={"limit": 200, "next": page1["next"], "match[type]": "indicator"}
    )
    assert r.status_code == 400 and r.json()["http_status"] == "400"


def test_authentication_rights_and_media_types(taxii: Taxii) -> None:
    url = taxii.objects_url(taxii.a)
    envelope = orjson.dumps({"objects": [indicator()]})
    post_headers = {"Accept": TAXII, "Content-Type": TAXII}

    r = httpx.get(url, headers={"Accept": TAXII})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    err = r.json()
    assert err["http_status"] == "401" and err["title"] and r.headers["content-type"] == TAXII
    assert httpx.get(url, headers={"Accept": TAXII}, auth=("m", "dgk_wrong")).status_code == 401
    assert (
        httpx.get(url, headers={"Accept": TAXII, "Authorization": f"Bearer {taxii.writer}"}).status_code
        == 200
    )

    # rights per collection
    assert httpx.get(url, headers={"Accept": TAXII}, auth=("m", taxii.reader_b)).status_code == 403
    assert (
        httpx.post(url, content=envelope, headers=post_headers, auth=("m", taxii.reader_a)).status_code == 403
    )
    assert httpx.get(url, headers={"Accept": TAXII}, auth=("m", taxii.reader_a)).status_code == 200
    shared = taxii.objects_url(taxii.shared)
    assert httpx.get(shared, headers={"Accept": TAXII}, auth=("m", taxii.nobody)).status_code == 200
    assert (
        httpx.post(shared, content=envelope, headers=post_headers, auth=("m", taxii.nobody)).status_code
        == 403
    )
    missing = taxii.objects_url(str(uuid.uuid4()))
    assert httpx.get(missing, headers={"Accept": TAXII}, auth=("m", taxii.writer)).status_code == 404

    # media types
    assert httpx.get(url, headers={"Accept": "application/json"}, auth=("m", taxii.writer)).status_code == 406
    assert (
        httpx.get(
            url, headers={"Accept": "application/taxii+json;version=2.0"}, auth=("m", taxii.writer)
        ).status_code
        == 406
    )
    r = httpx.post(
        url,
        content=envelope,
        headers={"Accept": TAXII, "Content-Type": "application/json"},
        auth=("m", taxii.writer),
    )
    assert r.status_code == 415
    r = httpx.post(url, content=b"{not json", headers=post_headers, auth=("m", taxii.writer))
    assert r.status_code == 400
    r = httpx.post(url, content=b'{"bundle": []}', headers=post_headers, auth=("m", taxii.writer))
    assert r.status_code == 422
    create_api_root(taxii.engine, "tiny", "small envelopes only", max_content_length=2000)
    tiny = create_collection(taxii.engine, "tiny", "tiny")
    grant(taxii.engine, "writer", {tiny: "rw"})
    big = orjson.dumps({"objects": [indicator(i) for i in range(10)]})
    r = httpx.post(
        f"{taxii.base}tiny/collections/{tiny}/objects/",
        content=big,
        headers=post_headers,
        auth=("m", taxii.writer),
    )
    assert r.status_code == 413
    assert (
        httpx.get(url, params={"limit": "0"}, headers={"Accept": TAXII}, auth=("m", taxii.writer)).status_code
        == 400
    )
    assert (
        httpx.get(
            url, params={"added_after": "soon"}, headers={"Accept": TAXII}, auth=("m", taxii.writer)
        ).status_code
        == 400
    )

    revoke_api_key(taxii.engine, "writer")
    assert httpx.get(url, headers={"Accept": TAXII}, auth=("m", taxii.writer)).status_code == 401


def test_tlp_red_never_leaves_its_collection(taxii: Taxii) -> None:
    assert TLP_MARKINGS[RED] == "red"
    a = taxii.coll(taxii.a, taxii.writer)
    red, green = indicator(1, marking=RED), indicator(2, marking=GREEN)
    assert a.add_objects({"objects": [red, green]}).success_count == 2

    # served from A to those who may read A
    in_a = {o["id"] for o in taxii.coll(taxii.a, taxii.reader_a).get_objects()["objects"]}
    assert in_a == {red["id"], green["id"]}
    # invisible from B, and A refuses readers without rights on it
    b_reader = taxii.coll(taxii.b, taxii.reader_b)
    assert b_reader.get_objects() == {}
    with pytest.raises(requests.HTTPError) as e:
        b_reader.get_object(red["id"])
    assert e.value.response.status_code == 404
    r = httpx.get(taxii.objects_url(taxii.a), headers={"Accept": TAXII}, auth=("m", taxii.reader_b))
    assert r.status_code == 403 and red["id"] not in r.text

    # the server never copies it: forwarding A to B copies GREEN and refuses RED
    result = forward_objects(taxii.engine, taxii.a, taxii.b)
    assert result.copied == 1 and result.refused_red == [red["id"]]
    assert {o["id"] for o in b_reader.get_objects()["objects"]} == {green["id"]}
    # and it cannot be re-posted elsewhere by a member that read it from A
    status = taxii.coll(taxii.b, taxii.writer).add_objects({"objects": [red]})
    assert status.failure_count == 1 and "TLP:RED" in status.failures[0]["message"]
    assert red["id"] not in {o["id"] for o in b_reader.get_objects()["objects"]}


def test_version_filters_page_exactly_over_superseded_versions(taxii: Taxii) -> None:
    coll = taxii.coll(taxii.a, taxii.writer)
    ids = [f"indicator--{uuid.uuid4()}" for _ in range(30)]
    months = ["2024-01-01T00:00:00.000Z", "2024-02-01T00:00:00.000Z", "2024-03-01T00:00:00.000Z"]
    for m in months:  # 60 superseded rows come first in date_added order, then the 30 latest
        coll.add_objects({"objects": [indicator(i, oid=oid, modified=m) for i, oid in enumerate(ids)]})
    for version, want in (("last", months[2]), ("first", months[0])):
        got = [
            o for env in as_pages(coll.get_objects, per_request=7, version=version) for o in env["objects"]
        ]
        assert sorted(o["id"] for o in got) == sorted(ids)
        assert {o["modified"] for o in got} == {want}
    assert (
        len([o for env in as_pages(coll.get_objects, per_request=7, version="all") for o in env["objects"]])
        == 90
    )


def test_concurrent_writers_get_distinct_increasing_date_added(db_url: str) -> None:
    engine = open_db(db_url)
    create_api_root(engine, "api1", "t")
    cid = create_collection(engine, "api1", "c")
    with engine.connect() as conn:
        pk = conn.execute(select(CollectionRow.pk).where(CollectionRow.id == cid)).scalar_one()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(8):
                ingest(engine, pk, [indicator(i) for i in range(25)], api_root_pk=1, key_pk=None)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    page = query_page(engine, pk, Filters(), 10_000)
    added = [r.date_added_us for r in page.rows]
    assert len(added) == 800 and added == sorted(added) and len(set(added)) == 800
    engine.dispose()
