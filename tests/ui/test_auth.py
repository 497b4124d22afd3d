from __future__ import annotations

from pathlib import Path

import pytest

from distillguard.ui.auth import Sessions, check_password, csrf_ok, hash_password
from distillguard.ui.decisions import DecisionError, ReviewStore


def test_password_hash_roundtrip_and_salting() -> None:
    salt, h = hash_password("correct horse")
    assert check_password("correct horse", salt, h)
    assert not check_password("correct horsE", salt, h)
    salt2, h2 = hash_password("correct horse")
    assert salt2 != salt and h2 != h  # a fresh salt per user: equal passwords do not show


def test_session_tokens_are_signed() -> None:
    s = Sessions("k1")
    cookie, csrf = s.issue("ana")
    assert s.read(cookie) == ("ana", csrf)
    assert Sessions("other key").read(cookie) is None
    assert s.read(cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")) is None
    assert s.read(None) is None
    assert csrf_ok(csrf, csrf) and not csrf_ok(csrf, None) and not csrf_ok(csrf, csrf + "x")


def test_expired_session_refused() -> None:
    s = Sessions("k1", max_age_s=-1)
    cookie, _ = s.issue("ana")
    assert s.read(cookie) is None


def test_store_users_decisions_audit(tmp_path: Path) -> None:
    st = ReviewStore.open(tmp_path / "r.db")
    pw = st.add_user("ana")
    assert st.check_login("ana", pw) and not st.check_login("ana", pw + "x") and not st.check_login("bob", pw)
    st.decide("ana", "acct_1", "account", "confirm", "scan", 0.9, "looks like Self-Instruct")
    st.decide("ana", "acct_1", "account", "dismiss", "scan", 0.9, None)
    d = st.decisions()["acct_1"]
    assert (d.decision, d.user, d.score) == ("dismiss", "ana", 0.9)  # the newest decision is in force
    log = st.audit_log()
    assert [e["action"] for e in log] == ["dismiss", "confirm"]
    assert all(e["subject"] == "acct_1" for e in log)
    assert all("Self-Instruct" not in str(e["detail"]) for e in log)  # notes stay out of the audit log
    with pytest.raises(DecisionError, match="approve"):
        st.decide("ana", "acct_1", "account", "approve", "scan")
    # a second user reset keeps one row and changes the password
    pw2 = st.add_user("ana")
    assert st.check_login("ana", pw2) and not st.check_login("ana", pw)
    st.close()


def test_ui_migration_matches_the_models(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import MetaData

    from distillguard.ui.decisions import AuditRow, DecisionRow, UserRow

    mine = MetaData()
    for row in (UserRow, DecisionRow, AuditRow):
        row.__table__.to_metadata(mine)
    names = {t.name for t in mine.tables.values()}
    st = ReviewStore.open(tmp_path / "m.db")
    with st.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={"compare_type": True, "include_name": lambda n, kind, _p: kind != "table" or n in names},
        )
        assert compare_metadata(ctx, mine) == []
    st.close()
