"""`distillguard gateway ...`: serve, and manage organisations, accounts and keys.

Key secrets are printed once, by `create-key` and `rotate-key`, and stored only as hashes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from distillguard.gateway.config import GatewayConfig, GatewayConfigError, load_gateway_config
from distillguard.report.errors import fail

if TYPE_CHECKING:
    from distillguard.gateway.identity import IdentityStore

T = TypeVar("T")

gateway_app = typer.Typer(
    help="Enforcement gateway: OpenAI-compatible proxy with identity, tiers and audit.", no_args_is_help=True
)
console = Console()

_CONFIG = typer.Option(None, "--config", "-c", help="gateway.toml (a \\[gateway] table is also accepted).")
_DB = typer.Option(None, "--db", help="Identity database (default: the config's identity.db).")


def _cfg(path: Path | None) -> GatewayConfig:
    try:
        return load_gateway_config(path)
    except GatewayConfigError as e:
        fail(str(e))


def _store(config: Path | None, db: str | None) -> IdentityStore:
    from distillguard.gateway.identity import IdentityError, IdentityStore, open_identity_db

    cfg = _cfg(config)
    try:
        engine = open_identity_db(db or cfg.identity.db)
    except IdentityError as e:
        fail(str(e))
    return IdentityStore(engine, set(cfg.tiers), cfg.default_tier)


def parse_duration(s: str) -> timedelta:
    """`90`, `90s`, `15m`, `24h`, `7d` or combinations like `1h30m`."""
    if s.isdigit():
        return timedelta(seconds=int(s))
    parts = re.fullmatch(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", s)
    if not parts or not any(parts.groups()):
        raise typer.BadParameter(f"{s!r} is not a duration (e.g. 90s, 15m, 24h, 7d)")
    d, h, m, sec = (int(x or 0) for x in parts.groups())
    return timedelta(days=d, hours=h, minutes=m, seconds=sec)


@gateway_app.command()
def serve(
    config: Path | None = _CONFIG,
    host: str | None = typer.Option(None, "--host", help="Override server.host."),
    port: int | None = typer.Option(None, "--port", help="Override server.port."),
    workers: int = typer.Option(1, "--workers", help="Worker processes (each takes its own audit slot)."),
) -> None:
    """Serve the gateway until interrupted."""
    from distillguard.gateway.server import serve as run

    cfg = _cfg(config)
    if host is not None:
        cfg.server.host = host
    if port is not None:
        cfg.server.port = port
    if workers > 1 and (host is not None or port is not None):
        fail("--host/--port overrides are not passed to workers; set them in the config")
    run(cfg, workers=workers, config_path=config)


def _run_admin(fn: Callable[[], T]) -> T:
    from distillguard.gateway.identity import IdentityError

    try:
        return fn()
    except IdentityError as e:
        fail(str(e))


@gateway_app.command("create-org")
def create_org(
    name: str = typer.Argument(..., help="Display name."),
    tier: str | None = typer.Option(None, "--tier", help="KYC tier of the organisation's accounts."),
    org_id: str | None = typer.Option(None, "--id", help="Id (default: generated)."),
    country: str | None = typer.Option(None, "--country", help="ISO country of the organisation."),
    config: Path | None = _CONFIG,
    db: str | None = _DB,
) -> None:
    s = _store(config, db)
    console.print(_run_admin(lambda: s.create_org(name, tier, org_id, country)))


@gateway_app.command("create-account")
def create_account(
    name: str = typer.Argument(...),
    org: str | None = typer.Option(None, "--org", help="Organisation id."),
    tier: str | None = typer.Option(
        None, "--tier", help="Tier (default: the organisation's, else default_tier)."
    ),
    account_id: str | None = typer.Option(None, "--id", help="Id (default: generated)."),
    config: Path | None = _CONFIG,
    db: str | None = _DB,
) -> None:
    s = _store(config, db)
    console.print(_run_admin(lambda: s.create_account(name, org, tier, account_id)))


@gateway_app.command("create-key")
def create_key(
    account: str = typer.Argument(..., help="Account id."),
    name: str | None = typer.Option(None, "--name"),
    expires_in: str | None = typer.Option(None, "--expires-in", help="e.g. 90d (default: no end)."),
    json_out: bool = typer.Option(False, "--json", help="Print {key_id, secret} as JSON."),
    config: Path | None = _CONFIG,
    db: str | None = _DB,
) -> None:
    """Create a key; its secret is printed once and cannot be shown again."""
    s = _store(config, db)
    until = datetime.now(UTC) + parse_duration(expires_in) if expires_in else None
    info, secret = _run_admin(lambda: s.create_key(account, name, until))
    if json_out:
        typer.echo(orjson.dumps({"key_id": info.id, "secret": secret}).decode())
    else:
        console.print(f"key id: {info.id}\nsecret: {secret}\n[dim](shown once; store it now)[/]")


@gateway_app.command("rotate-key")
def rotate_key(
    key_id: str = typer.Argument(...),
    grace: str = typer.Option("24h", "--grace", help="How long the old key keeps working."),
    json_out: bool = typer.Option(False, "--json"),
    config: Path | None = _CONFIG,
    db: str | None = _DB,
) -> None:
    """Issue a replacement key; the old one keeps working for --grace, then expires."""
    s = _store(config, db)
    info, secret = _run_admin(lambda: s.rotate_key(key_id, parse_duration(grace)))
    if json_out:
        typer.echo(orjson.dumps({"key_id": info.id, "secret": secret, "replaces": key_id}).decode())
    else:
        console.print(f"new key id: {info.id}\nsecret: {secret}\n[dim]{key_id} expires in {grace}[/]")


@gateway_app.command("revoke-key")
def revoke_key(
    key_id: str = typer.Argument(...), config: Path | None = _CONFIG, db: str | None = _DB
) -> None:
    """Revoke a key now (every replica refuses it within 1 s)."""
    s = _store(config, db)
    _run_admin(lambda: s.revoke_key(key_id))
    console.print(f"revoked {key_id}")


@gateway_app.command("disable-account")
def disable_account(
    account_id: str = typer.Argument(...), config: Path | None = _CONFIG, db: str | None = _DB
) -> None:
    """Disable an account: its keys get 403 on every replica within 1 s (also POST /admin/v1/accounts/ID/disable)."""
    s = _store(config, db)
    _run_admin(lambda: s.disable_account(account_id))
    console.print(f"disabled {account_id}")


@gateway_app.command("set-tier")
def set_tier(
    kind: str = typer.Argument(..., help="account or org"),
    subject: str = typer.Argument(..., help="Its id."),
    tier: str = typer.Argument(..., help="Tier name, or 'inherit' to clear an account's own tier."),
    config: Path | None = _CONFIG,
    db: str | None = _DB,
) -> None:
    if kind not in ("account", "org"):
        fail("kind must be 'account' or 'org'")
    s = _store(config, db)
    _run_admin(lambda: s.set_tier(kind, subject, None if tier == "inherit" else tier))
    console.print(f"{kind} {subject}: tier {tier}")


@gateway_app.command("list")
def list_(
    what: str = typer.Argument("keys", help="orgs, accounts or keys"),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per line instead of a table."),
    config: Path | None = _CONFIG,
    db: str | None = _DB,
) -> None:
    """List organisations, accounts or keys (keys by id and prefix; secrets are never stored)."""
    s = _store(config, db)
    if what == "orgs":
        rows = s.list_orgs()
    elif what == "accounts":
        rows = s.list_accounts()
    elif what == "keys":
        rows = [
            {
                "id": k.id,
                "account": k.account_id,
                "prefix": k.prefix + "…",
                "created": k.created,
                "expires": k.expires_at,
                "revoked": k.revoked_at,
                "replaced_by": k.replaced_by,
            }
            for k in s.list_keys()
        ]
    else:
        fail("list what? orgs, accounts or keys")
    if json_out:
        for r in rows:
            typer.echo(orjson.dumps(r, default=str).decode())
        return
    t = Table()
    for col in rows[0] if rows else ["(none)"]:
        t.add_column(str(col))
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r.values()))
    console.print(t)


@gateway_app.command("verify-audit")
def verify_audit(path: Path = typer.Argument(..., help="Hash-chained audit log.")) -> None:
    """Check an audit log's hash chain (audit.hash_chain = true)."""
    from distillguard.gateway.audit import verify_chain

    ok, n, bad = verify_chain(path)
    if not ok:
        fail(f"{path}: chain broken at line {bad} ({n} lines read)")
    console.print(f"{path}: {n} lines, chain intact")


if __name__ == "__main__":  # python -m distillguard.gateway.cli (until the main CLI mounts it)
    gateway_app()
