"""The admin HTTP API under `/admin/v1/`: organisations, accounts, keys and tiers over JSON.

The same operations as the admin CLI (`distillguard gateway create-org ...`), done by the same
`IdentityStore` methods, so a change made here reaches every replica the same way (the change revision,
within 1 s). Off unless `[admin]` gives `token_sha256` or the token's environment variable is set
(`AdminConfig.token_hash`); when off, `/admin/...` is an unknown path (404).

Authentication is one bearer token: the presented token is hashed and compared with the configured hash
in constant time (`hmac.compare_digest`), before any routing, so an unauthenticated caller learns nothing
about the routes. Every request (refused ones too) is logged as one line with the action, the subject id,
the status and the caller's address; never a token, a key secret or a name. A key's secret is in the
body of `POST /keys` and `POST /keys/{id}/rotate` only (shown once, `Cache-Control: no-store`).

Errors are OpenAI-style bodies (`{"error": {"message", "type", "param", "code"}}`) whose `param` names
the field at fault: 400 for a malformed body, 401 for a missing or wrong token, 404 for an unknown id,
405 for a wrong method, 409 for a duplicate id or a revoked key, 413 for a body over `max_body_bytes`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.exc import SQLAlchemyError

from distillguard.gateway.body import ClientGone, receive_body
from distillguard.gateway.config import TierConfig
from distillguard.gateway.errors import GatewayError, bad_request
from distillguard.gateway.identity import IdentityError, IdentityStore, KeyInfo

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PREFIX = "/admin/v1"
M = TypeVar("M", bound=BaseModel)
log = logging.getLogger("distillguard.gateway.admin")

_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")
# Ids chosen by the caller: printable, no path or query separators, within the column's 100 characters.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$"
_MAX_GRACE = timedelta(days=365)
_MAX_EXPIRY = timedelta(days=3650)


# -- request bodies -------------------------------------------------------------------------------------


def _no_nul(v: str | None) -> str | None:
    # PostgreSQL rejects NUL in text; refused here so the error names the field, not the database.
    if v is not None and "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class OrgIn(_Body):
    name: str = Field(min_length=1, max_length=200)
    tier: str | None = Field(None, max_length=64)
    id: str | None = Field(None, pattern=ID_PATTERN)
    country: str | None = Field(None, pattern=r"^[A-Za-z]{2}$")

    _nul = field_validator("name", "tier")(_no_nul)


class AccountIn(_Body):
    name: str = Field(min_length=1, max_length=200)
    org_id: str | None = Field(None, max_length=100)
    tier: str | None = Field(None, max_length=64)
    id: str | None = Field(None, pattern=ID_PATTERN)

    _nul = field_validator("name", "org_id", "tier")(_no_nul)


class KeyIn(_Body):
    account_id: str = Field(min_length=1, max_length=100)
    name: str | None = Field(None, max_length=200)
    expires_in_s: int | None = Field(None, ge=1, le=int(_MAX_EXPIRY.total_seconds()))

    _nul = field_validator("account_id", "name")(_no_nul)


class RotateIn(_Body):
    grace_s: int = Field(86_400, ge=0, le=int(_MAX_GRACE.total_seconds()))


class TierIn(_Body):
    tier: str | None = Field(description="Tier name; null clears it (an account then inherits its org's).")

    _nul = field_validator("tier")(_no_nul)


def _parse_body(model: type[M], raw: bytes, empty_ok: bool = False) -> M:
    if not raw.strip():
        if empty_ok:
            return model()
        raise bad_request("Request body is empty; expected a JSON object.", code="invalid_json")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise bad_request(f"Request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request(
            f"Request body must be a JSON object, got a JSON {type(data).__name__}.", code="invalid_json"
        )
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or None
        code = "unknown_field" if err["type"] == "extra_forbidden" else "invalid_value"
        if err["type"] == "missing":
            code = "missing_field"
        raise bad_request(f"{field}: {err['msg']}", field, code) from None


# -- responses ------------------------------------------------------------------------------------------


def _utc(v: Any) -> Any:
    # SQLite hands back naive datetimes; everything stored is UTC, so say so in the JSON.
    if isinstance(v, datetime) and v.tzinfo is None:
        return v.replace(tzinfo=UTC)
    return v


def _row(r: dict[str, object]) -> dict[str, object]:
    return {k: _utc(v) for k, v in r.items()}


def key_json(k: KeyInfo) -> dict[str, object]:
    """A key as the API shows it: its id and the first characters of the secret, never the secret."""
    return {
        "id": k.id,
        "account_id": k.account_id,
        "prefix": k.prefix,
        "name": k.name,
        "created": k.created,
        "expires_at": k.expires_at,
        "revoked_at": k.revoked_at,
        "replaced_by": k.replaced_by,
    }


def _identity_error(e: IdentityError) -> GatewayError:
    """Map the store's refusals onto HTTP: the message is the store's own (it names the id at fault)."""
    msg = str(e)
    if msg.startswith("unknown tier"):
        return GatewayError(400, msg, "invalid_request_error", "unknown_tier", "tier")
    m = re.match(r"unknown (organisation|org|account|key) ", msg)
    if m:
        param = {"organisation": "org_id", "org": "org_id", "account": "account_id", "key": "key_id"}
        return GatewayError(404, msg, "invalid_request_error", "not_found", param[m.group(1)])
    if msg.startswith("cannot create"):
        return GatewayError(409, msg, "invalid_request_error", "conflict", "id")
    if "is revoked" in msg:
        return GatewayError(409, msg, "invalid_request_error", "key_revoked", "key_id")
    return GatewayError(400, msg, "invalid_request_error", "invalid_request")


# -- routing --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Req:
    method: str
    path_id: str | None
    query: dict[str, list[str]]
    body: bytes


@dataclass(slots=True)
class _Result:
    status: int
    obj: object
    subject: str | None = None  # the id acted on, for the log line
    secret: bool = False  # the body holds a key secret: never cached


Handler = Callable[["AdminAPI", _Req], _Result]


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    action: str
    handler: Handler


class AdminAPI:
    """ASGI handler for `/admin/v1/...`, mounted by `Gateway` when `AdminConfig.token_hash()` is set."""

    def __init__(
        self,
        store: Callable[[], IdentityStore | None],
        tiers: dict[str, TierConfig],
        token_hash: str,
        max_body_bytes: int = 64 * 1024,
        on_change: Callable[[], None] | None = None,
        body_timeout_s: float | None = 10.0,
    ) -> None:
        self._store = store
        self.tiers = tiers
        self._token_hash = token_hash.encode()
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self._on_change = on_change

    # -- handlers (run in a worker thread: the store is synchronous) -----------------------------------

    def store(self) -> IdentityStore:
        s = self._store()
        if s is None:
            raise GatewayError(503, "The gateway is starting.", "service_unavailable", "not_ready")
        return s

    def list_orgs(self, r: _Req) -> _Result:
        return _Result(200, {"object": "list", "data": [_row(x) for x in self.store().list_orgs()]})

    def create_org(self, r: _Req) -> _Result:
        b = _parse_body(OrgIn, r.body)
        country = b.country.upper() if b.country else None
        oid = self.store().create_org(b.name, b.tier, b.id, country)
        return _Result(201, {"id": oid, "name": b.name, "tier": b.tier, "country": country}, oid)

    def set_org_tier(self, r: _Req) -> _Result:
        assert r.path_id is not None
        b = _parse_body(TierIn, r.body)
        self.store().set_tier("org", r.path_id, b.tier)
        return _Result(200, {"id": r.path_id, "tier": b.tier}, r.path_id)

    def list_accounts(self, r: _Req) -> _Result:
        org = _query_one(r.query, "org_id")
        rows = self.store().list_accounts(org)
        return _Result(200, {"object": "list", "data": [_row(x) for x in rows]})

    def create_account(self, r: _Req) -> _Result:
        b = _parse_body(AccountIn, r.body)
        aid = self.store().create_account(b.name, b.org_id, b.tier, b.id)
        return _Result(201, {"id": aid, "name": b.name, "org_id": b.org_id, "tier": b.tier}, aid)

    def set_account_tier(self, r: _Req) -> _Result:
        assert r.path_id is not None
        b = _parse_body(TierIn, r.body)
        self.store().set_tier("account", r.path_id, b.tier)
        return _Result(200, {"id": r.path_id, "tier": b.tier}, r.path_id)

    def disable_account(self, r: _Req) -> _Result:
        assert r.path_id is not None
        self.store().disable_account(r.path_id)
        return _Result(200, {"id": r.path_id, "disabled": True}, r.path_id)

    def list_keys(self, r: _Req) -> _Result:
        acct = _query_one(r.query, "account_id")
        keys = self.store().list_keys(acct)
        return _Result(200, {"object": "list", "data": [key_json(k) for k in keys]})

    def create_key(self, r: _Req) -> _Result:
        b = _parse_body(KeyIn, r.body)
        until = datetime.now(UTC) + timedelta(seconds=b.expires_in_s) if b.expires_in_s else None
        info, secret = self.store().create_key(b.account_id, b.name, until)
        return _Result(201, {"key": key_json(info), "secret": secret}, info.id, secret=True)

    def rotate_key(self, r: _Req) -> _Result:
        assert r.path_id is not None
        b = _parse_body(RotateIn, r.body, empty_ok=True)
        info, secret = self.store().rotate_key(r.path_id, timedelta(seconds=b.grace_s))
        obj = {"key": key_json(info), "secret": secret, "replaces": r.path_id}
        return _Result(201, obj, r.path_id, secret=True)

    def revoke_key(self, r: _Req) -> _Result:
        assert r.path_id is not None
        self.store().revoke_key(r.path_id)
        return _Result(200, {"id": r.path_id, "revoked": True}, r.path_id)

    def list_tiers(self, r: _Req) -> _Result:
        data = [{"name": n, **t.model_dump(mode="json")} for n, t in self.tiers.items()]
        return _Result(200, {"object": "list", "data": data})

    # -- ASGI ----------------------------------------------------------------------------------------

    def _authorised(self, scope: Scope) -> GatewayError | None:
        auth = None
        for k, v in scope["headers"]:
            if k == b"authorization":
                auth = v
                break
        if not auth:
            return GatewayError(
                401, "Admin token missing: send 'Authorization: Bearer <token>'.", code="missing_admin_token"
            )
        scheme, _, token = auth.partition(b" ")
        presented = hashlib.sha256(token.strip()).hexdigest().encode()
        # Always hash and compare (even for a wrong scheme) so timing says nothing about the token.
        ok = hmac.compare_digest(presented, self._token_hash)
        if not ok or scheme.lower() != b"bearer":
            return GatewayError(401, "Incorrect admin token.", code="invalid_admin_token")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = "adm_" + secrets.token_hex(8)
        path: str = scope["path"]
        method: str = scope["method"]
        action, subject, status = "unknown", None, 500
        extra: list[tuple[bytes, bytes]] = [(b"x-request-id", rid.encode())]
        try:
            try:
                err = self._authorised(scope)
                if err is not None:
                    action = "auth"
                    extra.append((b"www-authenticate", b'Bearer realm="distillguard-admin"'))
                    raise err
                route, path_id = _match(method, path.removeprefix(PREFIX))
                action = route.action
                subject = path_id
                body = await _read_body(receive, self.max_body_bytes, self.body_timeout_s)
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                req = _Req(method, path_id, query, body)
                res = await asyncio.to_thread(self._run, route.handler, req)
                subject = res.subject or subject
                status = res.status
                hs = [_JSON, *extra]
                if res.secret:
                    hs.append(_NO_STORE)
                await _respond(send, status, orjson.dumps(res.obj), hs)
            except IdentityError as e:
                raise _identity_error(e) from None
            except SQLAlchemyError as e:
                raise GatewayError(
                    503,
                    f"The identity database is unavailable ({e.__class__.__name__}).",
                    "service_unavailable",
                    "identity_unavailable",
                ) from None
        except GatewayError as e:
            status = e.status
            hs = [_JSON, *extra, *((k.encode(), v.encode()) for k, v in e.headers.items())]
            await _respond(send, e.status, e.body(), hs)
        finally:
            peer = scope.get("client")
            log.log(
                logging.WARNING if status in (401, 500) else logging.INFO,
                "admin action",
                extra={
                    "request_id": rid,
                    "action": action,
                    "subject": subject,
                    "status": status,
                    "client_ip": peer[0] if peer else None,
                },
            )

    def _run(self, handler: Handler, req: _Req) -> _Result:
        res = handler(self, req)
        if res.status in (200, 201) and req.method != "GET" and self._on_change is not None:
            self._on_change()
        return res


def _query_one(query: dict[str, list[str]], name: str) -> str | None:
    vals = query.get(name)
    if not vals:
        return None
    if len(vals) > 1:
        raise bad_request(f"query parameter {name!r} given {len(vals)} times", name, "invalid_value")
    return vals[0]


_ID = r"(?P<id>[^/]+)"
ROUTES: tuple[_Route, ...] = tuple(
    _Route(m, re.compile(f"^{p}$"), a, h)
    for m, p, a, h in (
        ("GET", "/orgs", "org.list", AdminAPI.list_orgs),
        ("POST", "/orgs", "org.create", AdminAPI.create_org),
        ("PUT", f"/orgs/{_ID}/tier", "org.tier", AdminAPI.set_org_tier),
        ("GET", "/accounts", "account.list", AdminAPI.list_accounts),
        ("POST", "/accounts", "account.create", AdminAPI.create_account),
        ("PUT", f"/accounts/{_ID}/tier", "account.tier", AdminAPI.set_account_tier),
        ("POST", f"/accounts/{_ID}/disable", "account.disable", AdminAPI.disable_account),
        ("GET", "/keys", "key.list", AdminAPI.list_keys),
        ("POST", "/keys", "key.create", AdminAPI.create_key),
        ("POST", f"/keys/{_ID}/rotate", "key.rotate", AdminAPI.rotate_key),
        ("POST", f"/keys/{_ID}/revoke", "key.revoke", AdminAPI.revoke_key),
        ("GET", "/tiers", "tier.list", AdminAPI.list_tiers),
    )
)


def _match(method: str, sub: str) -> tuple[_Route, str | None]:
    allowed = []
    for r in ROUTES:
        m = r.pattern.match(sub)
        if m is None:
            continue
        if r.method == method:
            pid = m.groupdict().get("id")
            if pid is not None and (len(pid) > 100 or "\x00" in pid):
                # cannot be a stored id (the column holds 100 characters): unknown, not a database error
                raise GatewayError(404, f"unknown id {pid[:40]!r}", code="not_found", param="id")
            return r, pid
        allowed.append(r.method)
    if allowed:
        raise GatewayError(
            405,
            f"{PREFIX}{sub} takes {', '.join(allowed)}",
            code="method_not_allowed",
            headers={"allow": ", ".join(allowed)},
        )
    raise GatewayError(404, f"Unknown admin path {PREFIX + sub!r}.", code="unknown_url")


async def _read_body(receive: Receive, limit: int, timeout_s: float | None) -> bytes:
    try:
        return await receive_body(receive, limit, timeout_s)
    except ClientGone:
        raise GatewayError(400, "client disconnected", code="client_disconnected") from None


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    hs = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": hs})
    await send({"type": "http.response.body", "body": body, "more_body": False})
