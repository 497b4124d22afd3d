"""The admin HTTP API (/admin/v1/): auth, the CLI's operations over JSON, errors naming the field, logs."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openapi_spec_validator import validate
from typer.testing import CliRunner

from distillguard.gateway.app import Gateway
from distillguard.gateway.cli import gateway_app
from distillguard.gateway.config import ADMIN_TOKEN_ENV, AdminConfig, GatewayConfigError

from .conftest import ScriptedLimiter, gateway_config, make_store
from .mock_upstream import MockUpstream, serve_in_thread

TOKEN = "adm-" + "x7Qp" * 8


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Admin:
    url: str
    http: httpx.Client
    cfg_path: Path
    app: Gateway
    log: _Records
    user_key: str  # a verified account's key (from conftest.make_store)

    def chat(self, key: str) -> httpx.Response:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        return self.http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})


@pytest.fixture
def admin(tmp_path: Path, upstream: tuple[MockUpstream, str]) -> Iterator[Admin]:
    _, up_url = upstream
    cfg = gateway_config(tmp_path, up_url)
    cfg.admin = AdminConfig(token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest())
    store, secrets_, _ = make_store(tmp_path, cfg)
    app = Gateway(cfg, limiter=ScriptedLimiter(), store=store)
    # the same database for the CLI parity check
    cfg_path = tmp_path / "gateway.toml"
    cfg_path.write_text(f'[identity]\ndb = "{cfg.identity.db}"\n')
    rec = _Records()
    lg = logging.getLogger("distillguard.gateway.admin")
    lg.addHandler(rec)
    old_level = lg.level
    lg.setLevel(logging.INFO)
    try:
        with (
            serve_in_thread(app) as url,
            httpx.Client(base_url=url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10) as http,
        ):
            yield Admin(url, http, cfg_path, app, rec, secrets_["verified"])
    finally:
        lg.removeHandler(rec)
        lg.setLevel(old_level)


def _err(r: httpx.Response) -> dict[str, Any]:
    e: dict[str, Any] = r.json()["error"]
    return e


def test_admin_api_is_off_without_a_token(tmp_path: Path, upstream: tuple[MockUpstream, str]) -> None:
    cfg = gateway_config(tmp_path, upstream[1])
    store, _, _ = make_store(tmp_path, cfg)
    app = Gateway(cfg, limiter=ScriptedLimiter(), store=store)
    assert app.admin is None
    with serve_in_thread(app) as url:
        r = httpx.post(
            url + "/admin/v1/orgs", json={"name": "x"}, headers={"authorization": f"Bearer {TOKEN}"}
        )
        assert r.status_code == 404 and _err(r)["code"] == "unknown_url"
        doc = httpx.get(url + "/openapi.json").json()
    assert not any(p.startswith("/admin/") for p in doc["paths"])  # not advertised when off


def test_admin_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_TOKEN_ENV, TOKEN)
    assert AdminConfig().token_hash() == hashlib.sha256(TOKEN.encode()).hexdigest()
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "short")
    with pytest.raises(GatewayConfigError, match="shorter than 16"):
        AdminConfig().token_hash()
    monkeypatch.delenv(ADMIN_TOKEN_ENV)
    assert AdminConfig().token_hash() is None
    with pytest.raises(ValueError, match="64 hex"):
        AdminConfig(token_sha256="abc")


def test_admin_auth(admin: Admin) -> None:
    bare = httpx.Client(base_url=admin.url, timeout=10)
    r = bare.get("/admin/v1/orgs")
    assert r.status_code == 401 and _err(r)["code"] == "missing_admin_token"
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = bare.get("/admin/v1/orgs", headers={"authorization": "Bearer " + TOKEN[:-1] + "y"})
    assert r.status_code == 401 and _err(r)["code"] == "invalid_admin_token"
    r = bare.get("/admin/v1/orgs", headers={"authorization": "Basic " + TOKEN})
    assert r.status_code == 401
    # a user's API key is not an admin token
    r = bare.get("/admin/v1/orgs", headers={"authorization": "Bearer " + admin.user_key})
    assert r.status_code == 401
    # unauthenticated callers learn nothing about routes: an unknown admin path is a 401 too
    assert bare.get("/admin/v1/nope").status_code == 401
    bare.close()
    r = admin.http.get("/admin/v1/orgs")
    assert r.status_code == 200 and [o["id"] for o in r.json()["data"]] == ["org_acme"]


def test_admin_lifecycle_orgs_accounts_keys(admin: Admin) -> None:
    h = admin.http
    r = h.post("/admin/v1/orgs", json={"name": "Beta Ltd", "id": "beta", "tier": "verified", "country": "gb"})
    assert r.status_code == 201 and r.json() == {
        "id": "beta",
        "name": "Beta Ltd",
        "tier": "verified",
        "country": "GB",
    }
    r = h.post("/admin/v1/accounts", json={"name": "dev", "org_id": "beta", "id": "beta_dev"})
    assert r.status_code == 201 and r.json()["id"] == "beta_dev"
    accts = h.get("/admin/v1/accounts", params={"org_id": "beta"}).json()["data"]
    assert [a["id"] for a in accts] == ["beta_dev"] and accts[0]["created"].endswith("+00:00")

    # a key: the secret is in this response only, and it works through the proxy
    r = h.post("/admin/v1/keys", json={"account_id": "beta_dev", "name": "ci"})
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    k1, s1 = r.json()["key"], r.json()["secret"]
    assert s1.startswith("dg-") and k1["prefix"] == s1[:7] and k1["account_id"] == "beta_dev"
    assert admin.chat(s1).status_code == 200
    listed = h.get("/admin/v1/keys", params={"account_id": "beta_dev"})
    assert [k["id"] for k in listed.json()["data"]] == [k1["id"]] and s1 not in listed.text

    # rotate with no grace: the old key stops at once, the new one works
    r = h.post(f"/admin/v1/keys/{k1['id']}/rotate", json={"grace_s": 0})
    assert r.status_code == 201 and r.json()["replaces"] == k1["id"]
    k2, s2 = r.json()["key"], r.json()["secret"]
    assert admin.chat(s2).status_code == 200
    r = admin.chat(s1)
    assert r.status_code == 401 and _err(r)["code"] == "api_key_expired"
    # rotate with grace (empty body: the default, 24 h): both work
    r = h.post(f"/admin/v1/keys/{k2['id']}/rotate")
    assert r.status_code == 201
    s3 = r.json()["secret"]
    assert admin.chat(s2).status_code == 200 and admin.chat(s3).status_code == 200

    # revoke: refused at once on this replica (the cache is cleared by the admin call)
    r = h.post(f"/admin/v1/keys/{k2['id']}/revoke")
    assert r.status_code == 200 and r.json() == {"id": k2["id"], "revoked": True}
    r = admin.chat(s2)
    assert r.status_code == 401 and _err(r)["code"] == "api_key_revoked"
    r = h.post(f"/admin/v1/keys/{k2['id']}/rotate", json={"grace_s": 5})
    assert r.status_code == 409 and _err(r)["code"] == "key_revoked" and _err(r)["param"] == "key_id"

    # tiers: listed from the config; an account moved to a tier; an org's tier changed
    tiers = {t["name"]: t for t in h.get("/admin/v1/tiers").json()["data"]}
    assert set(tiers) == set(admin.app.cfg.tiers) and tiers["verified"]["max_n"] == 4
    r = h.put("/admin/v1/accounts/beta_dev/tier", json={"tier": "unverified"})
    assert r.status_code == 200
    r = admin.chat(s3)  # gpt-4o is not an unverified model
    assert r.status_code == 403 and _err(r)["code"] == "model_not_allowed"
    assert h.put("/admin/v1/accounts/beta_dev/tier", json={"tier": None}).status_code == 200
    assert admin.chat(s3).status_code == 200  # inherits the org's verified tier again
    assert h.put("/admin/v1/orgs/beta/tier", json={"tier": "unverified"}).status_code == 200
    assert admin.chat(s3).status_code == 403

    # disable the account: its keys are refused
    r = h.post("/admin/v1/accounts/beta_dev/disable")
    assert r.status_code == 200
    r = admin.chat(s3)
    assert r.status_code == 403 and _err(r)["code"] == "account_disabled"

    # the admin CLI reads the same store: what the API made is there
    out = CliRunner().invoke(gateway_app, ["list", "keys", "--json", "-c", str(admin.cfg_path)])
    assert out.exit_code == 0, out.output
    cli_keys = {k["id"]: k for k in map(orjson.loads, out.output.splitlines())}
    assert cli_keys[k1["id"]]["replaced_by"] == k2["id"] and cli_keys[k2["id"]]["revoked"]


# (method, path, body, status, param, code): one gateway for all (its database setup is the slow part)
ERROR_CASES: list[tuple[str, str, Any, int, str | None, str]] = [
    ("POST", "/admin/v1/orgs", {}, 400, "name", "missing_field"),
    ("POST", "/admin/v1/orgs", {"name": "x", "colour": "red"}, 400, "colour", "unknown_field"),
    ("POST", "/admin/v1/orgs", {"name": 5}, 400, "name", "invalid_value"),
    ("POST", "/admin/v1/orgs", {"name": "x", "country": "GBR"}, 400, "country", "invalid_value"),
    ("POST", "/admin/v1/orgs", {"name": "x", "id": "a/b"}, 400, "id", "invalid_value"),
    ("POST", "/admin/v1/orgs", {"name": "x", "tier": "platinum"}, 400, "tier", "unknown_tier"),
    ("POST", "/admin/v1/orgs", {"name": "x\x00y"}, 400, "name", "invalid_value"),
    ("POST", "/admin/v1/orgs", {"name": "dup", "id": "org_acme"}, 409, "id", "conflict"),
    ("POST", "/admin/v1/accounts", {"name": "x", "org_id": "ghost"}, 404, "org_id", "not_found"),
    ("POST", "/admin/v1/keys", {"account_id": "ghost"}, 404, "account_id", "not_found"),
    (
        "POST",
        "/admin/v1/keys",
        {"account_id": "acct_v", "expires_in_s": 0},
        400,
        "expires_in_s",
        "invalid_value",
    ),
    (
        "POST",
        "/admin/v1/keys",
        {"account_id": "acct_v", "expires_in_s": 1.5},
        400,
        "expires_in_s",
        "invalid_value",
    ),
    ("POST", "/admin/v1/keys/key_ghost/revoke", None, 404, "key_id", "not_found"),
    ("POST", "/admin/v1/keys/key_ghost/rotate", {"grace_s": -1}, 400, "grace_s", "invalid_value"),
    ("PUT", "/admin/v1/accounts/ghost/tier", {"tier": "verified"}, 404, "account_id", "not_found"),
    ("PUT", "/admin/v1/orgs/org_acme/tier", {}, 400, "tier", "missing_field"),
    ("POST", "/admin/v1/accounts/ghost/disable", None, 404, "account_id", "not_found"),
    ("GET", "/admin/v1/keys?account_id=a&account_id=b", None, 400, "account_id", "invalid_value"),
    ("DELETE", "/admin/v1/orgs", None, 405, None, "method_not_allowed"),
    ("GET", "/admin/v1/widgets", None, 404, None, "unknown_url"),
]


def test_admin_errors_name_the_field(admin: Admin) -> None:
    for method, path, body, status, param, code in ERROR_CASES:
        r = admin.http.request(method, path, json=body)
        assert r.status_code == status, (method, path, body, r.text)
        e = _err(r)
        assert (e["param"], e["code"]) == (param, code), (method, path, body, e)
        if status == 405:
            assert r.headers["allow"] == "GET, POST"


def test_admin_malformed_and_oversized_bodies(admin: Admin) -> None:
    h = admin.http
    ctype = {"content-type": "application/json"}
    r = h.post("/admin/v1/orgs", content=b'{"name": "x",', headers=ctype)
    assert (
        r.status_code == 400 and _err(r)["code"] == "invalid_json" and "not valid JSON" in _err(r)["message"]
    )
    r = h.post("/admin/v1/orgs", content=b"[1, 2]", headers=ctype)
    assert r.status_code == 400 and "got a JSON list" in _err(r)["message"]
    r = h.post("/admin/v1/orgs", content=b"", headers=ctype)
    assert r.status_code == 400 and _err(r)["code"] == "invalid_json"
    big = b'{"name": "' + b"a" * (admin.app.cfg.admin.max_body_bytes + 10) + b'"}'
    r = h.post("/admin/v1/orgs", content=big, headers=ctype)
    assert r.status_code == 413 and _err(r)["code"] == "request_too_large"
    assert [o["id"] for o in h.get("/admin/v1/orgs").json()["data"]] == ["org_acme"]  # nothing was made


def test_admin_actions_are_logged_without_secrets(admin: Admin) -> None:
    h = admin.http
    r = h.post("/admin/v1/accounts", json={"name": "Secret Name Inc", "id": "logged"})
    key = h.post("/admin/v1/keys", json={"account_id": "logged"}).json()
    h.post(f"/admin/v1/keys/{key['key']['id']}/revoke")
    httpx.get(admin.url + "/admin/v1/orgs", headers={"authorization": "Bearer wrong-token-123456"})
    assert r.status_code == 201
    # the server thread logs a refusal after sending it: give the line a moment to land (bounded)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(
        getattr(x, "action", None) == "auth" for x in admin.log.records
    ):
        time.sleep(0.01)
    recs = admin.log.records
    seen = [(x.action, x.subject, x.status) for x in recs]  # type: ignore[attr-defined]
    assert ("account.create", "logged", 201) in seen
    assert ("key.create", key["key"]["id"], 201) in seen
    assert ("key.revoke", key["key"]["id"], 200) in seen
    assert ("auth", None, 401) in seen
    assert all(x.client_ip == "127.0.0.1" for x in recs)  # type: ignore[attr-defined]
    dumped = " ".join(str(x.__dict__) for x in recs)
    for secret in (key["secret"], TOKEN, "wrong-token-123456", "Secret Name Inc"):
        assert secret not in dumped


def test_openapi_document_is_valid_and_routed(admin: Admin) -> None:
    r = httpx.get(admin.url + "/openapi.json")  # public: no token needed
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    validate(doc)  # OpenAPI 3.1 meta-schema
    assert doc["openapi"].startswith("3.1")
    public = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/responses"}
    assert public | {"/healthz", "/metrics", "/admin/v1/keys"} <= set(doc["paths"])
    # every documented operation is routed: none answers the gateway's unknown-path 404
    for path, ops in doc["paths"].items():
        url = path.replace("{id}", "ghost").replace("{model}", "gpt-4o")
        for method in ops:
            resp = admin.http.request(method.upper(), url, headers={"authorization": f"Bearer {TOKEN}"})
            body = resp.json() if resp.headers.get("content-type") == "application/json" else {}
            assert not (isinstance(body, dict) and body.get("error", {}).get("code") == "unknown_url"), (
                method,
                path,
            )


def test_cli_disable_account_is_seen_by_the_api(admin: Admin) -> None:
    run = CliRunner().invoke
    r = run(gateway_app, ["disable-account", "acct_u", "-c", str(admin.cfg_path)])
    assert r.exit_code == 0, r.output
    accts = {a["id"]: a for a in admin.http.get("/admin/v1/accounts").json()["data"]}
    assert accts["acct_u"]["disabled_at"] is not None and accts["acct_v"]["disabled_at"] is None
    r = run(gateway_app, ["disable-account", "ghost", "-c", str(admin.cfg_path)])
    assert r.exit_code == 2 and "unknown account" in r.output
