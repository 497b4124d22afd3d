"""Abuse: malformed JSON, 100 MB bodies, header injection, oversized heads, slowloris, schemathesis.

The gateway here runs under uvicorn with server.py's own settings (`_uvicorn_kwargs`: the guarded
protocols of protocols.py, proxy headers off), on both HTTP parsers uvicorn offers, so what is tested
is what `distillguard gateway serve` runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from distillguard.gateway.app import Gateway
from distillguard.gateway.body import receive_body
from distillguard.gateway.config import AdminConfig
from distillguard.gateway.openapi import openapi_document
from distillguard.gateway.protocols import GuardedH11Protocol, GuardedHttpToolsProtocol
from distillguard.gateway.server import _uvicorn_kwargs

from .conftest import gateway_config, make_store

ADMIN_TOKEN = "adm-" + "Zr4w" * 8
HEAD_TIMEOUT_S = 0.5
BODY_TIMEOUT_S = 0.5
MAX_HEAD = 8 * 1024
MB = 1 << 20
FUZZ_EXAMPLES = 15  # per operation: 21 operations, about 20 s of CPU


class EchoUpstream:
    """An upstream that answers every request it is sent with a valid OpenAI-shaped body (JSON or SSE),
    whatever the body holds: any 5xx a test sees is then the gateway's own."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, list[tuple[bytes, bytes]]]] = []  # (raw path, headers) received

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.seen.append((scope["raw_path"], list(scope["headers"])))
        raw = await receive_body(receive, 1 << 40)  # any size: the gateway bounds bodies, a mock does not
        if scope["method"] == "GET":
            if scope["path"] == "/v1/models":
                obj: Any = {"object": "list", "data": [{"id": "gpt-4o", "object": "model"}]}
            else:
                obj = {"id": scope["path"].rsplit("/", 1)[-1], "object": "model"}
            return await _json(send, obj)
        body = orjson.loads(raw)
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if body.get("stream") is True and scope["path"] != "/v1/embeddings":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            chunk = {
                "id": "c",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": "hi"}}],
            }
            tail = {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": usage}
            events = (
                b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in (chunk, tail)) + b"data: [DONE]\n\n"
            )
            await send({"type": "http.response.body", "body": events})
            return
        await _json(
            send,
            {
                "id": "x",
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
                ],
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
                "usage": usage,
            },
        )


