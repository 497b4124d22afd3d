"""Rate limiter: the algorithm against a brute-force model, exactness, reconcile, headers (in-process)."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from distillguard.gateway.limits import (
    Decision,
    Descriptor,
    Limiter,
    LimitsConfig,
    MemoryLimiter,
    build_limiter,
    format_duration,
)
from distillguard.gateway.limits.model import WINDOWS_MS, plan

T = TypeVar("T")


class Clock:
    """A settable clock in whole milliseconds."""

    def __init__(self, ms: int = 1_000_000) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000

    def advance(self, ms: int) -> None:
        self.ms += ms


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


DESCS = [
    Descriptor("key", "k1", rpm=6, tpm=2_000),
    Descriptor("account", "acme", tpm=3_000, tpd=20_000),
    Descriptor("link", "campaign-7", rpm=9, tpm=2_500),
]


# ---------------------------------------------------------------- a brute-force model of the algorithm


@dataclass
class Model:
    """Every charge kept individually, with its bucket; usage summed from scratch on each call."""

    buckets: int
    entries: dict[str, list[list[int]]] = field(default_factory=dict)  # key -> [[bucket, amount, rid]]

    def g(self, name: str) -> int:
        return -(-WINDOWS_MS[name] // self.buckets)

    def used(self, key: str, name: str, now: int) -> int:
        g, w = self.g(name), WINDOWS_MS[name]
        return sum(a for b, a, _ in self.entries.get(key, []) if (b + 1) * g + w > now)

    def admit(self, descs: list[Descriptor], tokens: int, now: int, rid: int) -> bool:
        slots = plan(descs, tokens, "", self.buckets)
        for s in slots:
            u = self.used(s.key, s.name, now)
            fits = u + s.cost <= s.limit if s.cost > 0 else u < s.limit
            if s.oversize or not fits:
                return False
        for s in slots:
            if s.cost:
                self.entries.setdefault(s.key, []).append([now // s.bucket_ms, s.cost, rid])
        return True

    def reconcile(self, descs: list[Descriptor], reserved: int, actual: int, now: int, rid: int) -> None:
        for s in plan(descs, reserved, "", self.buckets):
            if s.name == "rpm":
                continue
            g, w = self.g(s.name), WINDOWS_MS[s.name]
            if actual < reserved:
                for e in self.entries.get(s.key, []):
                    if e[2] == rid and (e[0] + 1) * g + w > now:
                        e[1] -= min(e[1], reserved - actual)
            elif actual > reserved:
                self.entries.setdefault(s.key, []).append([now // g, actual - reserved, -1])


ops_strategy = st.lists(
    st.one_of(
        st.tuples(
            st.just("admit"),
            st.one_of(st.integers(0, 3_000), st.integers(0, 70_000), st.just(40_000_000)),
            st.sets(st.integers(0, 2), min_size=0, max_size=3),
            st.one_of(st.integers(0, 1_200), st.integers(1_900, 3_100)),
        ),
        st.tuples(st.just("reconcile"), st.integers(0, 10_000), st.integers(0, 1_000), st.integers(0, 1_500)),
    ),
    max_size=60,
)


def replay(
    lim: MemoryLimiter, model: Model | None, clock: Clock, ops: list[tuple[Any, ...]]
) -> list[Decision]:
    """Run ops on the limiter (and the model); returns every decision."""
    admitted: list[tuple[Decision, list[Descriptor], int, int]] = []
    out: list[Decision] = []
    for i, op in enumerate(ops):
        if op[0] == "admit":
            _, dt, which, tokens = op
            clock.advance(dt)
            descs = [DESCS[j] for j in sorted(which)]
            d = lim.admit_sync(descs, tokens)
            out.append(d)
            if model is not None:
                assert d.allowed == model.admit(descs, tokens, clock.ms, i), (i, op)
            if d.allowed:
                admitted.append((d, descs, tokens, i))
        elif admitted:
            _, dt, pick, actual = op
            clock.advance(dt)
            d, descs, tokens, rid = admitted[pick % len(admitted)]
            already = d.reservation is not None and d.reservation.settled
            lim.reconcile_sync(d, actual)
            if model is not None and not already:
                model.reconcile(descs, tokens, actual, clock.ms, rid)
        if model is not None:
            # the running sums agree with the model and with their own buckets
            for key, w in lim._windows.items():
                w.prune(clock.ms)
                assert w.used == model.used(key, key.rsplit(":", 1)[1], clock.ms) == sum(w.buckets.values())
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_strategy, buckets=st.sampled_from([1, 3, 60]))
def test_matches_brute_force_model(ops: list[tuple[Any, ...]], buckets: int) -> None:
    clock = Clock()
    replay(MemoryLimiter(clock=clock, buckets_per_window=buckets), Model(buckets), clock, ops)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 4_000), st.integers(0, 1_000), st.floats(0, 1)), min_size=1, max_size=120
    ),
    buckets=st.sampled_from([1, 2, 60, 600]),
)
def test_no_window_ever_exceeds_the_limit(steps: list[tuple[int, int, float]], buckets: int) -> None:
    """Safety, independent of buckets: in every W-long interval, charged tokens and requests <= limits."""
    clock = Clock()
    lim = MemoryLimiter(clock=clock, buckets_per_window=buckets)
    desc = [Descriptor("account", "a", rpm=7, tpm=2_500)]
    grants: list[tuple[int, int]] = []  # (ms, charged)
    for dt, tokens, frac in steps:
        clock.advance(dt)
        d = lim.admit_sync(desc, tokens)
        if d.allowed:
            actual = int(tokens * frac)  # real usage never above the reservation
            lim.reconcile_sync(d, actual)
            grants.append((clock.ms, actual))
    for i, (t0, _) in enumerate(grants):
        inside = [c for t, c in grants[i:] if t - t0 < 60_000]
        assert sum(inside) <= 2_500
        assert len(inside) <= 7


# ---------------------------------------------------------------- behaviour


def test_reserve_then_refund_on_reconcile() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    desc = [Descriptor("key", "k", tpm=1_000)]
    d = lim.admit_sync(desc, 800)
    assert d.allowed and d.headers["x-ratelimit-remaining-tokens"] == "200"
    assert not lim.admit_sync(desc, 300).allowed
    lim.reconcile_sync(d, 100)  # used 100 of the 800 reserved
    d2 = lim.admit_sync(desc, 900)
    assert d2.allowed and d2.headers["x-ratelimit-remaining-tokens"] == "0"
    lim.reconcile_sync(d, 0)  # a second reconcile of the same decision changes nothing
    assert not lim.admit_sync(desc, 1).allowed


def test_reconcile_charges_usage_beyond_the_reservation() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    desc = [Descriptor("key", "k", tpm=1_000, tpd=5_000)]
    d = lim.admit_sync(desc, 100)
    lim.reconcile_sync(d, 700)
    d2 = lim.admit_sync(desc, 300)
    assert d2.allowed and d2.headers["x-ratelimit-remaining-tokens"] == "0"
    # a zero-token reservation still records where to charge its real usage
    d3 = lim.admit_sync([Descriptor("key", "z", tpm=50)], 0)
    lim.reconcile_sync(d3, 50)
    assert not lim.admit_sync([Descriptor("key", "z", tpm=50)], 0).allowed


def test_all_or_nothing_across_descriptors() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    key = Descriptor("key", "k", rpm=100, tpm=10_000)
    acct = Descriptor("account", "acme", tpm=1_000)
    assert lim.admit_sync([acct], 900).allowed
    d = lim.admit_sync([key, acct], 500)
    assert not d.allowed and d.reason == "account:acme tpm" and d.reservation is None
    # the key was not charged by the refused admission: its full budget is still there
    d = lim.admit_sync([key], 10_000)
    assert d.allowed and d.headers["x-ratelimit-remaining-requests"] == "99"


def test_linked_accounts_share_one_budget() -> None:
    lim = MemoryLimiter(clock=Clock())
    link = Descriptor("link", "campaign-9", tpm=1_000)
    assert lim.admit_sync([Descriptor("account", "a1", tpm=5_000), link], 600).allowed
    d = lim.admit_sync([Descriptor("account", "a2", tpm=5_000), link], 600)
    assert not d.allowed and d.reason == "link:campaign-9 tpm"


def test_sliding_window_and_retry_after() -> None:
    clock = Clock(0)
    lim = MemoryLimiter(clock=clock)
    desc = [Descriptor("ip", "203.0.113.9", rpm=2)]
    assert lim.admit_sync(desc, 0).allowed  # t = 0, bucket [0, 1s)
    clock.advance(30_000)
    assert lim.admit_sync(desc, 0).allowed  # t = 30 s
    clock.advance(10_000)
    d = lim.admit_sync(desc, 0)
    # the first request leaves at 61 s (bucket end + W): 21 s from now
    assert not d.allowed and d.retry_after == 21.0
    assert d.headers["retry-after"] == "21" and d.headers["retry-after-ms"] == "21000"
    assert d.reason == "ip:203.0.113.9 rpm"
    clock.advance(20_999)
    assert not lim.admit_sync(desc, 0).allowed
    clock.advance(1)
    assert lim.admit_sync(desc, 0).allowed


def test_tokens_per_day() -> None:
    clock = Clock(0)
    lim = MemoryLimiter(clock=clock)
    desc = [Descriptor("org", "o", tpm=1_000, tpd=2_500)]
    for _ in range(2):
        assert lim.admit_sync(desc, 1_000).allowed
        clock.advance(61_000)
    d = lim.admit_sync(desc, 1_000)
    assert not d.allowed and d.reason == "org:o tpd"
    assert d.retry_after > 86_000  # the first day's tokens have to leave
    clock.advance(int(d.retry_after * 1000))
    assert lim.admit_sync(desc, 1_000).allowed


def test_oversize_request_is_refused_without_retry_after() -> None:
    lim = MemoryLimiter(clock=Clock())
    d = lim.admit_sync([Descriptor("key", "k", tpm=1_000)], 1_001)
    assert not d.allowed and d.oversize and d.reason == "key:k tpm"
    assert "retry-after" not in d.headers
    d = lim.admit_sync([Descriptor("key", "blocked", rpm=0)], 1)
    assert not d.allowed and d.oversize


def test_headers_show_the_most_constrained_window() -> None:
    lim = MemoryLimiter(clock=Clock(0))
    d = lim.admit_sync(
        [
            Descriptor("key", "k", rpm=100, tpm=50_000),
            Descriptor("account", "a", rpm=10, tpm=60_000, tpd=51_000),
        ],
        1_000,
    )
    assert d.allowed
    assert d.headers == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-requests": "1m1s",
        "x-ratelimit-limit-tokens": "50000",
        "x-ratelimit-remaining-tokens": "49000",
        "x-ratelimit-reset-tokens": "1m1s",
    }
    assert lim.admit_sync([], 10).headers == {}


def test_format_duration() -> None:
    assert format_duration(20) == "20ms"
    assert format_duration(1_000) == "1s"
    assert format_duration(8_640) == "8.64s"
    assert format_duration(360_000) == "6m0s"
    assert format_duration(3_723_500) == "1h2m3.5s"
    assert format_duration(-5) == "0ms"


def test_duplicate_descriptor_counts_once_with_the_smaller_limit() -> None:
    lim = MemoryLimiter(clock=Clock())
    d = lim.admit_sync([Descriptor("key", "k", rpm=5), Descriptor("key", "k", rpm=1)], 0)
    assert d.allowed and d.headers["x-ratelimit-remaining-requests"] == "0"


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown descriptor kind"):
        Descriptor("user", "x")
    with pytest.raises(ValueError, match=">= 0"):
        Descriptor("key", "x", tpm=-1)
    with pytest.raises(ValueError, match="tokens"):
        MemoryLimiter().admit_sync([], -1)


def test_concurrent_coroutines_and_threads_stay_within_the_limit() -> None:
    lim = MemoryLimiter()
    desc = [Descriptor("key", "hot", tpm=100_000)]
    rng = random.Random(3)
    sizes = [rng.randint(100, 2_000) for _ in range(2_000)]

    async def burst() -> list[Decision]:
        async def one(n: int) -> Decision:
            await asyncio.sleep(0)
            return await lim.admit(desc, n)

        return list(await asyncio.gather(*(one(n) for n in sizes)))

    ds = run(burst())
    got = sum(n for n, d in zip(sizes, ds, strict=True) if d.allowed)
    assert 100_000 - 2_000 < got <= 100_000

    lim2 = MemoryLimiter()
    totals: list[int] = []

    def worker(seed: int) -> None:
        r = random.Random(seed)
        t = 0
        for _ in range(500):
            n = r.randint(100, 2_000)
            if lim2.admit_sync(desc, n).allowed:
                t += n
        totals.append(t)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 100_000 - 2_000 < sum(totals) <= 100_000


def test_idle_windows_are_forgotten() -> None:
    clock = Clock(0)
    lim = MemoryLimiter(clock=clock)
    for i in range(100):
        lim.admit_sync([Descriptor("ip", f"10.0.0.{i}", rpm=10)], 0)
    assert len(lim) == 100
    clock.advance(125_000)
    lim.admit_sync([Descriptor("ip", "10.0.0.1", rpm=10)], 0)
    assert len(lim) == 1


def test_config_and_factory() -> None:
    cfg = LimitsConfig()
    assert cfg.backend == "memory" and cfg.fail_open is True
    lim = build_limiter(cfg)
    assert isinstance(lim, MemoryLimiter) and isinstance(lim, Limiter)
    with pytest.raises(ValidationError):
        LimitsConfig(redis_url="http://x")
    with pytest.raises(ValidationError):
        LimitsConfig.model_validate({"backend": "memcached"})
    with pytest.raises(ValidationError):
        LimitsConfig.model_validate({"fail_opn": True})
    red = build_limiter(LimitsConfig(backend="redis", redis_url="redis://127.0.0.1:1/0", fail_open=False))
    assert isinstance(red, Limiter)
    run(red.aclose())


def test_any_object_with_the_descriptor_surface_is_accepted() -> None:
    class Mine:  # e.g. the proxy's own descriptor type
        kind, id, label = "account", "acme", "account:acme"

        def limits(self) -> list[tuple[str, int]]:
            return [("rpm", 1)]

    lim = MemoryLimiter(clock=Clock())
    assert lim.admit_sync([Mine()], 5).allowed
    d = lim.admit_sync([Mine()], 5)
    assert not d.allowed and d.reason == "account:acme rpm"

    class Bad(Mine):
        def limits(self) -> list[tuple[str, int]]:
            return [("rph", 1)]

    with pytest.raises(ValueError, match="unknown limit"):
        lim.admit_sync([Bad()], 5)
