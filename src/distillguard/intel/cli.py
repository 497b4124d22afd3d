"""`distillguard intel ...`: the indicator store, STIX files, the TAXII server and peers, publishing.

Every command reads the `[intel]` section of the config (store URL, keyring, our organisation) and
takes options that override it. Errors are one clear line, never a traceback.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from distillguard.report.errors import fail

intel_app = typer.Typer(
    name="intel",
    help="Threat-intel exchange: indicator store, STIX 2.1, TAXII 2.1, publishing and matching.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

DB = typer.Option(
    None, "--db", help="Indicator store: SQLite path or PostgreSQL URL (default: \\[intel] db)."
)
CONFIG = typer.Option(None, "--config", help="TOML config (default ./distillguard.toml).")
KEYRING = typer.Option(None, "--keyring", help="Consortium keyring (default: \\[intel] keyring).")


def _cfg(config: Path | None) -> Any:
    from distillguard.config import ConfigError, load

    try:
        return load(config).intel
    except ConfigError as e:
        fail(str(e))


def open_store(db: str | None, cfg: Any) -> Any:
    from distillguard.intel.store import IntelStore, StoreError, StorePolicy

    try:
        return IntelStore.open(db or cfg.db, policy=StorePolicy(block_threshold=cfg.block_confidence))
    except StoreError as e:
        fail(str(e))


def load_keyring(path: Path | None, cfg: Any, required: bool = True) -> Any:
    from distillguard.intel.privacy import Keyring, KeyringError

    p = path or cfg.keyring
    if not Path(p).exists():
        if required:
            fail(
                f"no keyring at {p}: create one with `distillguard intel keygen --out {p}` (or get the consortium's)"
            )
        return None
    try:
        return Keyring.load(Path(p))
    except KeyringError as e:
        fail(str(e))


def our_org(name: str) -> Any:
    """Our organisation record; its id is derived from the name, so it is stable across runs."""
    from distillguard.intel.indicator import Organisation

    oid = f"identity--{uuid.uuid5(uuid.NAMESPACE_URL, 'distillguard:org:' + name)}"
    return Organisation(id=oid, name=name, created=datetime(2026, 1, 1, tzinfo=UTC))


@intel_app.command()
def keygen(
    out_path: Path = typer.Option(..., "--out", "-o", help="Keyring file to write (mode 0600)."),
    rotate: bool = typer.Option(False, "--rotate", help="Add a new epoch to an existing keyring."),
) -> None:
    """Create a consortium keyring, or rotate one (a new epoch becomes current; old ones still match)."""
    from distillguard.intel.privacy import Keyring, KeyringError

    try:
        if rotate:
            k = Keyring.load(out_path)
            e = k.rotate()
        else:
            if out_path.exists():
                fail(f"{out_path} exists; use --rotate to add an epoch")
            k = Keyring.generate()
            e = k.current
        k.save(out_path)
    except KeyringError as exc:
        fail(str(exc))
    console.print(f"wrote {out_path}: current epoch {e}, epochs held {sorted(k.keys)}")


@intel_app.command("list")
def list_(
    db: str | None = DB,
    config: Path | None = CONFIG,
    type_: str | None = typer.Option(None, "--type", help="Only this indicator type."),
    limit: int = typer.Option(50, "--limit", help="Rows shown."),
    json_out: bool = typer.Option(False, "--json", help="JSON lines on stdout instead of a table."),
) -> None:
    """Indicators in the store, with effective confidence and whether each may block on its own."""
    from distillguard.intel.indicator import IndicatorType

    cfg = _cfg(config)
    if type_ is not None and type_ not in {t.value for t in IndicatorType}:
        fail(f"--type {type_!r}: one of {', '.join(t.value for t in IndicatorType)}")
    now = datetime.now(UTC)
    with open_store(db, cfg) as st:
        inds = st.indicators(type=type_, limit=limit)
        assess = st.assess_many(inds, now)
        if json_out:
            for i, a in zip(inds, assess, strict=True):
                out.print_json(
                    orjson.dumps(
                        {**i.model_dump(mode="json"), "assessment": a.model_dump(mode="json")}
                    ).decode()
                )
            return
        t = Table(
            "id", "type", "value", "conf", "effective", "blocks", "why", title=f"{st.count():,} indicators"
        )
        for i, a in zip(inds, assess, strict=True):
            v = i.value if len(i.value) <= 40 else i.value[:37] + "..."
            t.add_row(
                i.id[:22],
                i.type.value,
                v,
                str(i.confidence),
                f"{a.confidence:.0f}",
                "yes" if a.blocks else "no",
                "; ".join(a.reasons)[:80],
            )
        out.print(t)


@intel_app.command("import")
def import_(
    bundle: Path = typer.Argument(..., help="STIX 2.1 bundle (JSON)."),
    db: str | None = DB,
    config: Path | None = CONFIG,
    org: str | None = typer.Option(
        None, "--org", help="Organisation asserting these (default: each object's creator)."
    ),
) -> None:
    """Import a STIX 2.1 bundle into the store, all or nothing."""
    from distillguard.intel.stix import StixError, load_bundle
    from distillguard.intel.store import StoreError

    cfg = _cfg(config)
    if not bundle.exists():
        fail(f"bundle {bundle} not found")
    try:
        got = load_bundle(bundle)
    except StixError as e:
        fail(f"{bundle}: {e}")
    with open_store(db, cfg) as st:
        try:
            res = st.add(got.records, via=f"stix:{bundle.name}", org=org)
        except StoreError as e:
            fail(str(e))
    skipped = f", {len(got.skipped)} skipped ({got.skipped[0].reason}...)" if got.skipped else ""
    console.print(f"{bundle}: {res.added} added, {res.updated} updated, {res.unchanged} unchanged{skipped}")


@intel_app.command()
def export(
    out_path: Path = typer.Option(..., "--out", "-o", help="Bundle to write."),
    db: str | None = DB,
    config: Path | None = CONFIG,
    type_: str | None = typer.Option(None, "--type", help="Only this indicator type."),
    active: bool = typer.Option(True, "--active/--all", help="Only indicators still in force."),
) -> None:
    """Export the store (or part of it) as a STIX 2.1 bundle."""
    from distillguard.intel.stix import dumps_bundle

    cfg = _cfg(config)
    with open_store(db, cfg) as st:
        recs = st.records(type=type_, active_at=datetime.now(UTC) if active else None)
    out_path.write_bytes(dumps_bundle(recs, our_org(cfg.org), indent=True))
    console.print(
        f"wrote {out_path}: {len(recs.indicators):,} indicators, {len(recs.sightings):,} sightings, {len(recs.campaigns)} campaigns"
    )


@intel_app.command()
def publish(
    scan_dir: Path = typer.Argument(..., help="Output directory of `distillguard scan`."),
    db: str | None = DB,
    config: Path | None = CONFIG,
    keyring: Path | None = KEYRING,
    campaign: list[str] | None = typer.Option(
        None, "--campaign", help="Publish these scan campaigns (default: all at or above min_level)."
    ),
    accounts: Path | None = typer.Option(
        None,
        "--accounts",
        help="File of analyst-confirmed account ids (one per line), published as one campaign.",
    ),
    collection: str | None = typer.Option(
        None,
        "--collection",
        help="Also add the STIX objects to this collection of our TAXII server (in --db).",
    ),
    bundle_out: Path | None = typer.Option(None, "--out", "-o", help="Also write the STIX bundle here."),
    network: bool = typer.Option(
        True,
        "--network/--digests-only",
        help="Share addresses, ASNs and user agents, or digests and sketches only.",
    ),
) -> None:
    """Turn detected campaigns into shareable indicators (digests, sketches, infrastructure; never raw
    prompts or customer ids), store them, and optionally offer them in a TAXII collection."""
    from distillguard.intel.indicator import TLP
    from distillguard.intel.publish import PublishError
    from distillguard.intel.publish import publish as run_publish
    from distillguard.intel.stix import dumps_bundle, to_bundle
    from distillguard.intel.store import StoreError

    cfg = _cfg(config)
    kr = load_keyring(keyring, cfg)
    acc = None
    if accounts is not None:
        if not accounts.exists():
            fail(f"accounts file {accounts} not found")
        acc = [a.strip() for a in accounts.read_text().splitlines() if a.strip()]
    org = our_org(cfg.org)
    p = cfg.publish
    try:
        recs = run_publish(
            scan_dir, kr, org, min_level=p.min_level, tlp=TLP(p.tlp), ip_purity=p.ip_purity,
            asn_purity=p.asn_purity, ua_purity=p.ua_purity, fp_purity=p.fp_purity,
            template_purity=p.template_purity, valid_days=p.valid_days, accounts=acc,
            # confirmed accounts alone, unless campaigns are named too
            campaigns=campaign or ([] if acc is not None else None),
            network=network,
        )  # fmt: skip
    except (PublishError, ValueError) as e:
        fail(str(e))
    with open_store(db, cfg) as st:
        try:
            st.add(recs, via="publish", org=org.id)  # no local path: provenance travels with STIX
        except StoreError as e:
            fail(str(e))
        if collection:
            from distillguard.intel.taxii.store import TaxiiStoreError, add_local

            try:
                status = add_local(st.engine, collection, to_bundle(recs, org)["objects"])
            except TaxiiStoreError as e:
                fail(str(e))
            console.print(f"collection {collection}: {status['success_count']} objects added")
    if bundle_out:
        bundle_out.write_bytes(dumps_bundle(recs, org, indent=True))
    kinds: dict[str, int] = {}
    for i in recs.indicators:
        kinds[i.type.value] = kinds.get(i.type.value, 0) + 1
    console.print(
        f"published {len(recs.campaigns)} campaigns, {len(recs.indicators):,} indicators ("
        + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        + ")"
    )


@intel_app.command()
def match(
    scan_dir: Path = typer.Argument(
        ..., help="Output directory of `distillguard scan` (its exchanges.parquet)."
    ),
    db: str | None = DB,
    config: Path | None = CONFIG,
    keyring: Path | None = KEYRING,
    record: bool = typer.Option(True, "--record/--no-record", help="Record sightings of matched indicators."),
) -> None:
    """Match a scanned log against the store (exact and LSH), print what matched and record sightings.
    To fold matches into the scores, run `distillguard scan --intel` instead."""
    from distillguard.intel.match import Matcher, MatchError
    from distillguard.store.engine import make_engine

    cfg = _cfg(config)
    pq_path = scan_dir / "exchanges.parquet"
    if not pq_path.exists():
        fail(f"{scan_dir} has no exchanges.parquet: run `distillguard scan` first")
    now = datetime.now(UTC)
    with open_store(db, cfg) as st:
        try:
            m = Matcher.from_store(
                st, load_keyring(keyring, cfg, required=False), now, skeleton_threshold=cfg.skeleton_threshold
            )
        except MatchError as e:
            fail(str(e))
        engine = make_engine("duckdb")
        try:
            engine.register_parquet("exchanges", pq_path)
            res = m.match(engine)
        finally:
            engine.close()
        if record:
            n = record_sightings(st, res.sightings, our_org(cfg.org).id)
            console.print(f"recorded {n} sightings")
    t = Table(
        "indicator",
        "exchanges",
        "accounts",
        "first",
        "last",
        title=f"{res.sightings.num_rows} of {len(m):,} indicators matched",
    )
    for r in res.sightings.to_pylist()[:50]:
        t.add_row(
            r["indicator_id"],
            f"{r['n']:,}",
            str(r["accounts"]),
            str(r["first_seen"] or ""),
            str(r["last_seen"] or ""),
        )
    out.print(t)


def record_sightings(st: Any, sightings: Any, reporter: str) -> int:
    """Store one `seen` sighting per matched indicator (id derived from indicator and reporter and
    period, so recording the same scan twice replaces, not doubles)."""
    from distillguard.intel.indicator import Organisation, Records, Sighting

    now = datetime.now(UTC)
    rows = []
    for r in sightings.to_pylist():
        first = r["first_seen"] or now
        last = r["last_seen"] or now
        name = "|".join((r["indicator_id"], reporter, str(first), str(last)))
        sid = f"sighting--{uuid.uuid5(uuid.NAMESPACE_URL, name)}"
        rows.append(
            Sighting(
                id=sid,
                indicator_id=r["indicator_id"],
                count=max(int(r["n"]), 1),
                first_seen=first,
                last_seen=last,
                reporter=reporter,
            )
        )
    if rows:
        org = [o for o in st.organisations() if o.id == reporter]
        st.add(Records(sightings=rows, organisations=org or [Organisation(id=reporter, name=reporter)]))
    return len(rows)


@intel_app.command()
def serve(
    db: str | None = DB,
    config: Path | None = CONFIG,
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(9600, "--port"),
) -> None:
    """Run the TAXII 2.1 server over the intel database."""
    from distillguard.intel.taxii.server import serve as run

    cfg = _cfg(config)
    console.print(f"TAXII 2.1 server for {db or cfg.db} on http://{host}:{port}/taxii2/")
    run(db or cfg.db, host, port, title=f"distillguard TAXII 2.1 ({cfg.org})")


@intel_app.command()
def collection(
    title: str = typer.Argument(..., help="Title of the new collection."),
    db: str | None = DB,
    config: Path | None = CONFIG,
    api_root: str = typer.Option("intel", "--api-root", help="API root (created if missing)."),
    description: str | None = typer.Option(None, "--description"),
) -> None:
    """Create a TAXII collection (and its API root if needed); prints the collection id."""
    from distillguard.intel.db import open_db
    from distillguard.intel.taxii.store import (
        TaxiiStoreError,
        create_api_root,
        create_collection,
        root_exists,
    )

    cfg = _cfg(config)
    engine = open_db(db or cfg.db)
    try:
        if not root_exists(engine, api_root):
            create_api_root(engine, api_root, f"{cfg.org} intel", default=True)
        cid = create_collection(engine, api_root, title, description)
    except TaxiiStoreError as e:
        fail(str(e))
    finally:
        engine.dispose()
    out.print(cid)


@intel_app.command()
def key(
    name: str = typer.Argument(..., help="Who the key is for (e.g. a member organisation)."),
    db: str | None = DB,
    config: Path | None = CONFIG,
    read: list[str] | None = typer.Option(None, "--read", help="Collection ids it may read."),
    write: list[str] | None = typer.Option(None, "--write", help="Collection ids it may write."),
) -> None:
    """Create an API key for the TAXII server; prints the token once (only its hash is stored)."""
    from distillguard.intel.db import open_db
    from distillguard.intel.taxii.store import TaxiiStoreError, create_api_key

    cfg = _cfg(config)
    rights: dict[str, Any] = {}
    for c in read or []:
        rights[c] = "r"
    for c in write or []:
        rights[c] = "rw" if rights.get(c) == "r" else "w"
    engine = open_db(db or cfg.db)
    try:
        token = create_api_key(engine, name, rights)
    except TaxiiStoreError as e:
        fail(str(e))
    finally:
        engine.dispose()
    out.print(token)


@intel_app.command()
def push(
    url: str = typer.Argument(..., help="TAXII server (API root or /taxii2/ discovery URL)."),
    collection_id: str = typer.Argument(..., help="Collection id, title or alias."),
    key_: str = typer.Option(
        ..., "--key", envvar="DISTILLGUARD_TAXII_KEY", help="API key (or env DISTILLGUARD_TAXII_KEY)."
    ),
    db: str | None = DB,
    config: Path | None = CONFIG,
    all_: bool = typer.Option(False, "--all", help="Push everything, not only what we created."),
) -> None:
    """Push our indicators (as STIX objects) to a TAXII collection. TLP:RED never leaves."""
    from distillguard.intel.indicator import TLP
    from distillguard.intel.stix import to_bundle
    from distillguard.intel.taxii.client import TaxiiError
    from distillguard.intel.taxii.client import push as run_push

    cfg = _cfg(config)
    org = our_org(cfg.org)
    with open_store(db, cfg) as st:
        recs = st.records(source_org=None if all_ else org.id)
    recs.indicators = [i for i in recs.indicators if i.tlp is not TLP.RED]
    recs.campaigns = [c for c in recs.campaigns if c.tlp is not TLP.RED]
    objs = to_bundle(recs, org)["objects"]
    try:
        statuses = run_push(url, collection_id, objs, key=key_)
    except TaxiiError as e:
        fail(str(e))
    ok = sum(s.get("success_count", 0) for s in statuses)
    bad = sum(s.get("failure_count", 0) for s in statuses)
    console.print(f"pushed {len(objs):,} objects: {ok:,} accepted, {bad:,} refused")
    if bad:
        raise typer.Exit(1)


@intel_app.command()
def pull(
    url: str = typer.Argument(..., help="TAXII server (API root or /taxii2/ discovery URL)."),
    collection_id: str = typer.Argument(..., help="Collection id, title or alias."),
    key_: str = typer.Option(
        ..., "--key", envvar="DISTILLGUARD_TAXII_KEY", help="API key (or env DISTILLGUARD_TAXII_KEY)."
    ),
    db: str | None = DB,
    config: Path | None = CONFIG,
    added_after: str | None = typer.Option(None, "--added-after", help="Only objects added after this time."),
) -> None:
    """Pull a TAXII collection into the store (all or nothing), recording where it came from."""
    from distillguard.intel.stix import StixError, load_bundle
    from distillguard.intel.store import StoreError
    from distillguard.intel.taxii.client import TaxiiError
    from distillguard.intel.taxii.client import pull as run_pull

    cfg = _cfg(config)
    try:
        objs = list(run_pull(url, collection_id, key=key_, added_after=added_after))
    except TaxiiError as e:
        fail(str(e))
    bundle = {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objs}
    try:
        got = load_bundle(bundle)
    except StixError as e:
        fail(f"{url} {collection_id}: {e}")
    with open_store(db, cfg) as st:
        try:
            res = st.add(got.records, via=f"taxii:{url.rstrip('/')}/{collection_id}")
        except StoreError as e:
            fail(str(e))
    console.print(
        f"pulled {len(objs):,} objects: {res.added} added, {res.updated} updated, {res.unchanged} unchanged"
    )


@intel_app.command()
def psi(
    url: str = typer.Argument(..., help="A member's intel server (base URL or its /taxii2/ URL)."),
    scan_dir: Path = typer.Argument(
        ..., help="Output directory of `distillguard scan`: its addresses and ASNs are asked about."
    ),
    key_: str = typer.Option(..., "--key", envvar="DISTILLGUARD_TAXII_KEY", help="API key on that server."),
) -> None:
    """Private set intersection: which of our traffic's addresses and ASNs are in a member's indicators,
    learning nothing else of their list and revealing none of ours but the count."""
    import duckdb

    from distillguard.intel.psi import PsiError, item, query

    pq_path = scan_dir / "exchanges.parquet"
    if not pq_path.exists():
        fail(f"{scan_dir} has no exchanges.parquet: run `distillguard scan` first")
    con = duckdb.connect()
    try:
        ips = [
            r[0]
            for r in con.execute(
                f"SELECT DISTINCT client_ip FROM read_parquet('{pq_path.as_posix()}') WHERE client_ip IS NOT NULL"
            ).fetchall()
        ]
        asns = [
            r[0]
            for r in con.execute(
                f"SELECT DISTINCT asn FROM read_parquet('{pq_path.as_posix()}') WHERE asn IS NOT NULL"
            ).fetchall()
        ]
    finally:
        con.close()
    items = [item("ipv6" if ":" in ip else "ipv4", ip) for ip in ips] + [item("asn", str(a)) for a in asns]
    try:
        hits = query(url, items, key_)
    except PsiError as e:
        fail(str(e))
    console.print(f"asked about {len(ips):,} addresses and {len(asns):,} ASNs: {len(hits):,} in their list")
    for h in hits:
        out.print(h)
