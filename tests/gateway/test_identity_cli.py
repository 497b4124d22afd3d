"""Keys stored as hashes, the admin CLI, and the gateway config file."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from distillguard.gateway.cli import gateway_app, parse_duration
from distillguard.gateway.config import GatewayConfigError, load_gateway_config
from distillguard.gateway.identity import IdentityError, IdentityStore, hash_key, open_identity_db


def test_keys_are_stored_hashed(tmp_path: Path) -> None:
    store = IdentityStore(open_identity_db(tmp_path / "g.db"), {"verified"}, "verified")
    store.create_account("a", account_id="a1")
    info, secret = store.create_key("a1")
    assert secret.startswith("dg-") and len(secret) > 40
    with store.engine.connect() as c:
        rows = c.execute(text("select hash, prefix from gateway_keys")).all()
    assert rows == [(hash_key(secret), secret[:7])]
    rec = store.lookup(hash_key(secret))
    assert rec is not None and rec.account_id == "a1" and rec.tier == "verified"
    with pytest.raises(IdentityError, match="unknown tier"):
        store.create_account("b", tier="platinum")
    with pytest.raises(IdentityError, match="unknown account"):
        store.create_key("nobody")
    r0 = store.revision()
    store.revoke_key(info.id)
    assert store.revision() > r0


def test_admin_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[identity]\ndb = "{tmp_path / "g.db"}"\n')
    run = CliRunner().invoke
    assert (
        run(
            gateway_app, ["create-org", "Acme", "--id", "acme", "--tier", "verified", "-c", str(cfg)]
        ).exit_code
        == 0
    )
    r = run(gateway_app, ["create-account", "dev", "--org", "acme", "--id", "dev1", "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    r = run(gateway_app, ["create-key", "dev1", "--json", "-c", str(cfg)])
    key = orjson.loads(r.output)
    r = run(gateway_app, ["rotate-key", key["key_id"], "--grace", "1h", "--json", "-c", str(cfg)])
    new = orjson.loads(r.output)
    assert new["replaces"] == key["key_id"] and new["secret"] != key["secret"]
    assert run(gateway_app, ["revoke-key", new["key_id"], "-c", str(cfg)]).exit_code == 0
    r = run(gateway_app, ["list", "keys", "--json", "-c", str(cfg)])
    keys = {k["id"]: k for k in map(orjson.loads, r.output.splitlines())}
    assert keys[key["key_id"]]["replaced_by"] == new["key_id"] and keys[new["key_id"]]["revoked"]
    assert key["secret"] not in r.output and keys[key["key_id"]]["prefix"] == key["secret"][:7] + "…"
    r = run(gateway_app, ["set-tier", "account", "dev1", "platinum", "-c", str(cfg)])
    assert r.exit_code == 2 and "unknown tier" in r.output
    r = run(gateway_app, ["create-key", "ghost", "-c", str(cfg)])
    assert r.exit_code == 2 and "unknown account" in r.output


def test_config_file(tmp_path: Path) -> None:
    p = tmp_path / "g.toml"
    p.write_text(
        '[gateway.upstream]\nurl = "http://127.0.0.1:9/v1/"\n[gateway.tiers.t]\nmax_n = 2\n'
        '[gateway.tiers.t.quotas.account]\ntpm = 5\n[gateway]\ndefault_tier = "t"\n'
    )
    cfg = load_gateway_config(p)
    assert cfg.upstream.url == "http://127.0.0.1:9/v1" and cfg.tiers["t"].quotas["account"].tpm == 5
    p.write_text('[upstream]\nurl = "ftp://x"\n')
    with pytest.raises(GatewayConfigError, match=r"upstream\.url"):
        load_gateway_config(p)
    p.write_text("[identity]\nrevocation_poll_s = 2\n")
    with pytest.raises(GatewayConfigError, match="revocation_poll_s"):
        load_gateway_config(p)
    assert parse_duration("1h30m").total_seconds() == 5400 and parse_duration("90").total_seconds() == 90
