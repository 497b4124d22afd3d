from __future__ import annotations

from pathlib import Path

import pytest

from distillguard.ui.auth import LoginThrottle, Sessions, check_password, csrf_ok, hash_password
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


def test_login_throttle_backs_off_per_address_and_per_name() -> None:
    now = [1000.0]
    t = LoginThrottle(free=3, window_s=600, base_s=2, max_s=30, clock=lambda: now[0])
    for _ in range(3):
        assert t.retry_after("10.0.0.1", "ana") == 0
        t.failed("10.0.0.1", "ana")
    # the 4th attempt waits 2 s after the 3rd failure, from that address or on that name
    assert t.retry_after("10.0.0.1", "bob") == pytest.approx(2)
    assert t.retry_after("10.0.0.9", "ana") == pytest.approx(2)
    assert t.retry_after("10.0.0.9", "bob") == 0
    now[0] += 2
    t.failed("10.0.0.1", "ana")
    assert t.retry_after("10.0.0.1", "ana") == pytest.approx(4)  # doubles
    for _ in range(10):
        now[0] += 60
        t.failed("10.0.0.1", "ana")
    assert t.retry_after("10.0.0.1", "ana") == pytest.approx(30)  # capped
    now[0] += 601
    assert t.retry_after("10.0.0.1", "ana") == 0  # the window passed
    t.failed("10.0.0.2", "cy")
    t.succeeded("10.0.0.2", "cy")
    assert t.retry_after("10.0.0.2", "cy") == 0 and "n:cy" not in t._fails and "a:10.0.0.2" not in t._fails


def test_login_throttle_state_is_bounded() -> None:
    t = LoginThrottle(max_entries=10)
    for i in range(100):
        t.failed(f"10.0.{i}.1", f"user{i}")
    assert len(t._fails) == 10