async def _json(send: Any, obj: Any) -> None:
    b = orjson.dumps(obj)
    hs = [(b"content-type", b"application/json"), (b"content-length", str(len(b)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": hs})
    await send({"type": "http.response.body", "body": b})


@contextmanager
def _serve(app: Any, **config: Any) -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, **config))
    t = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not t.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        t.join(timeout=15)
        sock.close()


@dataclass
class Live:
    url: str
    port: int
    app: Gateway
    key: str  # a verified account's key
    unverified_key: str  # a key on a tier without logprobs and reasoning
    protocol: str

    def raw(self, data: bytes, timeout: float = 3.0) -> bytes:
        """Send raw bytes, return everything the server answers until it closes or goes quiet."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            return _read_until_quiet(s, timeout)

    def audit(self) -> list[dict[str, Any]]:
        p = self.app.cfg.audit.path
        return [orjson.loads(x) for x in p.read_bytes().splitlines()] if p.exists() else []


def _read_until_quiet(s: socket.socket, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    s.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            b = s.recv(65536)
        except TimeoutError:
            if out:
                break
            continue
        except (ConnectionResetError, BrokenPipeError):
            break
        if not b:
            break
        out += b
    return out


def _status(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/1.1 ") else -1


def _body(resp: bytes) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(resp.split(b"\r\n\r\n", 1)[1])
    return out


ECHO = EchoUpstream()


@pytest.fixture(scope="module")
def echo_upstream() -> Iterator[str]:
    with _serve(ECHO, lifespan="on", log_level="warning", access_log=False) as port:
        yield f"http://127.0.0.1:{port}"


@contextmanager
def _live_gateway(tmp: Path, upstream_url: str, protocol: str) -> Iterator[Live]:
    cfg = gateway_config(tmp, upstream_url)
    cfg.server.header_timeout_s = HEAD_TIMEOUT_S
    cfg.server.body_timeout_s = BODY_TIMEOUT_S
    cfg.server.max_header_bytes = MAX_HEAD
    cfg.admin = AdminConfig(token_sha256=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest())
    store, keys, _ = make_store(tmp, cfg)
    app = Gateway(cfg, store=store)  # the configured (in-process) limiter, as served
    kw = _uvicorn_kwargs(cfg)
    for k in ("host", "port"):
        kw.pop(k)
    kw["http"] = GuardedHttpToolsProtocol if protocol == "httptools" else GuardedH11Protocol
    kw["log_level"] = "critical"  # uvicorn warns on every malformed request here
    with _serve(app, **kw) as port:
        yield Live(f"http://127.0.0.1:{port}", port, app, keys["verified"], keys["unverified"], protocol)


@pytest.fixture(scope="module", params=["httptools", "h11"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, echo_upstream: str
) -> Iterator[Live]:
    with _live_gateway(tmp_path_factory.mktemp(f"abuse-{request.param}"), echo_upstream, request.param) as lv:
        yield lv


@pytest.fixture(scope="module")
def fuzz_live(tmp_path_factory: pytest.TempPathFactory, echo_upstream: str) -> Iterator[Live]:
    with _live_gateway(tmp_path_factory.mktemp("fuzz"), echo_upstream, "httptools") as lv:
        yield lv


def _post(live: Live, body: bytes, key: str | None = None, path: bytes = b"/v1/chat/completions") -> bytes:
    key = key or live.key
    head = (
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: close\r\n\r\n"
    )
    return live.raw(head + body)


# -- malformed JSON -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        (b'{"model": "gpt-4o", "messages": [', None, "not valid JSON"),
        (b"", None, "empty"),
        (b"[1, 2, 3]", None, "must be a JSON object, got a JSON list"),
        (b'"just a string"', None, "got a JSON str"),
        (
            b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
            None,
            "not valid JSON",
        ),
        (b'{"model": NaN, "messages": []}', None, "not valid JSON"),
        (b"[" * 2000 + b"]" * 2000, None, "not valid JSON"),  # nesting past the parser's limit
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model", "model parameter"),
        (b'{"model": "gpt-4o", "messages": "hi"}', "messages", "non-empty array"),
        (b'{"model": "gpt-4o", "messages": [{"content": "x"}]}', "messages", "string 'role'"),
        (b'{"model": "gpt-4o", "messages": [{"role": "user"}], "max_tokens": "9"}', "max_tokens", "integer"),
        (
            b'{"model": "gpt-4o", "messages": [{"role": "user"}], "stream_options": 1}',
            "stream_options",
            "object",
        ),
    ],
)
def test_malformed_json_is_a_400_naming_the_problem(
    live: Live, body: bytes, param: str | None, says: str
) -> None:
    resp = _post(live, body)
    assert _status(resp) == 400, resp[:300]
    err = _body(resp)["error"]
    assert says in err["message"] and err["param"] == param, err


def test_refused_requests_with_ill_typed_models_are_still_audited(live: Live) -> None:
    """A model of any JSON type is refused (400) and recorded; it used to fail its whole audit batch."""
    before = len(live.audit())
    resp = _post(live, b'{"model": [null, {"a": 1}], "messages": [{"role": "user"}]}')
    assert _status(resp) == 400 and _body(resp)["error"]["param"] == "model"
    xid = next(ln.split(b": ", 1)[1].decode() for ln in resp.split(b"\r\n") if ln.startswith(b"x-request-id"))
    rec = next(r for r in live.audit()[before:] if r["exchange_id"] == xid)
    assert rec["model"] == "unknown" and rec["attributes"]["invalid.model"] == "[None, {'a': 1}]"
    assert rec["status"] == 400


@pytest.mark.parametrize("value", [b'"5"', b"[1]", b"{}", b"true", b"-1"])
def test_ill_typed_fields_a_tier_rule_reads_are_400s(live: Live, value: bytes) -> None:
    """A tier without logprobs reads `top_logprobs`: a value of the wrong type is the client's error."""
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user"}], "top_logprobs": ' + value + b"}"
    resp = _post(live, body, key=live.unverified_key)
    assert _status(resp) == 400, resp[:300]
    assert _body(resp)["error"]["param"] == "top_logprobs"


# -- 100 MB bodies ------------------------------------------------------------------------------------


