"""Audit durability modes: `per_request` answers wait for the fsync, `background` ones only for the write."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from distillguard.gateway.app import Gateway
from distillguard.gateway.audit import AuditLog
from distillguard.gateway.config import AuditConfig, GatewayConfig, GatewayConfigError, load_gateway_config

from .conftest import ScriptedLimiter, audit_record, gateway_config, make_store
from .mock_upstream import MockUpstream

SLOW_SYNC_S = 0.4


def test_sync_modes_and_the_fsync_alias(tmp_path: Path) -> None:
    assert AuditConfig().sync == "background" and AuditConfig().sync_interval_ms == 10
    assert AuditConfig(fsync=True).sync == "per_request"  # what `fsync = true` always meant
    assert AuditConfig(fsync=False).sync == "off"
    assert AuditConfig.model_validate({"fsync": True, "sync": "per_request"}).sync == "per_request"
    p = tmp_path / "gateway.toml"
    p.write_text('[audit]\nfsync = true\nsync = "background"\n')
    with pytest.raises(GatewayConfigError, match="contradicts"):
        load_gateway_config(p)
    p.write_text('[audit]\nsync = "sometimes"\n')
    with pytest.raises(GatewayConfigError, match="sync"):
        load_gateway_config(p)


class _SlowDisk:
    """os.fdatasync that takes SLOW_SYNC_S and records when it was called."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.real = os.fdatasync
        self.lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        with self.lock:
            self.calls.append(time.perf_counter())
        time.sleep(SLOW_SYNC_S)
        self.real(fd)


def _scope(key: str, body: bytes) -> dict[str, Any]:
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
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }


