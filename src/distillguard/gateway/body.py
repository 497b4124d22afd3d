"""Reading a request body under a size limit: one reader for the proxied routes and the admin API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from distillguard.gateway.errors import GatewayError

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class ClientGone(Exception):
    """The client disconnected (while sending its body, or while we waited on the upstream)."""


async def receive_body(receive: Receive, limit: int, timeout_s: float | None = None) -> bytes:
    """The whole body, refused with a 413 as soon as it passes `limit` bytes (never read past it).

    With `timeout_s`, a body not complete by then is refused with a 408: a body trickled in (slowloris)
    would otherwise hold a connection and an in-flight slot for ever.
    """
    if timeout_s is None:
        return await _receive(receive, limit)
    try:
        async with asyncio.timeout(timeout_s):
            return await _receive(receive, limit)
    except TimeoutError:
        raise GatewayError(
            408, f"Request body not received within {timeout_s:g} s.", code="request_timeout"
        ) from None


async def _receive(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone
        b = msg.get("body", b"")
        if b:
            size += len(b)
            if size > limit:
                raise GatewayError(
                    413, f"Request body exceeds the limit of {limit} bytes.", code="request_too_large"
                )
            chunks.append(b)
        if not msg.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
