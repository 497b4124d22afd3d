"""Typed settings for the limiter (the `[limits]` table of the gateway's config) and the factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from distillguard.gateway.limits.memory import MemoryLimiter
from distillguard.gateway.limits.model import Limiter


class LimitsConfig(BaseModel):
    """Which backend keeps the windows, and what to do while Redis is down.

    `fail_open` defaults to true (admit while Redis is unreachable), as Envoy's rate limit filter does:
    a Redis outage should not take the API down; set it false where over-use is worse than refusal.
    For Redis Cluster, put a hash tag in the prefix (`{dg}:rl:`) so that one admission's keys share a
    slot and the script stays atomic.
    """

    model_config = ConfigDict(extra="forbid")
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    fail_open: bool = True
    key_prefix: str = "dg:rl:"
    buckets_per_window: int = Field(default=60, ge=1, le=3600)
    connect_timeout_s: float = Field(default=0.5, gt=0)
    timeout_s: float = Field(default=0.5, gt=0)
    retry_interval_s: float = Field(default=1.0, ge=0)  # how often to probe Redis while it is down
    max_connections: int | None = Field(default=64, ge=1)  # per process; None: unbounded
    pool_timeout_s: float = Field(default=2.0, gt=0)  # wait for a free connection before the policy decides

    @field_validator("redis_url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        return v


def build_limiter(cfg: LimitsConfig, *, hook: Callable[[str], None] | None = None) -> Limiter:
    """The configured backend. `hook` receives backend events (Redis only), e.g. for a metrics counter."""
    if cfg.backend == "memory":
        return MemoryLimiter(buckets_per_window=cfg.buckets_per_window)
    # imported here so that the memory backend works without the redis package
    from distillguard.gateway.limits.redis_backend import RedisLimiter

    return RedisLimiter(
        cfg.redis_url,
        prefix=cfg.key_prefix,
        fail_open=cfg.fail_open,
        buckets_per_window=cfg.buckets_per_window,
        connect_timeout_s=cfg.connect_timeout_s,
        timeout_s=cfg.timeout_s,
        retry_interval_s=cfg.retry_interval_s,
        max_connections=cfg.max_connections,
        pool_timeout_s=cfg.pool_timeout_s,
        hook=hook,
    )
