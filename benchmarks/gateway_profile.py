"""Where one gateway request's CPU goes: microseconds per stage, in-process, no HTTP server in between.

    .venv/bin/python benchmarks/gateway_profile.py [--n 3000] [--sync background] [--cprofile out.prof]

Builds the gateway exactly as `gateway_overhead.py` configures it (key auth, tier quotas on the
in-process limiter, geo, intel blocklists, online risk enforcing, audit with WAL, access log), starts
that benchmark's mock upstream as a process, and drives N sequential chat requests straight into the ASGI
app (`await gateway(scope, receive, send)`), so uvicorn's HTTP parsing is not counted (the overhead
benchmark's `cpu_us_per_request` includes it).

Each stage is timed with the event-loop thread's CPU clock (`time.thread_time`), exclusive of the
stages it calls: auth (key cache), limits (admit + reconcile), geo, intel, risk on the request path
(decide + observe), audit (begin, amend, end, the loop's write batches), the upstream client (request,
read: the loopback socket calls), the record (request_record, response accumulator), observe (metrics and
the access log line); "other" is the rest of the request path (parsing, dispatch, asyncio). Off the
loop, the online-risk worker thread's CPU (learning and re-scoring) and the fsync thread's are shown
per request too: they share the machine's cores with the request path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import psutil
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

import gateway_overhead as bench  # noqa: E402
from distillguard.gateway import app as app_mod  # noqa: E402
from distillguard.gateway.app import Gateway  # noqa: E402
from distillguard.gateway.config import load_gateway_config  # noqa: E402

_MAIN = threading.main_thread()
LATENCY: list[float] = []  # ms per measured request (in-process: no HTTP, no client)


class Stages:
    """Exclusive CPU time per stage on the loop thread (a stack: a nested stage pauses its caller)."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.stack: list[str] = []
        self.mark = time.thread_time()
        self.threads: dict[str, float] = defaultdict(float)  # CPU of helper threads, by what they ran

    def _charge(self) -> None:
        now = time.thread_time()
        self.cpu[self.stack[-1] if self.stack else "other"] += now - self.mark
        self.mark = now

    def enter(self, name: str) -> None:
        self._charge()
        self.stack.append(name)

    def leave(self) -> None:
        self._charge()
        self.stack.pop()

    def wrap_sync(self, obj: Any, attr: str, name: str) -> None:
        fn = getattr(obj, attr)

        @functools.wraps(fn)
        def timed(*a: Any, **k: Any) -> Any:
            if threading.current_thread() is not _MAIN:
                t = time.thread_time()
                try:
                    return fn(*a, **k)
                finally:
                    self.threads[name] += time.thread_time() - t
            self.enter(name)
            try:
                return fn(*a, **k)
            finally:
                self.leave()

        setattr(obj, attr, timed)

    def wrap_async(self, obj: Any, attr: str, name: str) -> None:
        fn = getattr(obj, attr)

        @functools.wraps(fn)
        async def timed(*a: Any, **k: Any) -> Any:
            self.enter(name)
            try:
                return await fn(*a, **k)
            finally:
                self.leave()

        setattr(obj, attr, timed)


def _instrument(gw: Gateway, st: Stages) -> None:
    assert gw.keys is not None and gw.client is not None
    st.wrap_async(gw.keys, "resolve", "auth")
    st.wrap_async(gw.limiter, "admit", "limits")
    st.wrap_async(gw.limiter, "reconcile", "limits")
    if gw.geo is not None:
        st.wrap_sync(gw.geo, "lookup", "geo")
        st.wrap_sync(gw.geo, "jurisdiction_error", "geo")
    if gw.intel is not None:
        st.wrap_sync(gw.intel, "check", "intel")
    if gw.risk is not None:
        st.wrap_sync(gw.risk, "decide", "risk")
        st.wrap_sync(gw.risk, "observe", "risk")
        # the background worker: learning + scoring in a thread (charged to `threads`) or a child process
        # (its CPU is reported apart)
        try:
            from distillguard.gateway import risk_worker

            st.wrap_sync(risk_worker, "learn_and_score", "risk worker thread")
        except ImportError:  # a checkout from before the worker module (scoring in a thread)
            st.wrap_sync(gw.risk, "_learn_and_score", "risk worker thread")
    audit = gw.audit
    st.wrap_async(audit, "begin", "audit")
    st.wrap_async(audit, "end", "audit")
    st.wrap_sync(audit, "amend", "audit")
    st.wrap_sync(audit, "_flush", "audit")
    st.wrap_async(gw.client, "request", "upstream client")
    st.wrap_sync(gw.client, "head", "upstream client")
    upr = app_mod.UpstreamResponse
    st.wrap_async(upr, "read", "upstream client")
    st.wrap_sync(upr, "close", "upstream client")
    st.wrap_sync(gw, "_observe", "observe (metrics, log)")
    st.wrap_sync(app_mod, "request_record", "record")
    st.wrap_sync(app_mod.ResponseAccumulator, "feed_json", "record")
    st.wrap_sync(app_mod.ResponseAccumulator, "fields", "record")


