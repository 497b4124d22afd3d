"""uvicorn's HTTP/1.1 protocols with a deadline and a size limit on the request head (slowloris).

uvicorn times out idle keep-alive connections but not a request head that is still arriving: a client
that sends one header line every few seconds holds its connection (and, multiplied, the server's file
descriptors) for ever, and the httptools parser has no size limit on the head. These subclasses arm a
timer when a request head begins (the connection opens, or the first byte of the next request on a
keep-alive connection) and cancel it when the head is complete; when it fires the client gets a 408 and
the connection is closed. A head over the byte limit gets a 431 and is closed. Both values come from
the gateway's `[server]` config (`header_timeout_s`, `max_header_bytes`), read from the app uvicorn
loaded, so the classes stay importable by name (uvicorn's worker processes pickle the config).

Slow bodies are the app's concern (`server.body_timeout_s` in app.py: 408 when the body is not in).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from distillguard.gateway.errors import error_body

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is optional in uvicorn
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

DEFAULT_HEAD_TIMEOUT_S = 10.0
DEFAULT_MAX_HEAD_BYTES = 32 * 1024

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def _limits(config: Any) -> tuple[float, int]:
    srv = getattr(getattr(getattr(config, "loaded_app", None), "cfg", None), "server", None)
    timeout = getattr(srv, "header_timeout_s", DEFAULT_HEAD_TIMEOUT_S)
    size = getattr(srv, "max_header_bytes", DEFAULT_MAX_HEAD_BYTES)
    return float(timeout), int(size)


def _refuse(transport: asyncio.BaseTransport, status: int, message: str, code: str) -> None:
    """Answer with an OpenAI-style error and close: the head never completed, so no app saw it."""
    assert isinstance(transport, asyncio.WriteTransport)
    if transport.is_closing():
        return
    body = error_body(message, "invalid_request_error", code)
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % (status, _REASONS[status], len(body))
    )
    transport.write(head + body)
    transport.close()


class _HeadGuard:
    """Deadline and byte count of the request head being received (one per connection)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, config: Any) -> None:
        self.loop = loop
        self.timeout_s, self.max_bytes = _limits(config)
        self.timer: asyncio.TimerHandle | None = None
        self.nbytes = 0
        self.transport: asyncio.BaseTransport | None = None
        self.busy: Any = None  # callable: is a response still being sent on this connection?

    def start(self) -> None:
        # keeps the first deadline: a head that trickles in does not push it back
        if self.timer is None:
            self.nbytes = 0
            self.timer = self.loop.call_later(self.timeout_s, self._expired)

    def done(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.nbytes = 0

    def head_bytes(self, data: bytes) -> bool:
        """Count the head bytes in `data` (all of it, or up to the blank line that ends the head) before
        the parser sees them; False, and the connection refused with a 431, once over the limit. Counted
        here rather than in the parser because a whole head in one read completes before any check."""
        ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
        end = min(ends) if ends else -1
        self.nbytes += len(data) if end < 0 else end + 2
        if self.nbytes > self.max_bytes and self.transport is not None:
            self.done()
            _refuse(
                self.transport,
                431,
                f"Request headers exceed the limit of {self.max_bytes} bytes.",
                "headers_too_large",
            )
            return False
        if end >= 0:
            self.nbytes = 0  # the head is complete (the parser confirms it; a pipelined one counts anew)
        return True

    def _expired(self) -> None:
        self.timer = None
        if self.transport is None:
            return
        if self.busy is not None and self.busy():
            # a pipelined head behind a response still streaming: judge it once that response is done
            self.timer = self.loop.call_later(self.timeout_s, self._expired)
            return
        _refuse(
            self.transport,
            408,
            f"Request headers not received within {self.timeout_s:g} s.",
            "request_timeout",
        )


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the request-head deadline and size limit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = _HeadGuard(self.loop, self.config)
        self._guard.busy = lambda: self.cycle is not None and not self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._guard.transport = transport
        self._guard.start()

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.done()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # waiting for a request head
            self._guard.start()  # (part of) it is in: its deadline runs
            if not self._guard.head_bytes(data):
                return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._guard.done()


if HttpToolsProtocol is not None:

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with the request-head deadline and size limit."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._guard = _HeadGuard(self.loop, self.config)
            self._guard.busy = lambda: self.cycle is not None and not self.cycle.response_complete
            self._awaiting_head = True

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._guard.transport = transport
            self._guard.start()

        def connection_lost(self, exc: Exception | None) -> None:
            self._guard.done()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._awaiting_head and not self._guard.head_bytes(data):
                return
            super().data_received(data)

        def on_message_begin(self) -> None:
            self._guard.start()
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._awaiting_head = False
            self._guard.done()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._awaiting_head = True  # the next bytes on this connection begin a new head

    DEFAULT_PROTOCOL: type[asyncio.Protocol] = GuardedHttpToolsProtocol
else:  # pragma: no cover
    DEFAULT_PROTOCOL = GuardedH11Protocol


__all__ = ["DEFAULT_PROTOCOL", "GuardedH11Protocol"]
