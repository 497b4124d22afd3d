from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.intel.indicator import IndicatorType
from distillguard.intel.privacy import Keyring
from distillguard.intel.store import IntelStore
from distillguard.ui.decisions import ReviewStore
from distillguard.ui.sightings import review_indicator_id


def _decide(db: Path, scan_dir: Path) -> None:
    st = ReviewStore.open(db)
    st.decide("ana", "acct_harness", "account", "dismiss", str(scan_dir), 0.3, "Jane Roe's ticket bot")
    st.decide("ana", "C0001", "campaign", "confirm", str(scan_dir), 0.99)
    st.decide("ana", "acct_member", "account", "escalate", str(scan_dir), 0.9)
    st.close()


def test_add_user_prints_a_password_that_logs_in(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    res = CliRunner().invoke(app, ["ui", "add-user", "ana", "--db", str(db)])
    assert res.exit_code == 0, res.output
    pw = res.stdout.strip().splitlines()[-1]
    st = ReviewStore.open(db)
    assert st.check_login("ana", pw)
    assert pw not in str(st.engine.url)
    st.close()


def test_export_sightings_digests_only(tmp_path: Path, scan_dir: Path) -> None:
    db, keys, intel = tmp_path / "r.db", tmp_path / "k.keys", tmp_path / "intel.db"
    Keyring.generate().save(keys)
    kr = Keyring.load(keys)
    _decide(db, scan_dir)
    bundle = tmp_path / "bundle.json"
    res = CliRunner().invoke(
        app,
        [
            "ui",
            "export-sightings",
            "--db",
            str(db),
            "--out",
            str(bundle),
            "--keyring",
            str(keys),
            "--intel-db",
            str(intel),
        ],
    )
    assert res.exit_code == 0, res.output
    text = bundle.read_text()
    for raw in ("acct_harness", "acct_harvest", "acct_member", "Jane Roe", "C0001"):
        assert raw not in text  # no raw id, no analyst note
    objs = orjson.loads(text)["objects"]
    sightings = [o for o in objs if o["type"] == "sighting"]
    # campaign confirm covers acct_harvest (seen); acct_member's own escalation overrides it (no label);
    # acct_harness dismissed (false positive, and no indicator for it)
    assert len(sightings) == 2
    with IntelStore.open(str(intel)) as st:
        inds = st.indicators(type=IndicatorType.ACCOUNT)
    assert [i.value for i in inds] == [kr.digest(IndicatorType.ACCOUNT, "acct_harvest")]
    fp_target = review_indicator_id(kr.digest(IndicatorType.ACCOUNT, "acct_harness"))
    assert fp_target in text
    # exporting again replaces rather than doubles
    res = CliRunner().invoke(
        app, ["ui", "export-sightings", "--db", str(db), "--keyring", str(keys), "--intel-db", str(intel)]
    )
    assert res.exit_code == 0, res.output
    with IntelStore.open(str(intel)) as st:
        assert len(st.indicators(type=IndicatorType.ACCOUNT)) == 1


def test_export_needs_a_destination(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["ui", "export-sightings", "--db", str(tmp_path / "r.db")])
    assert res.exit_code != 0 and "--out" in res.output


def test_ui_serve_refuses_a_missing_scan(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["ui", str(tmp_path / "nothing"), "--db", str(tmp_path / "r.db")])
    assert res.exit_code != 0 and "accounts.parquet missing" in res.output
