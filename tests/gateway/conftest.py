"""Fixtures: a mock upstream and an in-process gateway in front of it, with keys per tier."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from distillguard.gateway.app import Gateway
from distillguard.gateway.config import GatewayConfig
from distillguard.gateway.identity import IdentityStore, open_identity_db

from .mock_upstream import MockUpstream, serve_in_thread


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