def test_100mb_declared_body_is_refused_before_it_is_read(live: Live) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(100 * MB).encode() + b"\r\n\r\n"
    )
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as s:
        s.sendall(head + b'{"model": "gpt-4o", "messages": [' + b" " * 4096)  # 4 KB of the 100 MB
        resp = _read_until_quiet(s, 3.0)
    assert _status(resp) == 413 and time.monotonic() - t0 < 2.0
    assert _body(resp)["error"]["code"] == "request_too_large"
    assert str(100 * MB).encode() in resp  # the message says how big it claimed to be
    # and the gateway still serves
    assert httpx.get(live.url + "/healthz").status_code == 200


def test_100mb_chunked_body_is_cut_off_at_the_limit(live: Live) -> None:
    """No Content-Length: the gateway counts while reading and stops at max_body_bytes (64 KiB here)."""
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"a" * (64 * 1024)
    frame = b"%x\r\n" % len(piece) + piece + b"\r\n"
    sent, resp = 0, b""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as s:
        s.sendall(head)
        s.setblocking(False)
        out = memoryview(b"")
        while sent < 100 * MB and time.monotonic() - t0 < 10:
            r, w, _ = select.select([s], [s] if sent < 100 * MB else [], [], 0.5)
            if r:
                try:
                    b = s.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    b = b""
                resp += b
                if not b or b"}}" in resp:
                    break
            if w:
                if not out:
                    out = memoryview(frame)
                try:
                    n = s.send(out)
                except (BrokenPipeError, ConnectionResetError):
                    break
                except BlockingIOError:
                    continue
                sent += n
                out = out[n:]
        if not resp:
            s.setblocking(True)
            resp = _read_until_quiet(s, 2.0)
    assert _status(resp) == 413, resp[:200]
    assert _body(resp)["error"]["code"] == "request_too_large"
    # it stopped reading: far less than the 100 MB went out (socket buffers take a few MB at most)
    assert sent < 20 * MB, sent
    assert time.monotonic() - t0 < 5.0


# -- header injection ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: one\rX-Injected: two\r\n\r\n",  # bare CR in a value
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: one\x00two\r\n\r\n",  # NUL in a value
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX A: one\r\n\r\n",  # space in a name
        b"GET /heal\rthz HTTP/1.1\r\nHost: x\r\n\r\n",  # CR in the request target
        # request smuggling: two lengths, or a length and chunked
        b"POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 20\r\n\r\nx",
        b"POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    ],
)
def test_malformed_heads_are_rejected_by_the_parser(live: Live, head: bytes) -> None:
    resp = live.raw(head)
    assert _status(resp) == 400, resp[:200]
    assert httpx.get(live.url + "/healthz").status_code == 200


