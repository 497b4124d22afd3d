"""Fixtures: a mock upstream and an in-process gateway in front of it, with keys per tier."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis import Redis

from distillguard.gateway.app import Gateway
from distillguard.gateway.config import GatewayConfig
from distillguard.gateway.identity import IdentityStore, open_identity_db

from .mock_upstream import MockUpstream, free_port, serve_in_thread


@dataclass
class Refusal:
    allowed: bool = False
    retry_after: float | None = 0.3
    headers: dict[str, str] = field(
        default_factory=lambda: {
            "x-ratelimit-limit-requests": "1",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "300ms",
            "retry-after-ms": "300",
        }
    )
    reason: str | None = "account:acct_v rpm"


@dataclass
class Allow:
    allowed: bool = True
    retry_after: float | None = 0.0
    headers: dict[str, str] = field(default_factory=lambda: {"x-ratelimit-remaining-requests": "99"})
    reason: str | None = None


class ScriptedLimiter:
    """Refuses the next `refuse` admissions, then allows; records what it was asked."""

    def __init__(self) -> None:
        self.refuse = 0
        self.admits: list[tuple[list[Any], int]] = []
        self.reconciled: list[int] = []

    async def admit(self, descriptors: list[Any], tokens: int) -> Any:
        self.admits.append((descriptors, tokens))
        if self.refuse > 0:
            self.refuse -= 1
            return Refusal()
        return Allow()

    async def reconcile(self, decision: Any, actual_tokens: int) -> None:
        self.reconciled.append(actual_tokens)


def gateway_config(tmp: Path, upstream_url: str, **audit: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "upstream": {"url": upstream_url + "/v1", "api_key": "sk-upstream-secret", "read_timeout": 10},
            "identity": {"db": str(tmp / "gw.db")},
            "audit": {"path": str(tmp / "audit.jsonl"), **audit},
            "server": {"max_body_bytes": 64 * 1024, "access_log": False},
            "tiers": {
                "unverified": {
                    "models": ["*mini*", "mock-*", "text-embedding-*"],
                    "max_tokens": 1000,
                    "quotas": {"account": {"rpm": 60, "tpm": 10000}, "ip": {"rpm": 100}},
                },
                "verified": {"models": ["*"], "logprobs": True, "reasoning": True, "max_n": 4},
            },
        }
    )


@dataclass
class Env:
    url: str
    upstream: MockUpstream
    store: IdentityStore
    limiter: ScriptedLimiter
    app: Gateway
    cfg: GatewayConfig
    keys: dict[str, str]  # tier -> secret
    key_ids: dict[str, str]

    def audit_rows(self) -> list[dict[str, Any]]:
        p = self.cfg.audit.path
        return [orjson.loads(x) for x in p.read_bytes().splitlines()] if p.exists() else []

    def client(self, tier: str = "verified", **kw: Any) -> Any:
        from openai import OpenAI

        kw.setdefault("max_retries", 0)
        return OpenAI(base_url=self.url + "/v1", api_key=self.keys[tier], **kw)


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[MockUpstream, str]]:
    mock = MockUpstream()
    with serve_in_thread(mock) as url:
        yield mock, url


def make_store(tmp: Path, cfg: GatewayConfig) -> tuple[IdentityStore, dict[str, str], dict[str, str]]:
    store = IdentityStore(open_identity_db(cfg.identity.db), set(cfg.tiers), cfg.default_tier)
    org = store.create_org("Acme", tier="verified", org_id="org_acme")
    store.create_account("verified user", org_id=org, account_id="acct_v")
    store.create_account("new user", tier="unverified", account_id="acct_u")
    kv, sv = store.create_key("acct_v", "main")
    ku, su = store.create_key("acct_u")
    return store, {"verified": sv, "unverified": su}, {"verified": kv.id, "unverified": ku.id}


@pytest.fixture
def env(tmp_path: Path, upstream: tuple[MockUpstream, str]) -> Iterator[Env]:
    mock, up_url = upstream
    cfg = gateway_config(tmp_path, up_url)
    store, secrets_, ids = make_store(tmp_path, cfg)
    limiter = ScriptedLimiter()
    app = Gateway(cfg, limiter=limiter, store=store)
    with serve_in_thread(app) as url:
        yield Env(url, mock, store, limiter, app, cfg, secrets_, ids)


# -- Redis: the shared server (keys under a fresh prefix per test) and private ones to stop and start ----
REDIS_URL = os.environ.get("DISTILLGUARD_TEST_REDIS", "redis://127.0.0.1:6379/0")


def unavailable(what: str) -> None:
    """Skip without a service, except under CI (env CI set): there a missing service is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set, so this is a failure, not a skip)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def redis_url() -> str:
    try:
        Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception as exc:
        unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of the test's own; its keys are deleted afterwards."""
    p = f"dgtest:{uuid.uuid4().hex[:12]}:"
    yield p
    r = Redis.from_url(redis_url)
    keys = list(r.scan_iter(match=p + "*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


class PrivateRedis:
    """A redis-server of our own on a loopback port, to stop and start without touching the shared one."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not on PATH")
    srv = PrivateRedis()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def audit_record(xid: str, **kw: Any) -> dict[str, Any]:
    """A minimal gateway record for the audit log tests (the exchange id is also the prompt)."""
    return {
        "exchange_id": xid,
        "ts": datetime(2026, 1, 1, tzinfo=UTC),
        "account_id": "acct",
        "model": "m",
        "messages": [{"role": "user", "content": xid}],
        "attributes": {},
        **kw,
    }
