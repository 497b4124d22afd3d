"""Online-risk state: in-process against Redis, side by side on the same exchanges (issue 4, item 6).

    python benchmarks/risk_state.py                           # 5,000 exchanges, 50 accounts, batches of 100
    python benchmarks/risk_state.py --redis redis://host:6379/0 --exchanges 20000 --accounts 200

Both backends run off the request path (the gateway's background worker); this measures what that
worker pays: `learn` per exchange (memory: the scorer's deque; Redis: one pipelined round trip per batch,
one Lua script per account in it) and `score` per account (the same batch SQL; Redis also reads the
window back). Prints a JSON summary with the Redis/memory ratio of each.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from redis import Redis

from distillguard.exchange import Exchange
from distillguard.gateway.config import RiskConfig
from distillguard.gateway.risk_state import MemoryRiskState, RedisRiskState, RiskState

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def exchanges(n: int, accounts: int) -> list[Exchange]:
    return [
        Exchange(
            exchange_id=f"x{i}",
            ts=T0 + timedelta(seconds=i),
            account_id=f"acct_{i % accounts}",
            model="big-model",
            system_prompt="You are a helpful assistant. Think step by step.",
            messages=[
                {"role": "user", "content": f"Task {i}: how many clips did Natalia sell to {i % 97} friends?"}
            ],
            max_tokens=1024,
            response_text="Step 1. Step 2. The answer is 42." * 4,
            prompt_tokens=40,
            completion_tokens=120,
            latency_ms=500.0,
        )
        for i in range(n)
    ]


def measure(state: RiskState, exs: list[Exchange], batch: int, scores: int) -> dict[str, float]:
    t = time.perf_counter()
    for i in range(0, len(exs), batch):
        state.learn(exs[i : i + batch], now=0.0)
        state.due(now=0.0)
    learn_s = time.perf_counter() - t
    accs = sorted({e.account_id for e in exs})[:scores]
    state.score(accs[0])  # warm-up: DuckDB's first query plans and loads
    t = time.perf_counter()
    for a in accs:
        state.score(a)
    score_s = time.perf_counter() - t
    return {
        "learn_us_per_exchange": learn_s / len(exs) * 1e6,
        "score_ms_per_account": score_s / len(accs) * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--exchanges", type=int, default=5000)
    ap.add_argument("--accounts", type=int, default=50)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--scores", type=int, default=20)
    a = ap.parse_args()
    exs = exchanges(a.exchanges, a.accounts)
    common: dict[str, Any] = {"rescore_every": 10**9, "window": 2000}
    mem = MemoryRiskState(RiskConfig(**common))
    prefix = f"dgbench:risk:{uuid.uuid4().hex[:8]}:"
    red = RedisRiskState(RiskConfig(state="redis", redis_url=a.redis, key_prefix=prefix, **common))
    try:
        m = measure(mem, exs, a.batch, a.scores)
        r = measure(red, exs, a.batch, a.scores)
    finally:
        mem.close()
        red.close()
        c = Redis.from_url(a.redis)
        keys = list(c.scan_iter(match=prefix + "*", count=1000))
        if keys:
            c.delete(*keys)
        c.close()
    out = {
        "exchanges": a.exchanges,
        "accounts": a.accounts,
        "batch": a.batch,
        "memory": m,
        "redis": r,
        "ratio_redis_over_memory": {k: r[k] / m[k] for k in m},
    }
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
