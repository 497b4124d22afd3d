"""The gateway as one pure ASGI application (no framework middleware, no response buffering for streams).

Per request on a proxied route (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
`/v1/responses`):

1. read the body (413 past `max_body_bytes`, checked on Content-Length first), parse it (400 naming the
   problem);
2. write the audit intent (`audit.begin`, see `audit.py`);
3. resolve the key (401), apply the tier (403/400), ask the limiter (429 with Retry-After);
4. forward to the upstream while a watcher listens for the client's disconnect, which cancels the
   upstream call (its connection is then closed, so the upstream sees the cancel);
5. relay: JSON bodies whole, SSE event by event as they arrive; the audit's final record is written
   before the last byte (the JSON body, the stream's `[DONE]` or terminal event) is sent;
6. reconcile the limiter with the real usage, count metrics, log one JSON line (ids and timings only).

A stream whose client did not ask for `stream_options.include_usage` is forwarded with it (the limiter
and the audit need the real usage) and the extra usage-only chunk is not relayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson

from distillguard.gateway.admin import PREFIX as ADMIN_PREFIX
from distillguard.gateway.admin import AdminAPI
from distillguard.gateway.audit import AuditLog, AuditUnavailable, NullAudit
from distillguard.gateway.body import ClientGone, receive_body
from distillguard.gateway.config import GatewayConfig, TierConfig
from distillguard.gateway.errors import GatewayError, bad_request, error_body
from distillguard.gateway.geo import GeoResolver, record_geo
from distillguard.gateway.hooks import DecisionLike, Limiter
from distillguard.gateway.identity import IdentityStore, KeyCache, ResolvedKey, open_identity_db
from distillguard.gateway.intel import IntelGate
from distillguard.gateway.limits.config import build_limiter
from distillguard.gateway.links import LinkGate
from distillguard.gateway.metrics import Metrics
from distillguard.gateway.openapi import openapi_document
from distillguard.gateway.otel_export import OtelExporter
from distillguard.gateway.policy import (
    check_shape,
    descriptors,
    enforce_tier,
    estimate_tokens,
    refuse_limit,
)
from distillguard.gateway.records import ResponseAccumulator, request_record
from distillguard.gateway.risk import RiskEngine, strip_event, strip_json
from distillguard.gateway.upstream import (
    UPSTREAM_ERRORS,
    UpstreamClient,
    UpstreamResponse,
    make_client,
    status_error,
    transport_error,
)
from distillguard.gateway.watermark import WatermarkHook, WatermarkPlan

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("distillguard.gateway.access")

PROXIED = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"})
_JSON = [(b"content-type", b"application/json")]
_SSE = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
# Terminal events of the Responses API stream (chat and completions end with `data: [DONE]`).
_TERMINAL = (b'"response.completed"', b'"response.incomplete"', b'"response.failed"')


class _State:
    """What one exchange has gathered so far (for the record, metrics and the log line)."""

    __slots__ = (
        "disconnected",
        "finishing",
        "reason",
        "recorded",
        "status",
        "strip_reasoning",
        "t0",
        "t_fwd",
        "t_up_done",
        "upstream_s",
        "watermark",
    )

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.t_fwd = 0.0
        self.t_up_done = 0.0
        self.upstream_s = 0.0
        self.status = 200
        self.reason: str | None = None
        self.disconnected = False
        self.finishing = False
        self.recorded = False  # the final record is submitted: never a second one
        self.strip_reasoning = False  # online risk: reasoning removed from the response
        self.watermark: WatermarkPlan | None = None  # watermark.py: upstream header, response marker


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


class Gateway:
    """The ASGI app. `limiter` and `store` may be injected (tests, embedding)."""

    def __init__(
        self,
        cfg: GatewayConfig,
        limiter: Limiter[Any] | None = None,
        store: IdentityStore | None = None,
    ) -> None:
        self.cfg = cfg
        # the configured limiter (in-process by default, Redis across replicas) unless one is injected
        self.limiter: Limiter[Any] = limiter or build_limiter(cfg.limits)
        self.store = store
        self.metrics = Metrics()
        a = cfg.audit
        self.audit: AuditLog | NullAudit = (
            AuditLog(
                a.path,
                batch_max=a.batch_max,
                hash_chain=a.hash_chain,
                wal_rotate_bytes=a.wal_rotate_bytes,
                sync=a.sync,
                sync_interval_s=a.sync_interval_ms / 1000,
            )
            if a.enabled
            else NullAudit()
        )
        self.keys: KeyCache | None = None
        self.client: UpstreamClient | None = None
        self._upstream_auth = f"Bearer {cfg.upstream.secret()}".encode() if cfg.upstream.secret() else None
        self._trusted = [ipaddress.ip_network(c, strict=False) for c in cfg.server.trusted_proxies]
        # Optional policy steps (None when not configured): jurisdiction (geo.py), intel blocklists
        # (intel.py, loaded at startup).
        self.geo: GeoResolver | None = GeoResolver(cfg.geo) if cfg.geo is not None else None
        self.intel: IntelGate | None = None
        # online risk (risk.py): verdicts per account, learnt and scored in the background
        r = cfg.risk
        self.risk: RiskEngine | None = RiskEngine(r) if r is not None and r.enabled else None
        # OpenTelemetry GenAI spans of the audited exchanges (otel_export.py), batched in the background
        self.otel: OtelExporter | None = OtelExporter(cfg.otel) if cfg.otel is not None else None
        # linked identities (links.py): campaign budgets shared by linked accounts, loaded at startup
        self.links: LinkGate | None = None
        # per-account output watermarks (watermark.py): the upstream's args, or the gateway's lexical mark
        self.watermark: WatermarkHook | None = (
            WatermarkHook(cfg.watermark) if cfg.watermark.mode != "off" else None
        )
        # admin API (admin.py) under /admin/v1/, only when an admin token is configured
        token = cfg.admin.token_hash()
        self.admin: AdminAPI | None = (
            AdminAPI(
                lambda: self.store,
                cfg.tiers,
                token,
                cfg.admin.max_body_bytes,
                self._admin_changed,
                body_timeout_s=cfg.server.body_timeout_s,
            )
            if token
            else None
        )
        self._openapi = orjson.dumps(openapi_document(admin=self.admin is not None))
        self._ready = False

    def _admin_changed(self) -> None:
        # this replica sees an admin change at once; the others at their next revision poll (< 1 s)
        if self.keys is not None:
            self.keys.clear()

    # -- lifespan ---------------------------------------------------------------------------------------

    async def startup(self) -> None:
        if self.store is None:
            engine = await asyncio.to_thread(open_identity_db, self.cfg.identity.db)
            self.store = IdentityStore(engine, set(self.cfg.tiers), self.cfg.default_tier)
        self.keys = KeyCache(self.store, self.cfg.identity.revocation_poll_s, self.cfg.identity.stale_after_s)
        await self.keys.start()
        if self.cfg.intel is not None and self.intel is None:
            # intel blocklists: first load now (a store that cannot be read fails the startup), then
            # refreshed in the background every refresh_s
            self.intel = await asyncio.to_thread(IntelGate, self.cfg.intel)
            await self.intel.start()
        if self.risk is not None:
            await self.risk.start()
        if self.otel is not None:
            await self.otel.start()
        if self.cfg.links is not None and self.links is None:
            self.links = await asyncio.to_thread(LinkGate, self.cfg.links)
            await self.links.start()
        rep = self.audit.open()
        if rep is not None and rep.recovered:
            self.metrics.audit_recovered.inc(rep.recovered)
        self.client = make_client(self.cfg.upstream)
        self._ready = True
        logging.getLogger("distillguard.gateway").info(
            "gateway ready",
            extra={
                "upstream": self.cfg.upstream.url,
                "audit": str(self.audit.path) if self.audit.path else None,
                "recovered": rep.recovered if rep else 0,
            },
        )

    async def shutdown(self) -> None:
        self._ready = False
        if self.keys is not None:
            await self.keys.stop()
        if self.intel is not None:
            await self.intel.stop()
            self.intel = None
        if self.risk is not None:
            await self.risk.stop()
        if self.otel is not None:
            await self.otel.stop()
        if self.links is not None:
            await self.links.stop()
            self.links = None
        if self.geo is not None:
            self.geo.close()
        if self.client is not None:
            await self.client.close()
        aclose = getattr(self.limiter, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        self.audit.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as e:
                    await send({"type": "lifespan.startup.failed", "message": f"{e.__class__.__name__}: {e}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- dispatch ---------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return  # websockets: not served (uvicorn closes the connection)
        path: str = scope["path"]
        method: str = scope["method"]
        if path in PROXIED:
            if method != "POST":
                await self._send_error(
                    send, GatewayError(405, f"{path} takes POST", code="method_not_allowed")
                )
                return
            await self._proxy(scope, receive, send, path)
        elif path == "/v1/models" or path.startswith("/v1/models/"):
            await self._models(scope, send, path)
        elif path == "/healthz":
            await self._health(send)
        elif path == "/metrics":
            body, ctype = self.metrics.render()
            await _respond(send, 200, body, [(b"content-type", ctype.encode())])
        elif path == "/openapi.json":
            await _respond(send, 200, self._openapi, _JSON)
        elif self.admin is not None and (path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")):
            await self.admin(scope, receive, send)
        else:
            await self._send_error(
                send, GatewayError(404, f"Unknown path {path!r}.", "invalid_request_error", "unknown_url")
            )

    async def _send_error(
        self, send: Send, e: GatewayError, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        hs = [*_JSON, *((k.encode(), v.encode()) for k, v in e.headers.items()), *(extra or [])]
        await _respond(send, e.status, e.body(), hs)

    async def _health(self, send: Send) -> None:
        keys_ok = self.keys is not None and time.monotonic() - self.keys._last_ok < self.keys.stale_after_s
        ok = self._ready and keys_ok
        body = {"status": "ok" if ok else "degraded", "ready": self._ready, "key_revisions_fresh": keys_ok}
        await _respond(send, 200 if ok else 503, orjson.dumps(body), _JSON)

    def _client_ip(self, scope: Scope) -> str | None:
        peer = scope.get("client")
        ip = peer[0] if peer else None
        if not self._trusted or ip is None:
            return ip
        chain = [ip]
        xff = _header(scope, b"x-forwarded-for")
        if xff:
            chain = [*[h.strip() for h in xff.split(",") if h.strip()], ip]
        # The client is the rightmost address not ours: anything left of it is the client's say-so.
        for hop in reversed(chain):
            try:
                addr = ipaddress.ip_address(hop)
            except ValueError:
                return hop if hop is ip else ip
            if not any(addr in n for n in self._trusted):
                return str(addr)
        return chain[0]

    # -- /v1/models -------------------------------------------------------------------------------------

    async def _models(self, scope: Scope, send: Send, path: str) -> None:
        assert self.keys is not None and self.client is not None
        rid = "req_" + secrets.token_hex(12)
        rh = [(b"x-request-id", rid.encode())]
        status = 200
        try:
            key = await self.keys.resolve(_header(scope, b"authorization"))
            tier = self._tier(key)
            model = path.removeprefix("/v1/models").strip("/")
            if model and not tier.allows_model(model):
                raise GatewayError(
                    404,
                    f"The model '{model}' does not exist or you do not have access to it.",
                    "invalid_request_error",
                    "model_not_found",
                    "model",
                )
            try:
                resp = await self.client.request(
                    # the decoded path re-quoted: a model id with CR/LF or non-ASCII (`%0d%0a`) must not
                    # reach the upstream's request line raw (header injection; a 500 found by schemathesis)
                    self.client.head(
                        "GET",
                        "/models" + ("/" + quote(model, safe="/:@") if model else ""),
                        self._up_json,
                        None,
                    )
                )
                try:
                    up_status = resp.status
                    body = await resp.read()
                    retry_after = resp.headers.get("retry-after")
                finally:
                    resp.close()
            except UPSTREAM_ERRORS as e:
                raise transport_error(e) from e
            if up_status != 200:
                err = status_error(up_status, body, retry_after)
                if err is not None:
                    raise err
                status = up_status
                await _respond(send, status, body, [*_JSON, *rh])
                return
            if not model:
                # List only what this tier may call: a model it cannot use is not advertised.
                obj = orjson.loads(body)
                if isinstance(obj, dict) and isinstance(obj.get("data"), list):
                    obj["data"] = [
                        m for m in obj["data"] if isinstance(m, dict) and tier.allows_model(str(m.get("id")))
                    ]
                    body = orjson.dumps(obj)
            await _respond(send, 200, body, [*_JSON, *rh])
        except GatewayError as e:
            status = e.status
            self.metrics.refusals.labels(e.code or e.type).inc()
            await self._send_error(send, e, rh)
        except orjson.JSONDecodeError:
            status = 502
            await self._send_error(
                send,
                GatewayError(
                    502, "The upstream returned invalid JSON.", "upstream_error", "upstream_invalid_json"
                ),
                rh,
            )
        finally:
            self.metrics.requests.labels("/v1/models", str(status)).inc()

    def _tier(self, key: ResolvedKey) -> TierConfig:
        tier = self.cfg.tiers.get(key.tier)
        if tier is None:
            raise GatewayError(
                403,
                f"Your account's tier {key.tier!r} is not configured on this gateway.",
                "permission_denied",
                "tier_not_configured",
            )
        return tier

    def _up_headers(self, accept: str | None = None) -> dict[str, str]:
        h = {"content-type": "application/json", "accept-encoding": "identity"}
        if accept:
            h["accept"] = accept
        if self._upstream_auth:
            h["authorization"] = self._upstream_auth.decode()
        return h

    @functools.cached_property
    def _up_heads(self) -> dict[tuple[str, bool], bytes]:
        # request heads per (route, stream), built once, less the content-length and the blank line
        assert self.client is not None
        return {
            (p, sse): self.client.head(
                "POST", p.removeprefix("/v1"), self._up_sse if sse else self._up_json, None
            )[:-2]
            for p in PROXIED
            for sse in (False, True)
        }

    @functools.cached_property
    def _up_json(self) -> dict[str, str]:
        return self._up_headers("application/json")

    @functools.cached_property
    def _up_sse(self) -> dict[str, str]:
        return self._up_headers("text/event-stream")

    # -- proxied routes ---------------------------------------------------------------------------------

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.cfg.server.max_body_bytes
        cl = _header(scope, b"content-length")
        if cl is not None:
            if not cl.isdigit():
                raise bad_request("Content-Length is not a number", code="invalid_content_length")
            if int(cl) > limit:
                raise GatewayError(
                    413,
                    f"Request body of {int(cl)} bytes exceeds the limit of {limit} bytes.",
                    code="request_too_large",
                )
        return await receive_body(receive, limit, self.cfg.server.body_timeout_s)

    async def _proxy(self, scope: Scope, receive: Receive, send: Send, endpoint: str) -> None:
        st = _State()
        xid = "req_" + secrets.token_hex(12)
        rec: dict[str, Any] = {
            "exchange_id": xid,
            "ts": datetime.now(UTC),
            "account_id": "anonymous",
            "endpoint": endpoint,
            "model": "unknown",
            "client_ip": self._client_ip(scope),
            "user_agent": _header(scope, b"user-agent"),
            "attributes": {},
        }
        geo = self.geo.lookup(rec["client_ip"]) if self.geo is not None else None
        if geo is not None:
            record_geo(rec, geo)  # country, ASN and hosting/VPN flags, on admitted and refused records
        rh = [(b"x-request-id", xid.encode())]
        self.metrics.in_flight.inc()
        decision: DecisionLike | None = None
        acc = ResponseAccumulator(endpoint)
        try:
            # 1. read and parse: a refusal here is recorded by its final record alone
            parsed: dict[str, Any] | None = None
            try:
                raw = await self._read_body(scope, receive)
                parsed = _parse(raw)
                check_shape(endpoint, parsed)
            except GatewayError as e:
                if parsed is not None:
                    rec.update(request_record(endpoint, parsed))
                await self._refuse(send, st, rec, e, rh)
                return
            body = parsed
            rec.update(request_record(endpoint, body))
            # 2. write-ahead intent: from here on the exchange is in the log exactly once
            try:
                await self.audit.begin(xid, rec)
            except AuditUnavailable as e:
                await self._send_error(
                    send,
                    GatewayError(
                        503, f"{e}; refusing unlogged traffic.", "service_unavailable", "audit_unavailable"
                    ),
                    rh,
                )
                st.status = 503
                return
            # 3. identity, tier, limits
            try:
                assert self.keys is not None
                key = await self.keys.resolve(_header(scope, b"authorization"))
                rec["account_id"], rec["org_id"], rec["api_key_id"] = key.account_id, key.org_id, key.key_id
                self.audit.amend(
                    xid, {"account_id": key.account_id, "org_id": key.org_id, "api_key_id": key.key_id}
                )
                tier = self._tier(key)
                rec["attributes"]["tier"] = key.tier
                # jurisdiction (geo.py): denied countries, the tier's allowed countries, hosting/VPN
                if geo is not None and self.geo is not None:
                    refusal = self.geo.jurisdiction_error(geo, key.tier, tier)
                    if refusal is not None:
                        raise refusal
                # intel blocklists (intel.py): matches go into the record's attributes; a blocking one
                # refuses (403) or throttles (429) per the configured action
                if self.intel is not None:
                    refusal = self.intel.check(rec)
                    if refusal is not None:
                        raise refusal
                enforce_tier(key.tier, tier, endpoint, body)
                # online risk (risk.py): the account's latest verdict (a dict read) refuses, or
                # changes the body sent upstream, or marks the response for stripping; recorded always
                if self.risk is not None:
                    rd = self.risk.decide(key.account_id, endpoint, body, rec)
                    if rd.refusal is not None:
                        raise rd.refusal
                    if rd.body_changed:
                        raw = orjson.dumps(body)
                    st.strip_reasoning = rd.strip_reasoning
                if self.watermark is not None:
                    st.watermark = self.watermark.prepare(endpoint, key.account_id, body, rec)
                    if st.watermark.body_changed:
                        raw = orjson.dumps(body)
                est = estimate_tokens(endpoint, body, len(raw), tier, self.cfg)
                descs = descriptors(key, tier, rec["client_ip"])
                if self.links is not None:
                    # linked identities: one more budget per campaign the account is linked into
                    link = self.links.descriptors(key.account_id, tier.quotas.get("link"))
                    if link:
                        rec["attributes"]["link.campaigns"] = ",".join(d.id for d in link)
                        descs.extend(link)
                decision = await self.limiter.admit(descs, est)
                if getattr(decision, "degraded", False):
                    # the limiter's backend was down and the outage policy decided, not a count
                    rec["attributes"]["limits.degraded"] = "fail_open" if decision.allowed else "fail_closed"
                if not decision.allowed:
                    d = decision
                    decision = None  # nothing reserved: nothing to reconcile
                    raise refuse_limit(
                        d.reason, d.retry_after, dict(d.headers), getattr(d, "oversize", False)
                    )
            except GatewayError as e:
                await self._refuse(send, st, rec, e, rh)
                return
            rh.extend((k.encode(), str(v).encode()) for k, v in decision.headers.items())
            # 4-5. forward and relay, cancelled if the client goes away
            await self._forward_watched(scope, receive, send, endpoint, body, raw, rec, rh, st, acc)
        except ClientGone:
            st.status = 499
        except Exception as e:
            # A bug, or an audit write that failed: the exchange still gets its final record now, not only
            # at the next restart's WAL recovery; uvicorn then answers 500 (or cuts a started stream).
            st.status, st.reason = 500, "internal_error"
            if not st.recorded:
                with contextlib.suppress(Exception):
                    msg = f"gateway error ({e.__class__.__name__})"
                    await self._finish(st, rec, acc, 500, msg, "internal_error")
            raise
        finally:
            self.metrics.in_flight.dec()
            if decision is not None:
                await self._reconcile(decision, acc, rec)
                # online risk: a served exchange is queued for background learning and scoring
                if self.risk is not None and st.status == 200:
                    self.risk.observe(rec)
            self._observe(endpoint, st, rec)
            if self.otel is not None and "status" in rec:  # a final record was written (or attempted)
                self.otel.observe(rec)

    async def _reconcile(self, decision: DecisionLike, acc: ResponseAccumulator, rec: dict[str, Any]) -> None:
        used = acc.total_tokens()
        if used is None:
            # No usage reported (failed or cut short): count what was relayed, ~4 characters a token.
            text = rec.get("response_text") or ""
            used = len(text) // 4 if text else 0
        try:
            await self.limiter.reconcile(decision, used)
        except Exception as e:  # a limiter failure must not turn a served answer into an error
            logging.getLogger("distillguard.gateway").warning(
                "limiter reconcile failed", extra={"error": e.__class__.__name__}
            )

    def _observe(self, endpoint: str, st: _State, rec: dict[str, Any]) -> None:
        total = time.perf_counter() - st.t0
        self.metrics.exchange(
            endpoint, st.status, st.upstream_s if st.t_fwd else None, max(0.0, total - st.upstream_s)
        )
        if self.cfg.server.access_log and log.isEnabledFor(logging.INFO):  # no dict built to be dropped
            log.info(
                "exchange",
                extra={
                    "request_id": rec["exchange_id"],
                    "route": endpoint,
                    "status": st.status,
                    "account_id": rec.get("account_id"),
                    "api_key_id": rec.get("api_key_id"),
                    "model": rec.get("model"),
                    "client_ip": rec.get("client_ip"),
                    "reason": st.reason,
                    "ms": round(total * 1000, 3),
                    "upstream_ms": round(st.upstream_s * 1000, 3) if st.t_fwd else None,
                },
            )

    async def _refuse(
        self, send: Send, st: _State, rec: dict[str, Any], e: GatewayError, rh: list[tuple[bytes, bytes]]
    ) -> None:
        st.status, st.reason = e.status, e.reason
        self.metrics.refusals.labels(e.code or e.type).inc()
        rec.update((k, v) for k, v in e.record.items() if v is not None)  # e.g. who held a revoked key
        rec["status"] = e.status
        rec["error"] = e.message
        rec["attributes"]["refusal"] = e.reason
        rec["latency_ms"] = (time.perf_counter() - st.t0) * 1000
        with contextlib.suppress(AuditUnavailable):  # the refusal goes out anyway: nothing was served
            await self.audit.end(rec["exchange_id"], rec)
        await self._send_error(send, e, rh)

    async def _finish(
        self,
        st: _State,
        rec: dict[str, Any],
        acc: ResponseAccumulator,
        status: int,
        error: str | None = None,
        outcome: str | None = None,
    ) -> None:
        """Write the final record (before the caller sends the last byte)."""
        if st.recorded:
            return
        st.recorded = True
        st.status = status
        rec.update(acc.fields())
        rec["status"] = status
        if error:
            rec["error"] = error
        now = time.perf_counter()
        rec["latency_ms"] = (now - st.t0) * 1000
        a = rec["attributes"]
        if st.t_fwd:
            a["upstream_ms"] = f"{st.upstream_s * 1000:.3f}"
        if outcome:
            a["outcome"] = outcome
        if acc.choices > 1:
            a["choices"] = str(acc.choices)
        await self.audit.end(rec["exchange_id"], rec)

    async def _forward_watched(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        endpoint: str,
        body: dict[str, Any],
        raw: bytes,
        rec: dict[str, Any],
        rh: list[tuple[bytes, bytes]],
        st: _State,
        acc: ResponseAccumulator,
    ) -> None:
        me = asyncio.current_task()
        assert me is not None

        async def watch() -> None:
            # After the body, the only message left is http.disconnect: the client went away.
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    break
            if not st.finishing:
                st.disconnected = True
                me.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await self._forward(send, endpoint, body, raw, rec, rh, st, acc)
        except asyncio.CancelledError:
            if not st.disconnected:
                raise
            me.uncancel()
            st.t_up_done = st.t_up_done or time.perf_counter()
            if st.t_fwd:
                st.upstream_s = st.t_up_done - st.t_fwd
            st.reason = "client_disconnected"
            with contextlib.suppress(AuditUnavailable):
                await self._finish(
                    st, rec, acc, 499, "client disconnected; upstream call cancelled", "client_disconnected"
                )
        finally:
            st.finishing = True
            watcher.cancel()

    async def _forward(
        self,
        send: Send,
        endpoint: str,
        body: dict[str, Any],
        raw: bytes,
        rec: dict[str, Any],
        rh: list[tuple[bytes, bytes]],
        st: _State,
        acc: ResponseAccumulator,
    ) -> None:
        assert self.client is not None
        stream = body.get("stream") is True and endpoint != "/v1/embeddings"
        hide_usage = False
        content = raw
        if stream and endpoint != "/v1/responses":
            so = body.get("stream_options") or {}
            if not so.get("include_usage"):
                # We need the real usage; the client did not ask for it, so its chunk is not relayed.
                body = {**body, "stream_options": {**so, "include_usage": True}}
                content = orjson.dumps(body)
                hide_usage = True
        st.t_fwd = time.perf_counter()
        try:
            head = self._up_heads[(endpoint, stream)]
            if st.watermark is not None and st.watermark.header:
                head += st.watermark.header  # the account's watermark argument, as a header too
            head += b"content-length: %d\r\n\r\n" % len(content)
            resp = await self.client.request(head, content)
        except UPSTREAM_ERRORS as e:
            st.t_up_done = time.perf_counter()
            st.upstream_s = st.t_up_done - st.t_fwd
            await self._upstream_failed(send, st, rec, acc, transport_error(e), rh)
            return
        try:
            ctype = resp.headers.get("content-type", "")
            if stream and resp.status == 200 and ctype.startswith("text/event-stream"):
                await self._relay_sse(send, resp, endpoint, rec, rh, st, acc, hide_usage)
                return
            try:
                data = await resp.read()
            except UPSTREAM_ERRORS as e:
                st.t_up_done = time.perf_counter()
                st.upstream_s = st.t_up_done - st.t_fwd
                await self._upstream_failed(send, st, rec, acc, transport_error(e), rh)
                return
            st.t_up_done = time.perf_counter()
            st.upstream_s = st.t_up_done - st.t_fwd
            if resp.status >= 400:
                err = status_error(resp.status, data, resp.headers.get("retry-after"))
                if err is not None:
                    await self._upstream_failed(send, st, rec, acc, err, rh)
                    return
                # A client error the upstream explained (unknown model, bad parameter): relayed as it is.
                st.reason = "upstream_4xx"
                await self._finish(st, rec, acc, resp.status, _short(data), "upstream_4xx")
                st.finishing = True
                await _respond(send, resp.status, data, [*_JSON, *rh])
                return
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                await self._upstream_failed(
                    send,
                    st,
                    rec,
                    acc,
                    GatewayError(
                        502, "The upstream returned invalid JSON.", "upstream_error", "upstream_invalid_json"
                    ),
                    rh,
                )
                return
            marker = st.watermark.marker if st.watermark is not None else None
            if marker is not None and marker.mark_json(obj):
                data = orjson.dumps(obj)  # the client gets, and the audit records, the marked text
            acc.feed_json(obj)
            await self._finish(st, rec, acc, 200)
            st.finishing = True
            if st.strip_reasoning:  # online risk: reasoning removed from what the client gets
                obj = orjson.loads(data)
                if strip_json(endpoint, obj):
                    data = orjson.dumps(obj)
            await _respond(send, 200, data, [*_JSON, *rh])
        finally:
            # a response read to its end is already back in the pool; one cut short (cancelled by the
            # client's disconnect, failed) has its connection closed, so the upstream sees the cancel
            resp.close()

    async def _upstream_failed(
        self,
        send: Send,
        st: _State,
        rec: dict[str, Any],
        acc: ResponseAccumulator,
        e: GatewayError,
        rh: list[tuple[bytes, bytes]],
    ) -> None:
        st.reason = e.code
        self.metrics.refusals.labels(e.code or e.type).inc()
        await self._finish(st, rec, acc, e.status, e.message, e.code)
        st.finishing = True
        await self._send_error(send, e, rh)

    async def _relay_sse(
        self,
        send: Send,
        resp: UpstreamResponse,
        endpoint: str,
        rec: dict[str, Any],
        rh: list[tuple[bytes, bytes]],
        st: _State,
        acc: ResponseAccumulator,
        hide_usage: bool,
    ) -> None:
        if self.cfg.audit.durable_first_byte:
            # the intent durable before the client sees a byte (otherwise only written: kill -9 safe,
            # and the final record is durable before the last byte either way)
            await self.audit.sync()
        await send({"type": "http.response.start", "status": 200, "headers": [*_SSE, *rh]})
        held = b""  # the terminal event, sent after the final record is durable
        buf = b""
        error: str | None = None
        responses_api = endpoint == "/v1/responses"
        marker = st.watermark.marker if st.watermark is not None else None

        def feed(chunk: bytes) -> list[bytes]:
            """The complete events of `buf + chunk` to relay now (terminal ones go to `held`)."""
            nonlocal buf, held, error
            buf += chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk
            out: list[bytes] = []
            while True:
                i = buf.find(b"\n\n")
                if i < 0:
                    return out
                event, buf = buf[: i + 2], buf[i + 2 :]
                data = _event_data(event)
                if data is None:
                    out.append(event)  # comments, keep-alives: relayed
                    continue
                if data == b"[DONE]":
                    if marker is not None:  # text a streamer still held for a choice with no finish
                        for extra in marker.flush_events():
                            acc.feed_event(extra)
                            out.append(b"data: " + orjson.dumps(extra) + b"\n\n")
                    held += event
                    continue
                try:
                    obj = orjson.loads(data)
                except orjson.JSONDecodeError:
                    out.append(event)
                    continue
                if marker is not None and marker.mark_event(obj):
                    event = b"data: " + orjson.dumps(obj) + b"\n\n"
                acc.feed_event(obj)
                if isinstance(obj, dict):
                    if isinstance(obj.get("error"), dict):
                        error = str(obj["error"].get("message", "upstream error in stream"))[:500]
                    if hide_usage and obj.get("usage") and not obj.get("choices"):
                        continue
                    if st.strip_reasoning:  # online risk: reasoning deltas and events removed
                        drop, changed = strip_event(endpoint, obj)
                        if drop:
                            continue
                        if changed:
                            event = b"data: " + orjson.dumps(obj) + b"\n\n"
                    if responses_api and any(t in data for t in _TERMINAL):
                        held += event
                        continue
                out.append(event)

        try:
            async for chunk in resp.chunks():
                out = feed(chunk)
                if out:
                    await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
        except UPSTREAM_ERRORS as e:
            st.t_up_done = time.perf_counter()
            st.upstream_s = st.t_up_done - st.t_fwd
            err = transport_error(e)
            st.reason = err.code
            self.metrics.refusals.labels(err.code or err.type).inc()
            await self._finish(st, rec, acc, 200, f"stream broken: {err.message}", err.code)
            st.finishing = True
            # The status line is sent: the SDKs raise on an `error` event inside the stream.
            ev = b"data: " + error_body(err.message, err.type, err.code) + b"\n\n"
            await send({"type": "http.response.body", "body": ev, "more_body": False})
            return
        st.t_up_done = time.perf_counter()
        st.upstream_s = st.t_up_done - st.t_fwd
        if not held and error is None:
            # No `[DONE]` / terminal event: the upstream went away mid-stream. A body delimited by the
            # connection's end reads the same whether the upstream finished or died (no error is
            # reported), so the client gets an error event rather than a silently short answer.
            err = GatewayError(
                502,
                "The upstream closed the stream before its end (no [DONE] or terminal event).",
                "upstream_error",
                "upstream_reset",
            )
            st.reason = err.code
            self.metrics.refusals.labels(err.code).inc()
            await self._finish(st, rec, acc, 200, f"stream broken: {err.message}", err.code)
            st.finishing = True
            tail = buf.rstrip(b"\n") + b"\n\n" if buf.strip() else b""
            ev = b"data: " + error_body(err.message, err.type, err.code) + b"\n\n"
            await send({"type": "http.response.body", "body": tail + ev, "more_body": False})
            return
        if buf.strip():
            held = buf + held  # an unterminated last event: relay it as it came
        await self._finish(st, rec, acc, 200, error, "stream_error" if error else None)
        st.finishing = True
        await send({"type": "http.response.body", "body": held, "more_body": False})


def _short(data: bytes) -> str:
    return data[:500].decode("utf-8", "replace")


def _event_data(event: bytes) -> bytes | None:
    """The `data:` payload of one SSE event (lines joined), None when it has no data line."""
    parts = [ln[5:].lstrip(b" ") for ln in event.split(b"\n") if ln.startswith(b"data:")]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else b"\n".join(parts)


def _parse(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise bad_request("Request body is empty; expected a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise bad_request(f"Request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request(
            f"Request body must be a JSON object, got a JSON {type(body).__name__}.", code="invalid_json"
        )
    return body


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