async def _exchange(app: Gateway, key: str, stream: bool, audit: Path, seen: dict[str, Any]) -> None:
    """One request straight into the ASGI app; at the answer's last byte, look at the disk and the clock."""
    body = orjson.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "sync"}], "stream": stream}
    )
    sent = False
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never
        return {"type": "http.disconnect"}

    async def send(msg: MutableMapping[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            seen["status"] = msg["status"]
            seen["xid"] = dict(msg["headers"])[b"x-request-id"].decode()
        elif msg["type"] == "http.response.body" and not msg.get("more_body"):
            # the moment the client could see the whole answer: is its final record in the file yet?
            seen["t_last"] = time.perf_counter()
            ids = [orjson.loads(x)["exchange_id"] for x in audit.read_bytes().splitlines()]
            seen["recorded"] = seen["xid"] in ids
            seen["body"] = msg["body"]

    seen["t0"] = time.perf_counter()
    await app(_scope(key, body), receive, send)


@pytest.mark.parametrize("stream", [False, True])
def test_background_answer_is_written_first_and_not_waiting_for_fsync(
    tmp_path: Path, upstream: tuple[MockUpstream, str], monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    _, up_url = upstream
    cfg = gateway_config(tmp_path, up_url, sync="background", sync_interval_ms=300)
    store, keys, _ = make_store(tmp_path, cfg)
    disk = _SlowDisk()
    seen: dict[str, Any] = {}

    async def run() -> None:
        app = Gateway(cfg, limiter=ScriptedLimiter(), store=store)
        await app.startup()
        try:
            monkeypatch.setattr(os, "fdatasync", disk)
            await _exchange(app, keys["verified"], stream, cfg.audit.path, seen)
            # the group commit follows within the interval (plus the slow flush itself)
            deadline = time.monotonic() + 5
            while not disk.calls and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            await app.shutdown()
            monkeypatch.setattr(os, "fdatasync", disk.real)

    asyncio.run(run())
    assert seen["status"] == 200
    assert seen["recorded"], "the final record must be in the file before the answer's last byte"
    answered = seen["t_last"] - seen["t0"]
    assert answered < SLOW_SYNC_S / 2, answered  # the answer did not wait for the slow disk
    # and no flush had even started when the answer went out: it was written, not yet synced
    assert disk.calls and disk.calls[0] > seen["t_last"]
    assert disk.calls[0] - seen["t_last"] < 0.3 + 1.0  # at most the interval later (slack: busy CI)


def test_per_request_answer_waits_for_fsync(
    tmp_path: Path, upstream: tuple[MockUpstream, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, up_url = upstream
    cfg = gateway_config(tmp_path, up_url, sync="per_request")
    store, keys, _ = make_store(tmp_path, cfg)
    disk = _SlowDisk()
    seen: dict[str, Any] = {}

    async def run() -> None:
        app = Gateway(cfg, limiter=ScriptedLimiter(), store=store)
        await app.startup()
        try:
            monkeypatch.setattr(os, "fdatasync", disk)
            await _exchange(app, keys["verified"], False, cfg.audit.path, seen)
        finally:
            await app.shutdown()
            monkeypatch.setattr(os, "fdatasync", disk.real)

    asyncio.run(run())
    assert seen["status"] == 200 and seen["recorded"]
    assert disk.calls and disk.calls[0] < seen["t_last"]  # flushed before the answer
    assert seen["t_last"] - seen["t0"] >= SLOW_SYNC_S


def test_wal_is_truncated_in_place_without_fsync_when_nothing_is_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sequential traffic empties the WAL every 64 KiB: that must not fsync on the event loop."""
    p = tmp_path / "audit.jsonl"
    fsyncs: list[int] = []
    real = os.fsync

    def counted(fd: int) -> None:
        fsyncs.append(fd)
        real(fd)

    async def run() -> None:
        a = AuditLog(p, sync="per_request")
        a.open()
        monkeypatch.setattr(os, "fsync", counted)
        for i in range(400):  # ~200 KiB of intents: three resets or more
            rec = audit_record(f"x{i}", system_prompt="s" * 400)
            await a.begin(f"x{i}", rec)
            await a.end(f"x{i}", rec)
        monkeypatch.setattr(os, "fsync", real)
        assert fsyncs == []  # group commits use fdatasync in their thread; resets none at all
        wal = Path(str(p) + ".wal").read_bytes()
        assert len(wal) < 64 << 10 and orjson.loads(wal.splitlines()[0])["audit_offset"] > 0
        # a crash now, with one exchange open: recovery still finds it, once
        await a.begin("open", audit_record("open"))
        a._closed = True
        os.close(a._fd)
        os.close(a._wal_fd)
        fcntl.flock(a._lock_fd, fcntl.LOCK_UN)
        os.close(a._lock_fd)
        b = AuditLog(p, sync="per_request")
        assert b.open().recovered == 1
        b.close()

    asyncio.run(run())
    ids = [orjson.loads(x)["exchange_id"] for x in p.read_bytes().splitlines()]
    assert len(ids) == 401 and len(set(ids)) == 401 and ids[-1] == "open"


def test_gateway_config_passes_the_mode(tmp_path: Path) -> None:
    cfg = GatewayConfig.model_validate(
        {"audit": {"path": str(tmp_path / "a.jsonl"), "sync": "background", "sync_interval_ms": 25}}
    )
    app = Gateway(cfg)
    assert isinstance(app.audit, AuditLog)
    assert app.audit.mode == "background" and app.audit.sync_interval_s == 0.025


@pytest.mark.parametrize("promised", [False, True])
def test_rotation_with_open_intents_fsyncs_only_for_promised_intents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, promised: bool
) -> None:
    """Under load some intent is always open, so the WAL is rotated by rename; that costs fsyncs on the
    event loop only when `sync()` (durable_first_byte) promised intents durable."""
    p = tmp_path / "audit.jsonl"
    fsyncs: list[int] = []
    real = os.fsync

    def counted(fd: int) -> None:
        fsyncs.append(fd)
        real(fd)

    async def run() -> None:
        a = AuditLog(p, sync="per_request", wal_rotate_bytes=8192)
        a.open()
        await a.begin("open", audit_record("open"))
        if promised:
            await a.sync()  # what a stream does before its first byte with durable_first_byte
        monkeypatch.setattr(os, "fsync", counted)
        for i in range(100):
            rec = audit_record(f"x{i}", system_prompt="s" * 400)
            await a.begin(f"x{i}", rec)
            await a.end(f"x{i}", rec)
        monkeypatch.setattr(os, "fsync", real)
        wal = Path(str(p) + ".wal").read_bytes()
        assert len(wal) < 16384 and b'"open"' in wal  # rotated, the open intent kept
        await a.end("open", audit_record("open"))
        a.close()

    asyncio.run(run())
    assert bool(fsyncs) is promised
    assert len(p.read_bytes().splitlines()) == 101
