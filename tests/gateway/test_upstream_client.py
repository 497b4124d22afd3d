"""The gateway's own HTTP/1.1 upstream client against scripted raw-socket servers (loopback only)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from distillguard.gateway.config import UpstreamConfig
from distillguard.gateway.upstream import UpstreamClient, UpstreamError, transport_error

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(r: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await r.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await r.readexactly(length) if length else b""


def _with_server(
    handler: Handler, test: Callable[[UpstreamClient, dict[str, Any]], Awaitable[None]], **cfg: Any
) -> dict[str, Any]:
    seen: dict[str, Any] = {"connections": 0, "heads": [], "closed": 0}

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen["connections"] += 1
        try:
            await handler(r, w)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            seen["closed"] += 1
            w.close()

    async def main() -> None:
        server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient(UpstreamConfig(url=f"http://127.0.0.1:{port}/v1", **cfg))
        try:
            await asyncio.wait_for(test(client, seen), 10)
        finally:
            await client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
    return seen


def _head(client: UpstreamClient, body: bytes = b"") -> bytes:
    return client.head("POST", "/chat/completions", {"content-type": "application/json"}, len(body))


def test_keep_alive_reuses_one_connection_and_reads_every_framing() -> None:
    bodies = [b'{"a":1}', b"hello chunked world", b"last"]

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for i in range(3):
            head, body = await _read_request(r)
            assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") and body == b"{}"
            if i == 1:  # chunked, in pieces
                w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                for part in (b"hello ", b"chunked ", b"world"):
                    w.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    await w.drain()
                w.write(b"0\r\n\r\n")
            else:
                w.write(
                    b"HTTP/1.1 200 OK\r\nX-Thing: Yes\r\ncontent-length: %d\r\n\r\n" % len(bodies[i])
                    + bodies[i]
                )
            await w.drain()

    async def test(client: UpstreamClient, seen: dict[str, Any]) -> None:
        for i in range(3):
            resp = await client.request(_head(client, b"{}"), b"{}")
            assert resp.status == 200
            assert await resp.read() == bodies[i]
            if i == 0:
                assert resp.headers["x-thing"] == "Yes"  # names lower-cased
            resp.close()

    seen = _with_server(handler, test)
    assert seen["connections"] == 1


def test_body_until_close_and_stream_chunks_arrive_as_sent() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        for ev in (b"data: 1\n\n", b"data: 2\n\n"):
            w.write(ev)
            await w.drain()
            await asyncio.sleep(0.05)

    async def test(client: UpstreamClient, seen: dict[str, Any]) -> None:
        resp = await client.request(_head(client))
        got = [c async for c in resp.chunks()]
        resp.close()
        assert b"".join(got) == b"data: 1\n\ndata: 2\n\n"
        assert len(got) == 2  # not buffered into one: each event as it came

    _with_server(handler, test)


def test_reset_mid_body_hands_out_what_came_then_raises() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await w.drain()
        w.transport.abort()

    async def test(client: UpstreamClient, seen: dict[str, Any]) -> None:
        resp = await client.request(_head(client))
        got = b""
        with pytest.raises(UpstreamError) as ei:
            async for c in resp.chunks():
                got += c
        resp.close()
        assert got == b"partial"
        assert transport_error(ei.value).code == "upstream_reset"

    _with_server(handler, test)


def test_silence_past_read_timeout_is_a_504_and_closes_the_connection() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await w.drain()
        await r.read()  # silent until the client goes away

    async def test(client: UpstreamClient, seen: dict[str, Any]) -> None:
        resp = await client.request(_head(client))
        it = resp.chunks()
        assert await anext(it) == b"first"
        t = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamError) as ei:
            await anext(it)
        assert 0.25 <= asyncio.get_running_loop().time() - t < 2
        resp.close()
        err = transport_error(ei.value)
        assert err.status == 504 and "waiting for" in err.message
        await asyncio.sleep(0.1)
        assert seen["closed"] == 1  # the server saw the connection go

    _with_server(handler, test, read_timeout=0.3)


def test_a_response_not_read_to_its_end_closes_its_connection() -> None:
    """What happens when the gateway's client disconnects mid-stream: the upstream must see the cancel."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
            await w.drain()
            await asyncio.sleep(0.3)  # more would follow
            w.write(b"0\r\n\r\n")
            await w.drain()

    async def test(client: UpstreamClient, seen: dict[str, Any]) -> None:
        resp = await client.request(_head(client))
        async for _ in resp.chunks():
            break
        resp.close()
        for _ in range(40):  # the server notices when it next writes (within its 0.3 s pause)
            if seen["closed"]:
                break
            await asyncio.sleep(0.05)
        assert seen["closed"] == 1
        resp = await client.request(_head(client))  # a fresh connection for the next request
        assert await resp.read() == b"abc"
        resp.close()
        assert seen["connections"] == 2

    _with_server(handler, test)


def test_refused_connection_and_pool_exhaustion_are_clear_errors() -> None:
    async def main() -> None:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there
        client = UpstreamClient(UpstreamConfig(url=f"http://127.0.0.1:{port}/v1"))
        with pytest.raises(UpstreamError) as ei:
            await client.request(_head(client))
        assert transport_error(ei.value).code == "upstream_unavailable"
        await client.close()

    asyncio.run(main())

    async def slow(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _read_request(r)
        await asyncio.sleep(1)

    async def test(client: UpstreamClient, seen: dict[str, Any]) -> None:
        first = asyncio.ensure_future(client.request(_head(client)))
        await asyncio.sleep(0.05)
        with pytest.raises(UpstreamError) as ei:
            await client.request(_head(client))  # the one connection is busy
        assert "a free connection" in transport_error(ei.value).message
        first.cancel()

    _with_server(slow, test, max_connections=1, pool_timeout=0.2)
