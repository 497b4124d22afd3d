"""In-process limiter: exact within one process (one gateway worker); use Redis across replicas."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from distillguard.gateway.limits.model import (
    WINDOWS_MS,
    Charge,
    Decision,
    DescriptorLike,
    LimitState,
    Reservation,
    build_decision,
    plan,
)
from distillguard.gateway.limits.window import Window, bucket_ms

SWEEP_EVERY_MS = 60_000


class MemoryLimiter:
    """Sliding windows in a dict, one lock around each admission (see `window.py` for the algorithm).

    `clock` returns seconds (default `time.monotonic`), injectable for tests. The lock is a thread lock
    held with no `await` inside, so an admission is atomic for coroutines and threads alike.
    """

    def __init__(
        self, *, buckets_per_window: int = 60, clock: Callable[[], float] | None = None, prefix: str = ""
    ) -> None:
        if buckets_per_window < 1:
            raise ValueError("buckets_per_window must be >= 1")
        self._buckets = buckets_per_window
        self._clock = clock or time.monotonic
        self._prefix = prefix
        self._windows: dict[str, Window] = {}
        self._lock = threading.Lock()
        self._last_sweep = self._now_ms()

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)  # rounding, not truncating: float clocks in tests

    def _window(self, key: str, window_ms: int, g: int, now: int) -> Window:
        w = self._windows.get(key)
        if w is None:
            w = self._windows[key] = Window(window_ms, g, now)
        else:
            w.prune(now)
        return w

    def _sweep(self, now: int) -> None:
        # forget idle windows so that one-off descriptors (IPs, keys) do not pile up
        if now - self._last_sweep < SWEEP_EVERY_MS:
            return
        self._last_sweep = now
        for key in [k for k, w in self._windows.items() if w.idle(now)]:
            del self._windows[key]

    def admit_sync(self, descriptors: Sequence[DescriptorLike], tokens: int) -> Decision:
        """`admit` without the coroutine, for threaded callers and benchmarks."""
        slots = plan(descriptors, tokens, self._prefix, self._buckets)
        with self._lock:
            now = self._now_ms()
            self._sweep(now)
            wins = [self._window(s.key, s.window_ms, s.bucket_ms, now) for s in slots]
            ok = all(w.fits(s.cost, s.limit) and not s.oversize for s, w in zip(slots, wins, strict=True))
            states: list[LimitState] = []
            charges: list[Charge] = []
            for s, w in zip(slots, wins, strict=True):
                if ok:
                    b = w.add(now, s.cost)
                    if s.name != "rpm":
                        charges.append(Charge(s.key, s.name, b))
                    states.append(LimitState(s.label, s.name, s.limit, w.used, w.reset_ms(now)))
                else:
                    refused = s.oversize or not w.fits(s.cost, s.limit)
                    retry = w.retry_ms(now, s.cost, s.limit) if refused and not s.oversize else 0
                    states.append(
                        LimitState(
                            s.label, s.name, s.limit, w.used, w.reset_ms(now), retry, refused, s.oversize
                        )
                    )
        res = Reservation(tokens, tuple(charges), now) if ok else None
        return build_decision(states, res)

    async def admit(self, descriptors: Sequence[DescriptorLike], tokens: int) -> Decision:
        """Check every descriptor and reserve `tokens` on all of them at once, or on none."""
        return self.admit_sync(descriptors, tokens)

    def reconcile_sync(self, decision: Decision, actual_tokens: int) -> None:
        """`reconcile` without the coroutine."""
        res = decision.reservation
        if res is None or res.settled:
            return
        res.settled = True  # a second reconcile would refund twice
        delta = max(0, actual_tokens) - res.tokens
        if delta == 0:
            return
        with self._lock:
            now = self._now_ms()
            for c in res.charges:
                w = self._windows.get(c.key)
                if delta < 0:
                    if w is not None:
                        w.prune(now)
                        w.refund(c.bucket, -delta)
                else:
                    # usage beyond the reservation is charged now, so it is held a full window from now
                    if w is None:
                        win = WINDOWS_MS[c.name]
                        w = self._windows[c.key] = Window(win, bucket_ms(win, self._buckets), now)
                    w.prune(now)
                    w.add(now, delta)

    async def reconcile(self, decision: Decision, actual_tokens: int) -> None:
        """Replace the reservation with the real usage: refund or charge the difference."""
        self.reconcile_sync(decision, actual_tokens)

    async def aclose(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        return len(self._windows)
