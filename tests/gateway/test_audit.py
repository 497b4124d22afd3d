"""Audit writer: recovery exactly once, torn tails, slots, WAL rotation, hash chain, odd values."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from distillguard.gateway.audit import RECOVERED_ATTR, AuditLog, SyncMode, final_line, verify_chain

from .conftest import audit_record


def _crash(a: AuditLog) -> None:
    """What kill -9 leaves: files as written, no close-time cleanup, the lock released."""
    a._closed = True
    for fd in (a._fd, a._wal_fd):
        os.close(fd)
    fcntl.flock(a._lock_fd, fcntl.LOCK_UN)
    os.close(a._lock_fd)


def _rows(p: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in p.read_bytes().splitlines()]


@pytest.mark.parametrize("sync", ["per_request", "background", "off"])
def test_recovery_writes_each_unfinished_exchange_once(tmp_path: Path, sync: SyncMode) -> None:
    p = tmp_path / "audit.jsonl"

    async def run() -> None:
        a = AuditLog(p, sync=sync, hash_chain=True)
        a.open()
        await asyncio.gather(a.begin("x1", audit_record("x1")), a.begin("x2", audit_record("x2")))
        a.amend("x2", {"account_id": "acct_2"})
        await a.end("x1", {**audit_record("x1"), "response_text": "done"})
        _crash(a)
        b = AuditLog(p, sync=sync, hash_chain=True)
        assert b.open().recovered == 1
        _crash(b)  # a crash right after recovery recovers nothing twice
        c = AuditLog(p, sync=sync, hash_chain=True)
        assert c.open().recovered == 0
        await c.end("x3", audit_record("x3"))
        c.close()

    asyncio.run(run())
    rows = _rows(p)
    assert [r["exchange_id"] for r in rows] == ["x1", "x2", "x3"]
    assert rows[1]["attributes"][RECOVERED_ATTR] == "1" and rows[1]["status"] == 500
    assert rows[1]["account_id"] == "acct_2"  # the amendment reached the recovered record
    assert verify_chain(p) == (True, 3, None)


def test_torn_last_line_is_cut_and_its_intent_recovers_it(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"

    async def run() -> None:
        a = AuditLog(p, fsync=False)
        a.open()
        await a.end("x1", audit_record("x1"))
        await a.begin("x2", audit_record("x2"))
        _crash(a)
        with open(p, "ab") as f:
            f.write(final_line(audit_record("x2"))[:25])  # the kill cut x2's final record mid-write
        b = AuditLog(p, fsync=False)
        rep = b.open()
        assert rep.torn_bytes == 25 and rep.recovered == 1
        b.close()

    asyncio.run(run())
    assert [r["exchange_id"] for r in _rows(p)] == ["x1", "x2"]


def test_wal_rotation_keeps_open_intents(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"

    async def run() -> None:
        a = AuditLog(p, fsync=False, wal_rotate_bytes=4096)
        a.open()
        await a.begin("open", audit_record("open"))
        for i in range(200):
            await a.begin(f"x{i}", audit_record(f"x{i}", system_prompt="s" * 100))
            await a.end(f"x{i}", audit_record(f"x{i}"))
        assert Path(str(p) + ".wal").stat().st_size < 8192  # rotated, not grown
        _crash(a)
        b = AuditLog(p, fsync=False)
        assert b.open().recovered == 1
        b.close()

    asyncio.run(run())
    rows = _rows(p)
    assert len(rows) == 201 and rows[-1]["exchange_id"] == "open"


def test_two_writers_take_two_slots(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"

    async def run() -> None:
        a, b = AuditLog(p), AuditLog(p)
        a.open()
        b.open()
        assert a.path == p and b.path == tmp_path / "audit.1.jsonl"
        await a.end("a", audit_record("a"))
        await b.end("b", audit_record("b"))
        a.close()
        b.close()

    asyncio.run(run())
    assert _rows(p)[0]["exchange_id"] == "a" and _rows(tmp_path / "audit.1.jsonl")[0]["exchange_id"] == "b"


def test_hash_chain_detects_an_edit(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"

    async def run() -> None:
        a = AuditLog(p, hash_chain=True)
        a.open()
        for i in range(3):
            await a.end(f"x{i}", audit_record(f"x{i}"))
        a.close()

    asyncio.run(run())
    assert verify_chain(p)[0]
    lines = p.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"x1"', b'"x9"')
    p.write_bytes(b"".join(lines))
    assert verify_chain(p) == (False, 3, 3)


def test_values_the_model_rejects_move_to_attributes() -> None:
    line = final_line(audit_record("x", temperature=50.0, top_p=3, n=0))
    obj = orjson.loads(line)
    assert "temperature" not in obj and obj["attributes"]["invalid.temperature"] == "50.0"
    assert obj["attributes"]["invalid.top_p"] == "3" and obj["attributes"]["invalid.n"] == "0"
