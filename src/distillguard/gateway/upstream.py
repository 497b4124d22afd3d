"""The one upstream: a pooled httpx client, and the mapping of its failures to OpenAI-style errors.

Mapping (the status decides the SDK's exception class, the message says what happened upstream):

* upstream 4xx with a body: passed through as it is (already OpenAI-shaped when the upstream is), except
  401/403, which mean the *gateway's* upstream credentials were refused: 502, not the client's fault;
* upstream 429: passed through with its Retry-After (the upstream's own capacity);
* upstream 5xx: 502 `upstream_error` (503 stays 503: overloaded), message quoting the upstream's;
* time-outs: 504 `upstream_timeout`; refused or reset connections: 502 `upstream_unavailable` /
  `upstream_reset`.
"""

from __future__ import annotations

import httpx
import orjson

from distillguard.gateway.config import UpstreamConfig
from distillguard.gateway.errors import GatewayError


def make_client(cfg: UpstreamConfig, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=cfg.url,
        timeout=httpx.Timeout(
            connect=cfg.connect_timeout, read=cfg.read_timeout, write=cfg.write_timeout, pool=cfg.pool_timeout
        ),
        limits=httpx.Limits(max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_keepalive),
        transport=transport,
        # The client's own environment (proxies, .netrc) must not change where or how we forward.
        trust_env=False,
        follow_redirects=False,
    )


def _upstream_message(body: bytes) -> str:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip() or "(empty body)"
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:500]
        if isinstance(err, str):
            return err[:500]
        if isinstance(obj.get("detail"), str):
            return obj["detail"][:500]
    return body[:200].decode("utf-8", "replace")


def status_error(status: int, body: bytes, retry_after: str | None) -> GatewayError | None:
    """The error to send for an upstream non-2xx response; None means pass its body through unchanged."""
    msg = _upstream_message(body)
    if status in (401, 403):
        return GatewayError(
            502,
            f"The upstream refused the gateway's credentials ({status}: {msg}).",
            "upstream_error",
            "upstream_auth",
            reason="upstream_auth",
        )
    if status == 429:
        h = {"retry-after": retry_after} if retry_after else {}
        return GatewayError(
            429, f"The upstream is rate limiting: {msg}", "requests", "upstream_rate_limited", headers=h
        )
    if status == 503:
        return GatewayError(
            503, f"The upstream is unavailable: {msg}", "upstream_error", "upstream_unavailable"
        )
    if status >= 500:
        return GatewayError(
            502, f"The upstream failed with status {status}: {msg}", "upstream_error", "upstream_error"
        )
    return None


def transport_error(exc: httpx.HTTPError) -> GatewayError:
    if isinstance(exc, httpx.TimeoutException):
        what = {
            httpx.ConnectTimeout: "connecting to",
            httpx.ReadTimeout: "waiting for",
            httpx.WriteTimeout: "sending to",
            httpx.PoolTimeout: "a free connection to",
        }.get(type(exc), "")
        return GatewayError(
            504, f"Timed out {what} the upstream.".replace("  ", " "), "upstream_error", "upstream_timeout"
        )
    if isinstance(exc, httpx.ConnectError):
        return GatewayError(
            502, "Could not connect to the upstream.", "upstream_error", "upstream_unavailable"
        )
    return GatewayError(
        502,
        f"The upstream connection failed ({exc.__class__.__name__}: the upstream closed or reset it).",
        "upstream_error",
        "upstream_reset",
    )