def _scope(token: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
            (b"user-agent", b"dg-bench/1"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }


async def _drive(
    gw: Gateway, token: str, n: int, warm: int, st: Stages | None, prof: Any
) -> tuple[float, float, float]:
    body = bench._request(0, token, False).split(b"\r\n\r\n", 1)[1]
    scope = _scope(token, body)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def one() -> int:
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await never  # the client never disconnects
            return {"type": "http.disconnect"}

        async def send(msg: MutableMapping[str, Any]) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]

        await gw(scope, receive, send)
        return status

    for _ in range(warm):
        assert await one() == 200
    if gw.risk is not None:  # the risk process answered a batch: its start-up is not in the measure
        while gw.risk.applied < warm:
            await asyncio.sleep(0.01)
    if st is not None:
        _instrument(gw, st)
        st.cpu.clear()
        st.mark = time.thread_time()
    if prof is not None:
        prof.enable()
    k0, c0, w0 = _children_cpu(), time.process_time(), time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        s = await one()
        LATENCY.append((time.perf_counter() - t) * 1000)
        if s != 200:
            raise RuntimeError(f"status {s}")
    c1, w1 = time.process_time(), time.perf_counter()
    if prof is not None:
        prof.disable()
    if gw.risk is not None:  # the batches of the last requests, so the child's CPU covers them too
        while gw.risk.applied < gw.risk.learnt or not gw.risk._queue.empty():
            await asyncio.sleep(0.01)
    if gw.risk is not None:
        r = gw.risk
        print(
            f"risk: {r.learnt} learnt, {r.scored} re-scores, {r.score_seconds:.2f} s scoring (wall), "
            f"{r.failures} failures, {r.dropped} dropped"
        )
    return c1 - c0, w1 - w0, _children_cpu() - k0


def _children_cpu() -> float:
    """CPU of this process's children but the mock upstream (the risk worker process)."""
    total = 0.0
    for q in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "gateway_overhead.py" in " ".join(q.cmdline()):
                continue
            c = q.cpu_times()
            total += c.user + c.system
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--warm", type=int, default=300)
    ap.add_argument(
        "--sync",
        default=None,
        help="audit.sync of the gateway (default: the benchmark's config); 'off' sets audit fsync off.",
    )
    ap.add_argument("--no-risk", action="store_true")
    ap.add_argument("--keep", action="store_true", help="Keep the temporary directory (audit log, config).")
    ap.add_argument("--worker", choices=["process", "thread"], help="[risk] worker (default: its default).")
    ap.add_argument(
        "--cprofile", type=Path, help="Write a cProfile of the measured requests (no stage timers)."
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dg-gw-profile-"))
    up_port = bench._free_port()
    mock = bench._spawn(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gateway_overhead.py"),
            "--role",
            "mock",
            "--port",
            str(up_port),
        ],
        {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        tmp / "mock.log",
    )
    try:
        bench._wait_port(up_port, mock, "mock upstream")
        cfg_path = bench._gateway_config(tmp, up_port, bench._free_port())
        text = cfg_path.read_text()
        if args.sync == "off":
            text = _set_audit(text, "fsync = false")
        elif args.sync:
            text = _set_audit(text, f'sync = "{args.sync}"')
        if args.worker:
            text = text.replace("[risk]\nenabled = true", f'[risk]\nenabled = true\nworker = "{args.worker}"')
        if args.no_risk:
            text = text.replace("[risk]\nenabled = true", "[risk]\nenabled = false")
        cfg_path.write_text(text)
        token = bench._gateway_key(tmp)
        cfg = load_gateway_config(cfg_path)

        async def run() -> tuple[Stages | None, float, float, float]:
            gw = Gateway(cfg)
            await gw.startup()
            st = None if args.cprofile else Stages()
            prof = cProfile.Profile() if args.cprofile else None
            try:
                cpu, wall, child = await _drive(gw, token, args.n, args.warm, st, prof)
            finally:
                await gw.shutdown()
            if prof is not None:
                prof.dump_stats(str(args.cprofile))
            return st, cpu, wall, child

        st, cpu, wall, child = uvloop.run(run())
    finally:
        bench._stop(mock)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    n = args.n
    print(
        f"{n} requests: gateway process CPU {cpu / n * 1e6:.0f} us/request, risk worker process "
        f"{child / n * 1e6:.0f} us/request, wall {wall / n * 1e6:.0f} us/request"
    )
    lat = sorted(LATENCY)
    pct = {p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))] for p in (50, 99, 99.9)}
    print("request wall ms (in-process): " + ", ".join(f"P{p:g} {v:.3f}" for p, v in pct.items()))
    if st is None:
        print(f"cProfile written to {args.cprofile}")
        return
    rows: list[tuple[str, float]] = sorted(st.cpu.items(), key=lambda kv: -kv[1])
    loop_total = sum(v for _, v in rows)
    print(f"{'stage (event-loop thread)':<28} {'us/request':>10}")
    for name, v in rows:
        print(f"{name:<28} {v / n * 1e6:>10.1f}")
    print(f"{'= loop thread total':<28} {loop_total / n * 1e6:>10.1f}")
    for name, v in st.threads.items():
        print(f"{name:<28} {v / n * 1e6:>10.1f}")
    print(f"{'(other threads, rest)':<28} {(cpu - loop_total - sum(st.threads.values())) / n * 1e6:>10.1f}")


def _set_audit(text: str, line: str) -> str:
    out = [ln for ln in text.splitlines() if not ln.startswith("fsync = ")]
    i = out.index("[audit]")
    out.insert(i + 1, line)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