def test_client_headers_do_not_reach_the_response_or_the_record(live: Live) -> None:
    before = len(live.audit())
    r = httpx.post(
        live.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
        headers={
            "authorization": f"Bearer {live.key}",
            "x-forwarded-for": "203.0.113.9, 198.51.100.7",  # forged: no trusted proxies configured
            "x-real-ip": "192.0.2.1",
            "forwarded": "for=192.0.2.2",
            "x-request-id": "attacker-chosen",
        },
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"].startswith("req_")  # the gateway's own id, never the client's
    rec = live.audit()[before:][-1]
    assert rec["client_ip"] == "127.0.0.1"  # the TCP peer, not a forged header


def test_crlf_in_a_model_path_does_not_reach_the_upstream_raw(live: Live) -> None:
    """`/v1/models/{model}` is forwarded: a decoded CR/LF or non-ASCII id must be re-quoted, or it would
    split the upstream request line (header injection) or fail to encode (a 500, found by schemathesis)."""
    n = len(ECHO.seen)
    for quoted, sent in (
        (b"x%0D%0AX-Injected:%201", b"x%0D%0AX-Injected:%201"),
        (b"%F3%80%9B%BF", b"%F3%80%9B%BF"),
    ):
        resp = live.raw(
            b"GET /v1/models/"
            + quoted
            + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + live.key.encode()
            + b"\r\nConnection: close\r\n\r\n"
        )
        assert _status(resp) == 200, resp[:300]
        path, headers = ECHO.seen[-1]
        assert len(ECHO.seen) > n and path.lower() == b"/v1/models/" + sent.lower()
        assert not any(k == b"x-injected" for k, _ in headers)


def test_odd_authorization_values_are_401s(live: Live) -> None:
    for value in (
        b"Bearer dg-\xff\xfe\xfd",
        b"Bearer " + b"dg-" + b"a" * 4000,
        b"Bearer",
        b"dg-abc",
        b"Basic Zm9v",
    ):
        resp = live.raw(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: " + value + b"\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
        assert _status(resp) in (400, 401), (value[:40], resp[:200])
        if _status(resp) == 401:
            assert _body(resp)["error"]["code"] == "invalid_api_key"
    # admin token checks survive odd values too
    resp = live.raw(
        b"GET /admin/v1/orgs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\nConnection: close\r\n\r\n"
    )
    assert _status(resp) == 401


@pytest.mark.parametrize("shape", ["one_big", "many_small"])
def test_oversized_heads_are_refused(live: Live, shape: str) -> None:
    if shape == "one_big":
        extra = b"X-Big: " + b"a" * (4 * MAX_HEAD) + b"\r\n"
    else:
        extra = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 60) for i in range(4 * MAX_HEAD // 64))
    resp = live.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
    assert _status(resp) == 431, resp[:200]
    assert _body(resp)["error"]["code"] == "headers_too_large"
    assert httpx.get(live.url + "/healthz").status_code == 200


# -- slowloris ----------------------------------------------------------------------------------------


def test_slowloris_heads_are_dropped_and_others_are_served(live: Live) -> None:
    """20 clients trickle header lines; each is answered 408 and closed within the head timeout, while a
    well-behaved client keeps being served fast."""
    n = 20
    socks = []
    t_open = time.monotonic()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", live.port), timeout=2)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        s.setblocking(False)
        socks.append(s)
    closed: dict[int, tuple[float, bytes]] = {}
    served: list[float] = []
    try:
        for i in range(60):  # at most ~3 s
            for j, s in enumerate(socks):
                if j in closed:
                    continue
                with_data = b""
                try:
                    with_data = s.recv(4096)
                    if not with_data:
                        closed[j] = (time.monotonic() - t_open, b"")
                        continue
                    closed[j] = (time.monotonic() - t_open, with_data)
                    continue
                except BlockingIOError:
                    pass
                except (ConnectionResetError, BrokenPipeError):
                    closed[j] = (time.monotonic() - t_open, b"")
                    continue
                with suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                    s.send(b"X-Trickle-%d: x\r\n" % i)
            t = time.monotonic()
            assert httpx.get(live.url + "/healthz", timeout=2).status_code == 200
            served.append(time.monotonic() - t)
            if len(closed) == n:
                break
            time.sleep(0.05)
    finally:
        for s in socks:
            s.close()
    assert len(closed) == n, f"{n - len(closed)} slow clients still connected"
    assert max(t for t, _ in closed.values()) < HEAD_TIMEOUT_S + 1.0
    answered = [resp for _, resp in closed.values() if resp]
    assert answered and all(_status(r) == 408 for r in answered)
    assert all(_body(r)["error"]["code"] == "request_timeout" for r in answered if r.endswith(b"}}"))
    assert max(served) < 0.5  # the others were not held up


@pytest.mark.parametrize("path", [b"/v1/chat/completions", b"/admin/v1/orgs"])
def test_slow_body_is_cut_off(live: Live, path: bytes) -> None:
    # the admin API reads its bodies through the same reader, under the same deadline
    key = ADMIN_TOKEN if path.startswith(b"/admin") else live.key
    head = (
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", live.port), timeout=3) as s:
        s.sendall(head)
        s.setblocking(False)
        resp = b""
        for _ in range(40):  # a byte every 50 ms: would take 50 s to finish
            with suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                s.send(b" ")
            with suppress(BlockingIOError):
                resp += s.recv(4096)
            if b"}}" in resp:
                break
            time.sleep(0.05)
    assert _status(resp) == 408, resp[:200]
    assert _body(resp)["error"]["code"] == "request_timeout"
    assert time.monotonic() - t0 < BODY_TIMEOUT_S + 1.0


# -- schemathesis -------------------------------------------------------------------------------------

FUZZ = schemathesis.openapi.from_dict(openapi_document(admin=True))
FUZZ_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@FUZZ.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases every run: a failure here is reproducible
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],
)
def test_schemathesis_finds_no_server_error(case: schemathesis.Case, fuzz_live: Live) -> None:
    """Every documented operation, valid and invalid inputs, with a real key (or the admin token):
    no 5xx, and every answer is one the document declares."""
    token = ADMIN_TOKEN if case.path.startswith("/admin/") else fuzz_live.key
    case.call_and_validate(
        base_url=fuzz_live.url, headers={"authorization": f"Bearer {token}"}, checks=FUZZ_CHECKS, timeout=10
    )
