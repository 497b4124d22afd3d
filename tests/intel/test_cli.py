"""`distillguard intel ...` and `scan --intel` through the CLI: outputs, stored state, clear errors."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.intel.store import IntelStore

from .operation import provider_log

runner = CliRunner()


def dg(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in r.output, r.output
    return r.exit_code, r.output


@pytest.fixture
def provider_a(corpora, tmp_path: Path) -> dict[str, Path]:
    log, ops, _ = provider_log("a", corpora, tmp_path, per_account=20)
    (tmp_path / "ops.txt").write_text("\n".join(ops))
    code, _ = dg("scan", log, "--out", tmp_path / "scan")
    assert code == 0
    code, out = dg("intel", "keygen", "--out", tmp_path / "k.keys")
    assert code == 0 and "epoch 1" in out
    return {"log": log, "scan": tmp_path / "scan", "keys": tmp_path / "k.keys", "ops": tmp_path / "ops.txt"}


def test_publish_export_import_round_trip(provider_a: dict[str, Path], tmp_path: Path) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    code, out = dg(
        "intel", "publish", provider_a["scan"], "--db", a, "--keyring", provider_a["keys"],
        "--accounts", provider_a["ops"], "--out", tmp_path / "pub.json",
    )  # fmt: skip
    assert code == 0, out
    assert "30 ipv4" in out and "200 account" in out
    code, out = dg("intel", "export", "--db", a, "--out", tmp_path / "all.json", "--all")
    assert code == 0, out
    code, out = dg("intel", "import", tmp_path / "all.json", "--db", b)
    assert code == 0 and "0 updated" in out, out
    with IntelStore.open(a) as sa, IntelStore.open(b) as sb:
        assert sa.count() == sb.count() > 230
        assert {i.id for i in sa.indicators()} == {i.id for i in sb.indicators()}
    # importing the same bundle again changes nothing
    code, out = dg("intel", "import", tmp_path / "all.json", "--db", b)
    assert code == 0 and " 0 added" in out, out
    code, out = dg("intel", "list", "--db", b, "--type", "ipv4", "--limit", "3")
    assert code == 0 and "ipv4" in out


def test_malformed_bundle_is_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    good = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": "indicator--0b6a8a0e-2f7e-4e0a-9a3c-6d2f8e9b1c01",
        "created": "2026-11-01T00:00:00.000Z",
        "modified": "2026-11-01T00:00:00.000Z",
        "pattern": "[ipv4-addr:value = '198.51.100.7']",
        "pattern_type": "stix",
        "valid_from": "2026-11-01T00:00:00.000Z",
    }
    bad = dict(good, id="indicator--not-a-uuid")
    p = tmp_path / "bad.json"
    p.write_bytes(
        orjson.dumps(
            {"type": "bundle", "id": "bundle--1b6a8a0e-2f7e-4e0a-9a3c-6d2f8e9b1c02", "objects": [good, bad]}
        )
    )
    code, out = dg("intel", "import", p, "--db", db)
    assert code == 2
    assert "indicator--not-a-uuid" in out and "'id'" in out
    with IntelStore.open(db) as st:
        assert st.count() == 0  # the good object did not go in either
    big = tmp_path / "big.json"
    big.write_bytes(b'{"type": "bundle", "objects": [' + b" " * (50 << 20) + b"]}")
    code, out = dg("intel", "import", big, "--db", db)
    assert code == 2 and "limit" in out
    code, out = dg("intel", "import", tmp_path / "missing.json", "--db", db)
    assert code == 2 and "not found" in out


def test_scan_with_intel_records_sightings(provider_a: dict[str, Path], corpora, tmp_path: Path) -> None:
    db = tmp_path / "intel.db"
    code, out = dg(
        "intel",
        "publish",
        provider_a["scan"],
        "--db",
        db,
        "--keyring",
        provider_a["keys"],
        "--accounts",
        provider_a["ops"],
    )
    assert code == 0, out
    cfg = tmp_path / "dg.toml"
    cfg.write_text(f'[intel]\ndb = "{db}"\nkeyring = "{provider_a["keys"]}"\norg = "Provider B"\n')
    log_b, ops_b, _ = provider_log("b", corpora, tmp_path)
    code, out = dg("scan", log_b, "--out", tmp_path / "scan-b", "--config", cfg, "--intel")
    assert code == 0, out
    assert "sightings recorded" in out
    summary = orjson.loads((tmp_path / "scan-b" / "summary.json").read_bytes())
    assert summary["intel"]["matched_exchanges"]["address"] == len(ops_b) * 12
    with IntelStore.open(db) as st:
        ip = st.indicators(type="ipv4")[0]
        assert st.corroboration(ip.id) == 2  # A published it, B (our_org "Provider B") saw it
    # without a keyring, keyed indicators cannot be matched: a clear error, not a silent miss
    cfg.write_text(f'[intel]\ndb = "{db}"\nkeyring = "{tmp_path / "none.keys"}"\n')
    code, out = dg("scan", log_b, "--out", tmp_path / "scan-c", "--config", cfg, "--intel")
    assert code == 2 and "keyring" in out


def test_taxii_admin_commands(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    code, cid = dg("intel", "collection", "campaigns", "--db", db)
    assert code == 0
    code, token = dg("intel", "key", "member-x", "--db", db, "--read", cid.strip())
    assert code == 0 and len(token.strip()) > 30
    code, out = dg("intel", "key", "member-y", "--db", db, "--read", "no-such-collection")
    assert code == 2 and "no collection" in out
