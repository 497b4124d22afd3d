"""A stream's first byte waits for no fsync (unless `durable_first_byte`); its last byte always does."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from distillguard.gateway.app import Gateway

from .conftest import ScriptedLimiter, gateway_config, make_store
from .mock_upstream import MockUpstream, serve_in_thread

SLOW_SYNC_S = 0.6


def _stream_times(url: str, key: str) -> tuple[float, float, bytes]:
    """(seconds to the first body byte, seconds to the end, the body) of one streamed chat."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "first byte"}], "stream": True}
    with httpx.Client(timeout=10) as h:
        t0 = time.perf_counter()
        with h.stream(
            "POST", url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        ) as r:
            assert r.status_code == 200
            it = r.iter_raw()
            first = next(it)
            t_first = time.perf_counter() - t0
            rest = b"".join(it)
        return t_first, time.perf_counter() - t0, first + rest


@pytest.mark.parametrize("durable_first_byte", [False, True])
def test_first_and_last_byte_against_a_slow_disk(
    tmp_path: Path,
    upstream: tuple[MockUpstream, str],
    monkeypatch: pytest.MonkeyPatch,
    durable_first_byte: bool,
) -> None:
    _, up_url = upstream
    cfg = gateway_config(tmp_path, up_url, fsync=True, durable_first_byte=durable_first_byte)
    store, keys, _ = make_store(tmp_path, cfg)
    real = os.fdatasync
    syncs: list[int] = []

    def slow_fdatasync(fd: int) -> None:  # a disk whose every flush takes SLOW_SYNC_S
        syncs.append(fd)
        time.sleep(SLOW_SYNC_S)
        real(fd)

    app = Gateway(cfg, limiter=ScriptedLimiter(), store=store)
    with serve_in_thread(app) as url:
        monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
        t_first, t_end, body = _stream_times(url, keys["verified"])
        monkeypatch.setattr(os, "fdatasync", real)
    assert body.rstrip().endswith(b"data: [DONE]")
    if durable_first_byte:
        assert t_first >= SLOW_SYNC_S  # the intent's fsync came first
    else:
        assert t_first < SLOW_SYNC_S / 2  # nothing waited on the disk
    # the final record is durable before the last byte either way
    assert t_end >= SLOW_SYNC_S
    assert syncs
    rows = [r for r in (tmp_path / "audit.jsonl").read_bytes().splitlines() if r]
    assert len(rows) == 1


def test_json_answer_waits_for_the_audit_file_only(
    tmp_path: Path, upstream: tuple[MockUpstream, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A final record supersedes its intent: the group commit flushes audit.jsonl, not the WAL."""
    _, up_url = upstream
    cfg = gateway_config(tmp_path, up_url, fsync=True)
    store, keys, _ = make_store(tmp_path, cfg)
    real = os.fdatasync
    synced: list[str] = []

    def named(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    app = Gateway(cfg, limiter=ScriptedLimiter(), store=store)
    with serve_in_thread(app) as url:
        monkeypatch.setattr(os, "fdatasync", named)
        body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "json"}]}
        r = httpx.post(
            url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {keys['verified']}"}
        )
        monkeypatch.setattr(os, "fdatasync", real)
    assert r.status_code == 200
    assert synced and all(p.endswith("audit.jsonl") for p in synced), synced
