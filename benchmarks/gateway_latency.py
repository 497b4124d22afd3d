"""Added latency of the gateway, one client on loopback: direct to the mock upstream vs through it.

    .venv/bin/python benchmarks/gateway_latency.py [--n 2000] [--sync per_request|background|off]

Starts the test suite's mock upstream and a gateway (identity, tiers, the no-op limiter hook, audit with
WAL in the given `audit.sync` mode, default the gateway's, access log on) as separate processes, then times sequential requests from one keep-alive
httpx client: plain chat (full response) and streamed chat (time to the first byte). Reports P50/P99 of
each path and the difference. A quick single-target check; the issue's overhead bar (every step on, LiteLLM
side by side, 50 clients, two workers) is measured by `gateway_overhead.py`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.gateway.mock_upstream import free_port  # noqa: E402


def _wait(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def _time(client: httpx.Client, url: str, headers: dict[str, str], n: int, stream: bool) -> list[float]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "How fast is this gateway?"}]}
    if stream:
        body["stream"] = True
    out = []
    for i in range(n + n // 10):
        t0 = time.perf_counter()
        if stream:
            with client.stream("POST", url, json=body, headers=headers) as r:
                it = r.iter_raw()
                next(it)
                dt = time.perf_counter() - t0
                for _ in it:
                    pass
        else:
            r = client.post(url, json=body, headers=headers)
            r.read()
            dt = time.perf_counter() - t0
        assert r.status_code == 200, r.text
        if i >= n // 10:  # warm-up excluded
            out.append(dt * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument(
        "--sync", choices=["per_request", "background", "off"], help="audit.sync (default: its default)."
    )
    ap.add_argument("--no-fsync", action="store_true", help="Same as --sync off.")
    ap.add_argument("--no-audit", action="store_true", help="Audit off (to attribute the overhead).")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dg-gw-bench-"))
    up_port, gw_port = free_port(), free_port()
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    mock = subprocess.Popen(
        [
            py,
            "-c",
            "import uvicorn; from tests.gateway.mock_upstream import MockUpstream; "
            f"uvicorn.run(MockUpstream(), host='127.0.0.1', port={up_port}, log_level='warning', access_log=False)",
        ],
        env=env,
    )
    cfg = tmp / "gateway.toml"
    sync = "off" if args.no_fsync else args.sync
    cfg.write_text(
        f'[upstream]\nurl = "http://127.0.0.1:{up_port}/v1"\n[server]\nport = {gw_port}\n'
        f'[identity]\ndb = "{tmp / "gw.db"}"\n[audit]\npath = "{tmp / "audit.jsonl"}"\n'
        + (f'sync = "{sync}"\n' if sync else "")
        + f"enabled = {'false' if args.no_audit else 'true'}\n"
    )
    from distillguard.gateway.identity import IdentityStore, open_identity_db

    store = IdentityStore(
        open_identity_db(tmp / "gw.db"), {"unverified", "verified", "enterprise"}, "unverified"
    )
    store.create_account("bench", account_id="bench")
    _, secret = store.create_key("bench")
    store.engine.dispose()
    gw = subprocess.Popen(
        [py, "-m", "distillguard.gateway.cli", "serve", "--config", str(cfg)],
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        _wait(f"http://127.0.0.1:{up_port}/v1/models")
        _wait(f"http://127.0.0.1:{gw_port}/healthz")
        h = {"authorization": f"Bearer {secret}"}
        with httpx.Client(timeout=10) as c:
            for stream in (False, True):
                d = _time(c, f"http://127.0.0.1:{up_port}/v1/chat/completions", h, args.n, stream)
                g = _time(c, f"http://127.0.0.1:{gw_port}/v1/chat/completions", h, args.n, stream)
                what = "stream, first byte" if stream else "chat, full response"
                print(
                    f"{what}: direct P50 {_pct(d, 50):.3f} ms P99 {_pct(d, 99):.3f} ms | "
                    f"gateway P50 {_pct(g, 50):.3f} ms P99 {_pct(g, 99):.3f} ms | "
                    f"added P50 {_pct(g, 50) - _pct(d, 50):.3f} ms P99 {_pct(g, 99) - _pct(d, 99):.3f} ms"
                )
    finally:
        gw.terminate()
        mock.terminate()
        gw.wait()
        mock.wait()


if __name__ == "__main__":
    main()
