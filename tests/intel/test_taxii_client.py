"""Our TAXII client (`pull` / `push`) against our server and against medallion, the OASIS reference server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from distillguard.intel.taxii.client import TaxiiClient, TaxiiError, pull, push

from .test_taxii_server import Taxii, indicator, taxii  # noqa: F401  (the fixture)

MEDALLION_COLLECTION = "91a7b528-80eb-42ed-a74d-c6fbd5a26116"
MEDALLION_READONLY = "472c94ae-3113-4e3e-a4dd-a9f4ac7471d4"


def test_push_and_pull_against_our_server(taxii: Taxii) -> None:  # noqa: F811
    url = f"{taxii.base}api1/"
    objs = [indicator(i) for i in range(230)]
    statuses = push(url, taxii.a, objs, key=taxii.writer, batch=100)
    assert [s["success_count"] for s in statuses] == [100, 100, 30]

    got = list(pull(url, taxii.a, key=taxii.reader_a, limit=40))  # 6 pages, followed through `next`
    assert [o["id"] for o in got] == [o["id"] for o in objs]
    # by title or alias, through discovery, with HTTP Basic
    assert len(list(pull(f"{taxii.base}taxii2/", "A", user="b", password=taxii.reader_a))) == 230
    assert (
        len(list(pull(url, "a", key=taxii.reader_a, match={"type": "indicator", "id": [objs[0]["id"]]}))) == 1
    )

    with TaxiiClient(url, key=taxii.reader_a) as c:
        last = None
        for env in c.pages(taxii.a, limit=100):
            last = env
        assert last is not None and last["more"] is False
    # added_after: only the objects that came later
    h = httpx.get(
        f"{url}collections/{taxii.a}/objects/",
        params={"limit": 200},
        headers={"Accept": "application/taxii+json;version=2.1", "Authorization": f"Bearer {taxii.reader_a}"},
    )
    rest = list(pull(url, taxii.a, key=taxii.reader_a, added_after=h.headers["X-TAXII-Date-Added-Last"]))
    assert [o["id"] for o in rest] == [o["id"] for o in objs[200:]]


def test_errors_name_status_and_reason(taxii: Taxii) -> None:  # noqa: F811
    url = f"{taxii.base}api1/"
    with pytest.raises(TaxiiError) as e:
        list(pull(url, taxii.a, key="dgk_not-a-key"))
    assert e.value.status == 401 and e.value.title == "Unauthorized"
    with pytest.raises(TaxiiError) as e:
        push(url, taxii.a, [indicator()], key=taxii.reader_a)
    assert e.value.status == 403 and "may not write" in str(e.value)
    with pytest.raises(TaxiiError) as e:
        list(pull(url, str(uuid.uuid4()), key=taxii.writer))
    assert e.value.status == 404
    with pytest.raises(TaxiiError, match="no collection 'nope'"):
        list(pull(url, "nope", key=taxii.writer))
    # nothing listening: a clear error, not a traceback from the HTTP library
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/api1/"
    with pytest.raises(TaxiiError) as e:
        list(pull(dead, taxii.a, key=taxii.writer, timeout=2))
    assert e.value.status is None


# --- medallion --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def medallion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """medallion with its memory backend in a subprocess on loopback; yields its API root URL."""
    port = _free_port()
    d = tmp_path_factory.mktemp("medallion")
    root = f"http://127.0.0.1:{port}/trustgroup1/"
    coll = {
        "can_read": True,
        "media_types": ["application/stix+json;version=2.1"],
        "objects": [],
        "manifest": [],
    }
    data = {
        "/discovery": {"title": "medallion", "default": root, "api_roots": [root]},
        "trustgroup1": {
            "information": {
                "title": "trust group 1",
                "versions": ["application/taxii+json;version=2.1"],
                "max_content_length": 9_765_625,
            },
            "status": [],
            "collections": [
                {**coll, "id": MEDALLION_COLLECTION, "title": "indicators", "can_write": True},
                {**coll, "id": MEDALLION_READONLY, "title": "read only", "can_write": False},
            ],
        },
    }
    (d / "data.json").write_text(json.dumps(data))
    config = {
        "users": {"peer": "s3cret"},
        "taxii": {"max_page_size": 25},
        "backend": {
            "module": "medallion.backends.memory_backend",
            "module_class": "MemoryBackend",
            "filename": str(d / "data.json"),
        },
    }
    (d / "config.json").write_text(json.dumps(config))
    log = (d / "medallion.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "medallion.scripts.run", "--port", str(port), str(d / "config.json")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/taxii2/", timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"medallion did not start: {Path(log.name).read_text()}") from None
                time.sleep(0.1)
        yield root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_push_and_pull_against_medallion(medallion: str) -> None:
    objs = [indicator(i) for i in range(60)]
    statuses = push(medallion, "indicators", objs, user="peer", password="s3cret", batch=25)
    assert [s["success_count"] for s in statuses] == [25, 25, 10]
    assert all(s["status"] == "complete" for s in statuses)

    # medallion pages by 25 at most: 60 objects come back over 3 pages through `next`
    with TaxiiClient(medallion, user="peer", password="s3cret") as c:
        pages = list(c.pages("indicators", limit=25))
        got = [o for env in pages for o in env.get("objects", [])]
    assert len(pages) == 3
    assert sorted(o["id"] for o in got) == sorted(o["id"] for o in objs)

    # through discovery, with filters
    root = medallion.rsplit("/", 2)[0] + "/taxii2/"
    one = list(pull(root, MEDALLION_COLLECTION, user="peer", password="s3cret", match={"id": objs[7]["id"]}))
    assert [o["id"] for o in one] == [objs[7]["id"]]


def test_medallion_errors_are_clear(medallion: str) -> None:
    with pytest.raises(TaxiiError) as e:
        list(pull(medallion, MEDALLION_COLLECTION, user="peer", password="wrong"))
    assert e.value.status == 401
    with pytest.raises(TaxiiError) as e:
        push(medallion, MEDALLION_READONLY, [indicator()], user="peer", password="s3cret")
    assert e.value.status == 403 and e.value.description and "Forbidden" in str(e.value)
