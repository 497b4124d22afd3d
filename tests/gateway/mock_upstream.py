"""A small OpenAI-shaped upstream for the gateway tests (raw ASGI, loopback only).

Behaviour by model name: `mock-500` fails with a 500, `mock-slow` waits (and records whether the caller
cancelled), `mock-reset` breaks its stream half-way, `mock-drip` streams slowly (for kill -9 tests);
`mock-think` adds a reasoning trace (`reasoning_content`); anything else answers at once. Every
request's last user text is recorded in `received`, and its whole body in `bodies`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import uvicorn

from distillguard.gateway.body import receive_body

MODELS = [
    "gpt-4o",
    "gpt-4o-mini",
    "mock-mini",
    "mock-500",
    "mock-slow",
    "mock-reset",
    "mock-drip",
    "mock-think",
    "text-embedding-3-small",
]


class MockUpstream:
    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []  # (path, last user text)
        self.bodies: list[dict[str, Any]] = []  # the request bodies, as received
        self.cancelled: list[str] = []
        self.auth: list[str | None] = []
        self.drip_s = 0.05

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        headers = dict(scope["headers"])
        self.auth.append(headers.get(b"authorization", b"").decode() or None)
        if scope["method"] == "GET" and path == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "mock"} for m in MODELS]
            await _json(send, 200, {"object": "list", "data": data})
            return
        raw = await receive_body(receive, 1 << 40)  # any size: the gateway bounds bodies, a mock does not
        body = orjson.loads(raw)
        model = body.get("model", "")
        self.received.append((path, _last_user(path, body)))
        self.bodies.append(body)
        if model == "mock-500":
            await _json(
                send, 500, {"error": {"message": "mock exploded", "type": "server_error", "code": None}}
            )
            return
        if model == "mock-slow":
            waiter = asyncio.ensure_future(receive())
            done, _ = await asyncio.wait({waiter}, timeout=30)
            if waiter in done and waiter.result()["type"] == "http.disconnect":
                self.cancelled.append(_last_user(path, body))
                return
            await _json(send, 200, _chat(model, "slow answer", 1))
            return
        if path == "/v1/embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [
                {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))
            ]
            await _json(
                send,
                200,
                {
                    "object": "list",
                    "data": data,
                    "model": model,
                    "usage": {"prompt_tokens": 5 * len(inputs), "total_tokens": 5 * len(inputs)},
                },
            )
            return
        if path == "/v1/responses":
            await _json(
                send,
                200,
                {
                    "id": "resp_1",
                    "object": "response",
                    "status": "completed",
                    "model": model,
                    "output": [
                        {
                            "type": "message",
                            "role": "assistant",
                            "content": [
                                {"type": "output_text", "text": "responses answer", "annotations": []}
                            ],
                        }
                    ],
                    "usage": {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9},
                },
            )
            return
        n = body.get("n") or 1
        if body.get("stream"):
            await self._stream(send, path, model, body, n)
            return
        if path == "/v1/completions":
            await _json(
                send,
                200,
                {
                    "id": "cmpl-1",
                    "object": "text_completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {"index": 0, "text": "completion answer", "finish_reason": "stop", "logprobs": None}
                    ],
                    "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
                },
            )
            return
        await _json(send, 200, _chat(model, "Hello from mock: " + _last_user(path, body)[:40], n))

    async def _stream(self, send: Any, path: str, model: str, body: dict[str, Any], n: int) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        words = ["Hello", " from", " the", " mock", " stream", "."]
        base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 0, "model": model}

        async def ev(obj: Any) -> None:
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + orjson.dumps(obj) + b"\n\n",
                    "more_body": True,
                }
            )

        await ev({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        for i, w in enumerate(words):
            if model == "mock-drip":
                await asyncio.sleep(self.drip_s)
            if model == "mock-reset" and i == 3:
                raise RuntimeError("mock upstream breaks the stream")
            delta = {"content": w, **({"reasoning_content": "hmm"} if model == "mock-think" else {})}
            await ev({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        await ev({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            await ev(
                {
                    **base,
                    "choices": [],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15},
                }
            )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def _last_user(path: str, body: dict[str, Any]) -> str:
    if path == "/v1/chat/completions":
        for m in reversed(body.get("messages") or []):
            if m.get("role") == "user" and isinstance(m.get("content"), str):
                return str(m["content"])
        return ""
    v = body.get("prompt", body.get("input", ""))
    return v if isinstance(v, str) else orjson.dumps(v).decode()


def _chat(model: str, text: str, n: int) -> dict[str, Any]:
    # The reasoning model writes answers of a harvest's length (the risk tests' harvests ask it for long,
    # step-by-step answers with log-probabilities); the others a few words.
    out = 300 if model == "mock-think" else 5
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": text,
                    **({"reasoning_content": "Let me think."} if model == "mock-think" else {}),
                },
                "finish_reason": "stop",
                "logprobs": None,
            }
            for i in range(n)
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": out, "total_tokens": 11 + out},
    }


async def _json(send: Any, status: int, obj: Any) -> None:
    body = orjson.dumps(obj)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Run an ASGI app under uvicorn on 127.0.0.1 (an OS-chosen port) in a thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False, proxy_headers=False)
    )
    t = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not t.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(timeout=15)
        sock.close()
