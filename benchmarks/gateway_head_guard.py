"""Cost of the slowloris guard (gateway/protocols.py): uvicorn's stock protocol vs the guarded one.

One trivial ASGI app, served twice on loopback (stock httptools, guarded httptools); one keep-alive
client sends the same pipelined-free GET sequence to each, alternating rounds so machine noise hits
both alike. Prints requests/s of each and the ratio guarded / stock (1.0 = no cost).

    .venv/bin/python benchmarks/gateway_head_guard.py --requests 3000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import threading
import time
from typing import Any

import uvicorn

from distillguard.gateway.protocols import GuardedHttpToolsProtocol

REQ = b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def serve(protocol: Any) -> tuple[uvicorn.Server, int]:
    sock = socket.socket()
    # accepted connections inherit it: the head and the body go out as two writes, which Nagle plus
    # delayed ACKs would turn into a 40 ms wait per request
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(app, http=protocol, lifespan="off", log_level="warning", access_log=False)
    )
    threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    return server, port


def run(port: int, n: int) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        for _ in range(n):
            s.sendall(REQ)
            buf = b""
            while not buf.endswith(b"ok"):
                buf += s.recv(4096)
        return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    servers = {"stock": serve("httptools"), "guarded": serve(GuardedHttpToolsProtocol)}
    rates: dict[str, list[float]] = {k: [] for k in servers}
    for _, port in servers.values():
        run(port, 200)  # warm-up
    for _ in range(a.rounds):
        for name, (_, port) in servers.items():
            rates[name].append(run(port, a.requests))
    for srv, _ in servers.values():
        srv.should_exit = True
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in med.items():
        print(f"{k:8s} {v:9.0f} req/s (median of {a.rounds})")
    print(f"ratio guarded/stock: {med['guarded'] / med['stock']:.3f}")


if __name__ == "__main__":
    main()
