"""Two gateway workers: /metrics counts the whole gateway, whichever worker answers the scrape."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from distillguard.gateway.identity import IdentityStore, open_identity_db

from .mock_upstream import MockUpstream, free_port, serve_in_thread

ROOT = Path(__file__).resolve().parents[2]


def _total(metrics: str) -> float:
    """Sum of distillguard_gateway_requests_total over the chat route and status 200."""
    pat = re.compile(
        r'^distillguard_gateway_requests_total\{route="/v1/chat/completions",status="200"\} (\S+)$'
    )
    return sum(float(m.group(1)) for line in metrics.splitlines() if (m := pat.match(line)))


def test_two_workers_share_their_metrics(tmp_path: Path) -> None:
    port = free_port()
    with serve_in_thread(MockUpstream()) as up:
        cfg = tmp_path / "gateway.toml"
        cfg.write_text(
            f'[upstream]\nurl = "{up}/v1"\n[server]\nport = {port}\naccess_log = false\n'
            f'[identity]\ndb = "{tmp_path / "gw.db"}"\n[audit]\npath = "{tmp_path / "audit.jsonl"}"\nfsync = false\n'
        )
        store = IdentityStore(
            open_identity_db(str(tmp_path / "gw.db")), {"unverified", "verified", "enterprise"}, "verified"
        )
        store.create_account("m", account_id="acct_m", tier="verified")
        _, secret = store.create_key("acct_m")
        store.engine.dispose()
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env["PYTHONPATH"] = str(ROOT / "src")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distillguard.gateway.cli",
                "serve",
                "--config",
                str(cfg),
                "--workers",
                "2",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            ready = 0
            while ready < 4 and time.monotonic() < deadline:  # several answers: both workers are up
                try:
                    ready += httpx.get(base + "/healthz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    time.sleep(0.2)
            assert ready >= 4, "gateway workers did not come up"
            # both workers take an audit slot of their own at startup
            while not (tmp_path / "audit.1.jsonl").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "count me"}]}
            n = 60

            def one(_: int) -> int:
                # a connection per request, so the two workers' accept loops share them
                r = httpx.post(
                    base + "/v1/chat/completions",
                    json=body,
                    headers={"authorization": f"Bearer {secret}"},
                    timeout=10,
                )
                return r.status_code

            with ThreadPoolExecutor(8) as ex:
                assert list(ex.map(one, range(n))) == [200] * n
            per_worker = [
                len((tmp_path / f).read_bytes().splitlines()) for f in ("audit.jsonl", "audit.1.jsonl")
            ]
            assert sum(per_worker) == n
            assert min(per_worker) > 0, f"all requests went to one worker {per_worker}: nothing to sum"
            # every scrape (fresh connections: either worker answers) sees all n, not one worker's share
            scrapes = [_total(httpx.get(base + "/metrics", timeout=5).text) for _ in range(6)]
            assert scrapes == [float(n)] * 6
        finally:
            proc.terminate()
            proc.wait(timeout=30)
