"""TAXII server bars (issue 3): ingest rate through taxii2-client, and exactly-once paging of 100k objects.

    python benchmarks/taxii.py                       # SQLite file in a temporary directory, 100k objects
    python benchmarks/taxii.py --db postgresql+psycopg://postgres@127.0.0.1:5432/test   # an empty database
    python benchmarks/taxii.py --objects 20000       # a quicker look (the paging bar needs 100k)

The server runs in a subprocess (uvicorn, as `distillguard intel serve` runs it), so client and server
do not share one interpreter lock. Every object goes in through `taxii2client.v21.Collection.add_objects`
in envelopes of 100, and the rate over all of them is the ingest figure (bar: >= 2,000 objects/s).
Then `as_pages(get_objects, per_request=1000)` walks the collection while a second client keeps adding
objects; every one of the first objects must come back exactly once, and no object twice.
Prints a JSON summary; exits 1 when a bar fails.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

MIN_INGEST_RATE = 2_000
PAGING_OBJECTS = 100_000


def indicator(n: int) -> dict[str, Any]:
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--{uuid.uuid4()}",
        "created": "2025-01-01T00:00:00.000Z",
        "modified": "2025-01-01T00:00:00.000Z",
        "name": f"distillation egress {n}",
        "pattern": f"[ipv4-addr:value = '10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}']",
        "pattern_type": "stix",
        "valid_from": "2025-01-01T00:00:00Z",
        "object_marking_refs": ["marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb"],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(db: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    code = f"from distillguard.intel.taxii.server import serve; serve({db!r}, port={port}, title='bench')"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/taxii2/", timeout=1)
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"the server did not start:\n{log.read_text()}") from None
            time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    ap.add_argument("--objects", type=int, default=PAGING_OBJECTS)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--page", type=int, default=1000)
    args = ap.parse_args()

    from taxii2client.v21 import Collection, as_pages

    from distillguard.intel.db import open_db
    from distillguard.intel.taxii import create_api_key, create_api_root, create_collection

    tmp = tempfile.TemporaryDirectory(prefix="taxii-bench-")
    db = args.db or f"sqlite:///{Path(tmp.name) / 'intel.db'}"
    engine = open_db(db)
    root = f"bench{uuid.uuid4().hex[:8]}"  # a fresh api root, so a reused database does not skew counts
    create_api_root(engine, root, "benchmark")
    cid = create_collection(engine, root, "bench")
    key = create_api_key(engine, f"bench-{root}", {cid: "rw"})
    engine.dispose()

    port = free_port()
    proc = start_server(db, port, Path(tmp.name) / "server.log")
    url = f"http://127.0.0.1:{port}/{root}/collections/{cid}/"
    result: dict[str, Any] = {"db": "sqlite" if db.startswith("sqlite") else db.split(":", 1)[0]}
    ok = True
    try:
        objs = [indicator(i) for i in range(args.objects)]
        coll = Collection(url, user="bench", password=key)
        coll.refresh()
        t0 = time.perf_counter()
        for i in range(0, len(objs), args.batch):
            status = coll.add_objects({"objects": objs[i : i + args.batch]})
            if status.success_count != len(objs[i : i + args.batch]):
                raise SystemExit(f"envelope {i // args.batch}: {status.failures[:3]}")
        ingest_s = time.perf_counter() - t0
        rate = len(objs) / ingest_s
        result.update(
            objects=len(objs), batch=args.batch, ingest_s=round(ingest_s, 2), ingest_per_s=round(rate)
        )
        ok &= rate >= MIN_INGEST_RATE

        # page through while another client keeps adding: keyset paging must still be exact
        stop = threading.Event()
        late: list[str] = []

        def writer() -> None:
            w = Collection(url, user="bench", password=key)
            n = 0
            while not stop.is_set() and n < 50:
                batch = [indicator(10_000_000 + n * 10 + j) for j in range(10)]
                w.add_objects({"objects": batch})
                late.extend(o["id"] for o in batch)
                n += 1
                time.sleep(0.02)

        th = threading.Thread(target=writer)
        t0 = time.perf_counter()
        th.start()
        seen: list[str] = []
        pages = 0
        for env in as_pages(coll.get_objects, per_request=args.page):
            seen.extend(o["id"] for o in env.get("objects", ()))
            pages += 1
        page_s = time.perf_counter() - t0
        stop.set()
        th.join()
        counts: dict[str, int] = {}
        for oid in seen:
            counts[oid] = counts.get(oid, 0) + 1
        missing = sum(1 for o in objs if o["id"] not in counts)
        twice = sum(1 for c in counts.values() if c > 1)
        stray = len(set(counts) - {o["id"] for o in objs} - set(late))
        exact = missing == 0 and twice == 0 and stray == 0
        result.update(
            pages=pages,
            page_size=args.page,
            paged_objects=len(seen),
            paging_s=round(page_s, 2),
            paging_per_s=round(len(seen) / page_s),
            added_while_paging=len(late),
            missing=missing,
            duplicated=twice,
            unknown=stray,
            exactly_once=exact,
        )
        ok &= exact and args.objects >= PAGING_OBJECTS
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        tmp.cleanup()
    result["bars"] = {
        "ingest >= 2000 objects/s": result.get("ingest_per_s", 0) >= MIN_INGEST_RATE,
        "100k paged exactly once": bool(result.get("exactly_once")) and args.objects >= PAGING_OBJECTS,
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
