"""Rate limiter bars (issue 4): exactness across processes sharing Redis, and admissions per second.

    python benchmarks/limits.py                         # 4 processes x 250 clients, 100k TPM, 10 s each phase
    python benchmarks/limits.py --seconds 70            # long enough for the window to slide
    python benchmarks/limits.py --redis redis://host:6379/0 --procs 8
    python benchmarks/limits.py --skip-redis            # the in-process backend only
    python benchmarks/limits.py --seconds 75 --skip-throughput   # exactness while the window slides

Phases:
1. memory: one process, `admit` + `reconcile` on 3 descriptors (key, account, link) over 1,000 keys with
   room to spare (the allowed path), then 1,000 concurrent coroutines on one 100k TPM key (exactness).
2. redis exactness: N OS processes x M concurrent clients on ONE key with a TPM limit; refused clients
   retry at once; admitted ones reconcile with a real usage between 1/4 of and the whole reservation.
   The most tokens charged in any 60 s window (by Redis server time) must not exceed the limit by more
   than one reservation.
3. redis throughput: the same load with a limit that never binds (every call admitted and reconciled).

Prints a JSON summary; exits 1 when exactness fails.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from typing import Any

import orjson

from distillguard.gateway.limits import Descriptor, MemoryLimiter
from distillguard.gateway.limits.loadcheck import LoadSpec, exactness, run


def memory_phase(seconds: float) -> dict[str, Any]:
    lim = MemoryLimiter()
    rng = random.Random(0)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(1_000):
            i = rng.randrange(1_000)
            descs = [
                Descriptor("key", f"k{i}", rpm=10**9, tpm=10**12),
                Descriptor("account", f"a{i % 100}", tpm=10**12, tpd=10**13),
                Descriptor("link", f"c{i % 10}", tpm=10**12),
            ]
            d = lim.admit_sync(descs, 1_000)
            lim.reconcile_sync(d, 700)
            n += 1
    rate = n / (time.perf_counter() - t0)

    async def burst() -> tuple[int, int]:
        hot = MemoryLimiter()
        desc = [Descriptor("key", "hot", tpm=100_000)]
        sizes = [rng.randint(100, 2_000) for _ in range(1_000)]
        ds = await asyncio.gather(*(hot.admit(desc, s) for s in sizes))
        return sum(s for s, d in zip(sizes, ds, strict=True) if d.allowed), max(sizes)

    admitted, biggest = asyncio.run(burst())
    return {
        "admits_per_s": round(rate),
        "note": "admit+reconcile pairs, 3 descriptors / 5 windows each, one process",
        "burst_admitted_tokens": admitted,
        "burst_limit": 100_000,
        "burst_ok": admitted <= 100_000 + biggest,
    }


def redis_phase(args: argparse.Namespace, tpm: int) -> dict[str, Any]:
    spec = LoadSpec(
        args.redis,
        prefix=f"dgbench:{uuid.uuid4().hex[:8]}:",
        tpm=tpm,
        procs=args.procs,
        clients=args.clients,
        seconds=args.seconds,
        reconcile=True,
    )
    res = run(spec)
    ex = exactness(res.grants, tpm)
    _cleanup(args.redis, spec.prefix)
    return {
        "procs": spec.procs,
        "clients_per_proc": spec.clients,
        "seconds": round(res.elapsed_s, 2),
        "calls": res.calls,
        "admitted": res.admitted,
        "refused": res.refused,
        "degraded": res.degraded,
        "calls_per_s": round(res.calls_per_s),
        "admitted_per_s": round(res.admitted / res.elapsed_s) if res.elapsed_s else 0,
        "limit_tpm": tpm,
        "max_tokens_in_any_window": ex.max_window_tokens,
        "bound": ex.bound,
        "max_reservation": ex.max_reservation,
        "exact": ex.ok,
    }


def _cleanup(url: str, prefix: str) -> None:
    from redis import Redis

    r = Redis.from_url(url)
    keys = list(r.scan_iter(match=prefix + "*", count=1000))
    if keys:
        r.delete(*keys)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--clients", type=int, default=250)
    ap.add_argument("--tpm", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--skip-redis", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true", help="redis: the exactness phase only")
    args = ap.parse_args()

    out: dict[str, Any] = {"memory": memory_phase(min(args.seconds, 5.0))}
    ok = bool(out["memory"]["burst_ok"])
    if not args.skip_redis:
        out["redis_exactness"] = redis_phase(args, args.tpm)
        ok = ok and out["redis_exactness"]["exact"] and out["redis_exactness"]["degraded"] == 0
        if not args.skip_throughput:
            out["redis_throughput"] = redis_phase(args, 10**15)
            ok = ok and out["redis_throughput"]["degraded"] == 0
    out["pass"] = ok
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
