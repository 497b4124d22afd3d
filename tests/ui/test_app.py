from __future__ import annotations

import re
from pathlib import Path

from starlette.testclient import TestClient

from distillguard.ui.app import create_app
from distillguard.ui.auth import LoginThrottle
from distillguard.ui.decisions import ReviewStore
from distillguard.ui.scan_view import ScanView
from tests.ui.conftest import SECRET_PROMPT


def _client(scan_dir: Path, tmp_path: Path) -> tuple[TestClient, ReviewStore, str]:
    store = ReviewStore.open(tmp_path / "review.db")
    pw = store.add_user("ana")
    app = create_app(ScanView(scan_dir, 0.2), store, secret="test-secret")
    return TestClient(app, base_url="http://127.0.0.1"), store, pw


def _login(c: TestClient, pw: str) -> str:
    r = c.post("/login", data={"name": "ana", "password": pw}, follow_redirects=False)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = c.get("/").text
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m
    return m.group(1)


def test_login_required_and_wrong_password_audited(scan_dir: Path, tmp_path: Path) -> None:
    c, store, _pw = _client(scan_dir, tmp_path)
    assert c.get("/", follow_redirects=False).headers["location"] == "/login"
    assert c.get("/account/acct_harness", follow_redirects=False).status_code == 303
    assert c.post("/login", data={"name": "ana", "password": "nope"}).status_code == 401
    assert (
        c.post(
            "/decide", data={"kind": "account", "subject": "acct_harness", "decision": "dismiss"}
        ).status_code
        == 401
    )
    assert [e["action"] for e in store.audit_log()] == ["login_failed"]
    assert "nope" not in str(store.audit_log())


def test_queue_sorted_masked_and_reveal_audited(scan_dir: Path, tmp_path: Path) -> None:
    c, store, pw = _client(scan_dir, tmp_path)
    csrf = _login(c, pw)
    page = c.get("/").text
    # flagged accounts only (acct_quiet is under the queue's min score), highest score first
    order = [a for a in re.findall(r'<tr data-subject="(acct_\w+)"', page)]
    assert order == ["acct_harvest", "acct_member", "acct_harness"]
    assert "C0001" in page
    detail = c.get("/account/acct_harness")
    assert detail.status_code == 200
    assert "timing.round_the_clock" in detail.text and "1.5" in detail.text
    assert SECRET_PROMPT not in detail.text and "masked (" in detail.text
    assert "default-src 'self'" in detail.headers["content-security-policy"]
    # reveal without the CSRF token is refused and nothing is shown
    r = c.post("/reveal/account/acct_harness", data={"exchange_id": "ex_b1"})
    assert r.status_code == 403 and SECRET_PROMPT not in r.text
    r = c.post(
        "/reveal/account/acct_harness",
        data={"exchange_id": "ex_b1", "csrf": csrf},
        headers={"HX-Request": "true"},
    )
    assert r.status_code == 200 and "ticket 4711" in r.text
    # an exchange of another account cannot be read through this one
    r = c.post("/reveal/account/acct_harness", data={"exchange_id": "ex_h1", "csrf": csrf})
    assert r.status_code == 404 and "Come up with" not in r.text
    actions = [(e["user"], e["action"], e["subject"]) for e in store.audit_log()]
    assert ("ana", "reveal", "acct_harness") in actions and ("ana", "login", None) in actions
    assert SECRET_PROMPT not in str(store.audit_log())


def test_decisions_recorded_with_note_and_csrf(scan_dir: Path, tmp_path: Path) -> None:
    c, store, pw = _client(scan_dir, tmp_path)
    csrf = _login(c, pw)
    form = {"kind": "account", "subject": "acct_harness", "decision": "dismiss", "note": "eval harness"}
    assert c.post("/decide", data=form).status_code == 403
    r = c.post("/decide", data=form | {"csrf": csrf}, headers={"HX-Request": "true"})
    assert r.status_code == 200 and "dismiss by ana" in r.text
    r = c.post("/decide", data={"kind": "campaign", "subject": "C0001", "decision": "confirm", "csrf": csrf})
    assert r.status_code == 200  # followed the redirect to the campaign page
    assert c.post("/decide", data=form | {"csrf": csrf, "decision": "delete"}).status_code == 400
    assert c.post("/decide", data=form | {"csrf": csrf, "subject": "acct_quiet"}).status_code == 404
    d = store.decisions()
    assert d["acct_harness"].decision == "dismiss" and d["acct_harness"].note == "eval harness"
    assert d["C0001"].kind == "campaign" and d["C0001"].decision == "confirm"
    assert "dismiss by ana" in c.get("/").text
    assert c.get("/static/htmx.min.js").status_code == 200


def test_failed_logins_are_throttled_even_with_the_right_password(scan_dir: Path, tmp_path: Path) -> None:
    now = [0.0]
    store = ReviewStore.open(tmp_path / "review.db")
    pw = store.add_user("ana")
    throttle = LoginThrottle(free=3, base_s=5, clock=lambda: now[0])
    c = TestClient(create_app(ScanView(scan_dir, 0.2), store, secret="s", throttle=throttle))
    for _ in range(3):
        assert c.post("/login", data={"name": "ana", "password": "guess"}).status_code == 401
    r = c.post("/login", data={"name": "ana", "password": pw}, follow_redirects=False)
    assert r.status_code == 429 and r.headers["retry-after"] == "5" and "too many failed logins" in r.text
    assert "set-cookie" not in r.headers
    now[0] += 5
    assert c.post("/login", data={"name": "ana", "password": pw}, follow_redirects=False).status_code == 303
    actions = [e["action"] for e in store.audit_log()]  # newest first
    assert actions == ["login", "login_throttled"] + ["login_failed"] * 3


def test_queue_is_paged_searchable_and_hides_decided(scan_dir: Path, tmp_path: Path) -> None:
    c, _store, pw = _client(scan_dir, tmp_path)
    csrf = _login(c, pw)

    def ids(html: str) -> list[str]:
        table = html.split('<table id="accounts">', 1)[1].split("</table>", 1)[0]
        return re.findall(r'<tr data-subject="([^"]+)"', table)

    full = ids(c.get("/").text)
    assert full == ["acct_harvest", "acct_member", "acct_harness"]
    p1, p2 = c.get("/?per=2").text, c.get("/?per=2&page=2").text
    assert ids(p1) == full[:2] and ids(p2) == full[2:]
    assert "page 1 of 2" in p1 and 'rel="next"' in p1 and 'rel="prev"' in p2
    assert ids(c.get("/?per=2&page=99").text) == full[2:]  # past the end: the last page
    assert ids(c.get("/?per=abc&page=-3").text) == full  # unreadable parameters: the defaults
    assert ids(c.get("/?q=HARN").text) == ["acct_harness"]
    assert "3 accounts" in c.get("/").text and "1 accounts" in c.get("/?q=harn").text
    r = c.post(
        "/decide", data={"csrf": csrf, "kind": "account", "subject": "acct_member", "decision": "dismiss"}
    )
    assert r.status_code == 200
    assert ids(c.get("/?show=undecided").text) == ["acct_harvest", "acct_harness"]
    assert ids(c.get("/").text) == full
