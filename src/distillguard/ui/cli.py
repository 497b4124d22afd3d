"""`distillguard ui`: serve the review console, add analysts, export decisions as intel sightings."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from typer.core import TyperGroup

from distillguard.report.errors import fail

console = Console(stderr=True, soft_wrap=True)
DEFAULT_DB = "review.db"


class _ServeByDefault(TyperGroup):
    """`distillguard ui SCAN_DIR ...` is `distillguard ui serve SCAN_DIR ...`: the console is the point."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["serve", *args]
        return super().resolve_command(ctx, args)


ui_app = typer.Typer(
    cls=_ServeByDefault,
    help="Analyst review console: `distillguard ui SCAN_DIR` serves it (docs/ui.md).",
    no_args_is_help=True,
)


def _store(db: str) -> Any:
    from distillguard.ui.decisions import DecisionError, ReviewStore

    try:
        return ReviewStore.open(db)
    except DecisionError as e:
        fail(str(e))


@ui_app.command()
def serve(
    scan_dir: Path = typer.Argument(..., help="Output directory of `distillguard scan`."),
    db: str = typer.Option(DEFAULT_DB, "--db", help="Review database: SQLite path or PostgreSQL URL."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8765, "--port"),
    min_score: float | None = typer.Option(
        None, "--min-score", help="Lowest score queued (default: the `watch` level of the config)."
    ),
    config: Path | None = typer.Option(None, "--config", help="TOML config (default ./distillguard.toml)."),
    secure_cookie: bool = typer.Option(
        False, "--secure-cookie", help="Mark the session cookie Secure (behind TLS)."
    ),
) -> None:
    """Serve the review console over SCAN_DIR (log in with a user from `distillguard ui add-user`)."""
    import uvicorn

    from distillguard.config import ConfigError, load
    from distillguard.ui.app import create_app
    from distillguard.ui.scan_view import ScanView, ScanViewError

    try:
        cfg = load(config)
    except ConfigError as e:
        fail(str(e))
    try:
        view = ScanView(scan_dir, cfg.scoring.levels["watch"] if min_score is None else min_score)
    except ScanViewError as e:
        fail(str(e))
    app = create_app(view, _store(db), secure_cookie=secure_cookie)
    console.print(
        f"review console on http://{host}:{port}/ : {len(view.accounts)} accounts, "
        f"{len(view.campaigns)} campaigns queued; decisions in {db}"
    )
    # access logs name paths only (never form bodies), so prompts and passwords stay out of them
    uvicorn.run(app, host=host, port=port, log_level="warning")


@ui_app.command("add-user")
def add_user(
    name: str = typer.Argument(..., help="Analyst name."),
    db: str = typer.Option(DEFAULT_DB, "--db", help="Review database."),
) -> None:
    """Create an analyst (or reset one's password); prints a one-time password, stored only hashed."""
    from distillguard.ui.decisions import DecisionError

    store = _store(db)
    try:
        password = store.add_user(name)
    except DecisionError as e:
        fail(str(e))
    finally:
        store.close()
    console.print(f"user {name} created; password (shown once):")
    typer.echo(password)


@ui_app.command("export-sightings")
def export_sightings(
    db: str = typer.Option(DEFAULT_DB, "--db", help="Review database."),
    out: Path | None = typer.Option(None, "--out", "-o", help="STIX 2.1 bundle to write."),
    intel_db: str | None = typer.Option(
        None, "--intel-db", help="Add the sightings to this indicator store."
    ),
    keyring: Path | None = typer.Option(
        None, "--keyring", help="Consortium keyring (default: [intel] keyring)."
    ),
    config: Path | None = typer.Option(None, "--config", help="TOML config (default ./distillguard.toml)."),
) -> None:
    """Decisions as intel sightings: confirmed = seen, dismissed = false positive (digests only)."""
    from distillguard.config import ConfigError, load
    from distillguard.intel.cli import load_keyring, our_org
    from distillguard.intel.indicator import IndicatorType
    from distillguard.intel.stix import dumps_bundle
    from distillguard.ui.sightings import decision_records

    if out is None and intel_db is None:
        fail("say where the sightings go: --out bundle.json and/or --intel-db URL")
    try:
        cfg = load(config)
    except ConfigError as e:
        fail(str(e))
    kr = load_keyring(keyring, cfg.intel)
    store = _store(db)
    try:
        decided = list(store.decisions().values())
    finally:
        store.close()
    campaigns: dict[str, list[str]] = {}
    for scan in {d.scan for d in decided if d.kind == "campaign"}:
        p = Path(scan) / "campaigns.json"
        if p.exists():
            campaigns.update({c["campaign_id"]: c["accounts"] for c in orjson.loads(p.read_bytes())})
    org = our_org(cfg.intel.org)
    known: dict[str, list[str]] = {}
    intel_store = None
    if intel_db is not None:
        from distillguard.intel.cli import open_store

        intel_store = open_store(intel_db, cfg.intel)
        for ind in intel_store.indicators(type=IndicatorType.ACCOUNT):
            known.setdefault(ind.value, []).append(ind.id)
    recs = decision_records(decided, campaigns, kr, org, datetime.now(UTC), known=known)
    n_fp = sum(s.kind == "false_positive" for s in recs.sightings)
    if out is not None:
        out.write_bytes(dumps_bundle(recs, org, indent=True))
        console.print(f"wrote {out}")
    if intel_store is not None:
        from distillguard.intel.store import StoreError

        try:
            with intel_store:
                intel_store.add(recs, via="review", org=org.id)
        except StoreError as e:
            fail(str(e))
        console.print(f"added to {intel_db}")
    console.print(
        f"{len(recs.indicators)} confirmed accounts (seen), {n_fp} false-positive sightings, "
        f"{len(recs.sightings)} sightings in all"
    )
