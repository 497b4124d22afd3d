"""Exact request and token rate limits for the gateway, in-process or shared through Redis.

    limiter = build_limiter(LimitsConfig(backend="redis", redis_url="redis://127.0.0.1:6379/0"))
    d = await limiter.admit([Descriptor("key", key_id, rpm=500, tpm=90_000),
                             Descriptor("account", "acme", tpm=200_000, tpd=5_000_000)],
                            tokens=prompt_tokens + max_tokens)
    if not d.allowed: -> 429 with d.headers (x-ratelimit-*, retry-after) and d.reason ("account:acme tpm")
    ... call upstream ...
    await limiter.reconcile(d, usage.total_tokens)   # refund or charge the difference

Algorithm and exactness: `window.py`. Redis specifics and the outage policy: `redis_backend.py`.
"""

from typing import Any

from distillguard.gateway.limits.config import LimitsConfig, build_limiter
from distillguard.gateway.limits.memory import MemoryLimiter
from distillguard.gateway.limits.model import (
    KINDS,
    Charge,
    Decision,
    Descriptor,
    DescriptorLike,
    Limiter,
    Reservation,
    format_duration,
)

__all__ = [
    "KINDS",
    "Charge",
    "Decision",
    "Descriptor",
    "DescriptorLike",
    "Limiter",
    "LimitsConfig",
    "MemoryLimiter",
    "RedisLimiter",
    "Reservation",
    "build_limiter",
    "format_duration",
]


def __getattr__(name: str) -> Any:
    # RedisLimiter is imported on first use, so that the memory backend needs no redis package
    if name == "RedisLimiter":
        from distillguard.gateway.limits.redis_backend import RedisLimiter

        return RedisLimiter
    raise AttributeError(name)
