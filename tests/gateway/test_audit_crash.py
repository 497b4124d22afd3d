"""The audit log across a real `kill -9` of a gateway process, and `distillguard scan` reading it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from openai import OpenAI

from distillguard.gateway.audit import RECOVERED_ATTR

from .conftest import gateway_config, make_store
from .mock_upstream import MockUpstream, free_port, serve_in_thread


@pytest.fixture
def drip_upstream() -> Iterator[tuple[MockUpstream, str]]:
    mock = MockUpstream()
    mock.drip_s = 0.05
    with serve_in_thread(mock) as url:
        yield mock, url


def _start(cfg_path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "distillguard.gateway.cli", "serve", "--config", str(cfg_path)],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),  # noqa: SIM115 - the child owns it
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("gateway did not become healthy")


def _write_config(tmp: Path, up_url: str, port: int, sync: str = "background") -> Path:
    cfg = gateway_config(tmp, up_url)
    p = tmp / "gateway.toml"
    p.write_text(
        f"""
[gateway.upstream]
url = "{cfg.upstream.url}"
api_key = "sk-upstream-secret"
[gateway.server]
port = {port}
access_log = false
[gateway.identity]
db = "{cfg.identity.db}"
[gateway.audit]
path = "{cfg.audit.path}"
hash_chain = true
sync = "{sync}"
[gateway.tiers.verified]
models = ["*"]
[gateway.tiers.unverified]
models = ["*mini*"]
"""
    )
    return p


# kill -9 exactly-once needs only the write() before the answer: it holds whatever the fsync policy
@pytest.mark.parametrize("sync", ["per_request", "background", "off"])
def test_audit_exactly_once_across_kill_9(
    tmp_path: Path, drip_upstream: tuple[MockUpstream, str], sync: str
) -> None:
    mock, up_url = drip_upstream
    port = free_port()
    cfg_path = _write_config(tmp_path, up_url, port, sync)
    cfg = gateway_config(tmp_path, up_url)
    store, secrets_, _ = make_store(tmp_path, cfg)
    store.engine.dispose()
    audit = cfg.audit.path
    log = tmp_path / "gateway.log"
    proc = _start(cfg_path, port, log)
    client = OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=secrets_["verified"], max_retries=0, timeout=10
    )
    ok: set[str] = set()
    failed: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def worker(w: int) -> None:
        i = 0
        while not stop.is_set():
            nonce = f"nonce-{w}-{i}"
            i += 1
            try:
                text = "".join(
                    ch.choices[0].delta.content or ""
                    for ch in client.chat.completions.create(
                        model="mock-drip", messages=[{"role": "user", "content": nonce}], stream=True
                    )
                    if ch.choices
                )
                assert text == "Hello from the mock stream."
                with lock:
                    ok.add(nonce)
            except Exception:
                with lock:
                    failed.add(nonce)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(12)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream for most of the 12 clients
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert ok and failed, "the kill must land while exchanges are in flight"

    proc = _start(cfg_path, port, log)  # recovery runs before it serves
    for i in range(3):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"after-{i}"}])
        ok.add(f"after-{i}")
    proc.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal after its graceful shutdown (the empty WAL below proves it was clean)
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)

    rows = [orjson.loads(x) for x in audit.read_bytes().splitlines()]
    ids = [r["exchange_id"] for r in rows]
    assert len(ids) == len(set(ids)), "an exchange id appears twice"
    by_nonce: dict[str, list[dict[str, object]]] = {}
    for r in rows:
        by_nonce.setdefault(r["messages"][0]["content"], []).append(r)
    assert all(len(v) == 1 for v in by_nonce.values()), "an exchange is recorded twice"
    for n in ok:  # every answer a client received is there, complete
        rec = by_nonce[n][0]
        assert rec.get("status", 200) == 200 and RECOVERED_ATTR not in rec.get("attributes", {})  # type: ignore[operator]
    upstream_saw = {text for _, text in mock.received}
    assert upstream_saw <= set(by_nonce), "a request that reached the upstream is missing"
    recovered = [r for r in rows if RECOVERED_ATTR in r.get("attributes", {})]
    assert recovered, "the in-flight exchanges at the kill are recovered from the WAL"
    assert {r["messages"][0]["content"] for r in recovered} <= failed
    assert all(r["status"] == 500 and r["account_id"] == "acct_v" for r in recovered)
    # every line is accounted for: answered, or cut by the kill
    assert set(by_nonce) <= ok | failed
    # a clean stop leaves an empty WAL (just its checkpoint header)
    wal = Path(str(audit) + ".wal").read_bytes().splitlines()
    assert len(wal) == 1 and b'"wal"' in wal[0]
    # the hash chain survived the crash and the recovery
    from distillguard.gateway.audit import verify_chain

    assert verify_chain(audit)[0]
    # and `distillguard scan` reads the audit log as it is
    from distillguard.detect.pipeline import scan

    _, summary = scan([audit], tmp_path / "scan")
    assert summary["exchanges"] == len(rows) and summary["quarantined"] == 0
