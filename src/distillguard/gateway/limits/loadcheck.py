"""The exactness bar as a reusable check: N OS processes, each with many concurrent clients, on one key.

Every client loops until the deadline: admit a random reservation on one `key` descriptor with a TPM
limit, and, when admitted, optionally reconcile it with a random real usage no larger than the
reservation (as prompt + max_tokens is an upper bound). Each process returns what it was granted with
the Redis server time of each grant; `exactness` then slides a window of W over all grants and reports
the most tokens admitted in any W, which must not exceed the limit by more than one reservation.
Used by the tests (small) and by `benchmarks/limits.py` (the issue's size).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import time
from dataclasses import dataclass, field
from typing import Any

from distillguard.gateway.limits.model import WINDOWS_MS, Descriptor


@dataclass
class LoadSpec:
    """One run: where, how many processes and clients, for how long, and the request sizes."""

    redis_url: str
    prefix: str
    key_id: str = "bench"
    tpm: int = 100_000
    procs: int = 4
    clients: int = 250
    seconds: float = 5.0
    min_tokens: int = 100
    max_tokens: int = 2_000
    reconcile: bool = True
    seed: int = 0
    max_connections: int | None = 64


@dataclass
class LoadResult:
    """Merged over processes. `grants` holds (server ms, reserved, charged) for every admission."""

    calls: int = 0
    admitted: int = 0
    refused: int = 0
    degraded: int = 0
    elapsed_s: float = 0.0
    grants: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.elapsed_s if self.elapsed_s else 0.0


@dataclass
class Exactness:
    """The most tokens admitted in any window, against the bound (limit + one reservation)."""

    limit: int
    max_window_tokens: int
    max_reservation: int
    admitted_tokens: int

    @property
    def bound(self) -> int:
        return self.limit + self.max_reservation

    @property
    def ok(self) -> bool:
        return self.max_window_tokens <= self.bound


def exactness(
    grants: list[tuple[int, int, int]], limit: int, window_ms: int = WINDOWS_MS["tpm"]
) -> Exactness:
    """Slide a window of `window_ms` over the grants (by server time) and keep the largest charged sum."""
    g = sorted(grants)
    best = total = lo = 0
    for hi in range(len(g)):
        total += g[hi][2]
        while g[hi][0] - g[lo][0] >= window_ms:
            total -= g[lo][2]
            lo += 1
        best = max(best, total)
    return Exactness(limit, best, max((x[1] for x in g), default=0), sum(x[2] for x in g))


async def _clients(spec: LoadSpec, index: int, start_at: float) -> dict[str, Any]:
    from distillguard.gateway.limits.redis_backend import RedisLimiter

    # fail-closed, so that an outage shows up as refusals rather than as unmetered grants
    lim = RedisLimiter(
        spec.redis_url, prefix=spec.prefix, fail_open=False, max_connections=spec.max_connections
    )
    desc = [Descriptor("key", spec.key_id, tpm=spec.tpm)]
    out: dict[str, Any] = {"calls": 0, "admitted": 0, "refused": 0, "degraded": 0, "grants": []}
    await lim.admit([Descriptor("key", f"warm-{index}", tpm=1)], 0)  # connect and load the scripts
    await asyncio.sleep(max(0.0, start_at - time.time()))
    deadline = start_at + spec.seconds

    async def client(c: int) -> None:
        rng = random.Random(spec.seed * 1_000_003 + index * 10_007 + c)
        while time.time() < deadline:
            tokens = rng.randint(spec.min_tokens, spec.max_tokens)
            d = await lim.admit(desc, tokens)
            out["calls"] += 1
            if d.degraded:
                out["degraded"] += 1
            if not d.allowed or d.reservation is None:
                out["refused"] += 1
                await asyncio.sleep(0)  # refused clients retry at once: the worst case for exactness
                continue
            out["admitted"] += 1
            actual = rng.randint(tokens // 4, tokens) if spec.reconcile else tokens
            if spec.reconcile:
                await lim.reconcile(d, actual)
            out["grants"].append((d.reservation.at_ms, tokens, actual))

    t0 = time.time()
    await asyncio.gather(*(client(c) for c in range(spec.clients)))
    out["elapsed"] = time.time() - t0
    await lim.aclose()
    return out


def _worker(spec: LoadSpec, index: int, start_at: float, q: Any) -> None:
    try:
        q.put(asyncio.run(_clients(spec, index, start_at)))
    except BaseException as exc:  # report, so that the parent fails instead of waiting
        q.put({"error": repr(exc)})


def run(spec: LoadSpec, startup_s: float = 3.0) -> LoadResult:
    """Start `spec.procs` processes (spawned: no state shared but Redis), wait, merge their results."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    start_at = time.time() + startup_s  # all processes begin together, after their imports
    procs = [ctx.Process(target=_worker, args=(spec, i, start_at, q)) for i in range(spec.procs)]
    for p in procs:
        p.start()
    res = LoadResult()
    errors: list[str] = []
    for _ in procs:
        r = q.get(timeout=startup_s + spec.seconds + 120)
        if "error" in r:
            errors.append(r["error"])
            continue
        res.calls += r["calls"]
        res.admitted += r["admitted"]
        res.refused += r["refused"]
        res.degraded += r["degraded"]
        res.elapsed_s = max(res.elapsed_s, r["elapsed"])
        res.grants += [tuple(g) for g in r["grants"]]
    for p in procs:
        p.join(timeout=30)
    if errors:
        raise RuntimeError(f"load worker failed: {errors}")
    return res
