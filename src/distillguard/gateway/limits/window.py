"""The algorithm: a sliding-window log whose timestamps are rounded up to 1/B of the window.

Each window (one descriptor's rpm, tpm or tpd) keeps a count per bucket of `g = ceil(W / B)` ms and a
running sum. A charge made at time t lands in bucket `i = t // g` and is counted until `(i+1)*g + W`,
that is for at least W and at most W + g. Admission checks `used + cost <= limit` under one lock (or one
Lua script), so for any interval of length W, every charge made in it is still counted when the last one
is admitted: the charges admitted in any W never exceed the limit. The price of the rounding is that a
charge can be held up to g too long (1/B of the window, under 2% with B = 60), never that too much gets
through. Memory is O(B) per window, so a day window costs the same as a minute one.

`redis_backend.py` runs the same steps in Lua; keep the two in step (the tests compare them).
"""

from __future__ import annotations


def bucket_ms(window_ms: int, buckets: int) -> int:
    """Bucket width, rounded up so that B buckets always cover the whole window."""
    return -(-window_ms // buckets)


class Window:
    """Per-bucket counts of one window, with the running sum and the live bucket range."""

    __slots__ = ("buckets", "g", "hi", "lo", "used", "window_ms")

    def __init__(self, window_ms: int, g: int, now_ms: int) -> None:
        self.window_ms = window_ms
        self.g = g
        self.used = 0
        self.lo = self.first_live(now_ms)  # buckets below lo are gone
        self.hi = self.lo - 1  # highest bucket ever charged
        self.buckets: dict[int, int] = {}

    def first_live(self, now_ms: int) -> int:
        # bucket i is live while (i+1)*g + W > now, i.e. i > (now - W)/g - 1
        return (now_ms - self.window_ms) // self.g

    def prune(self, now_ms: int) -> None:
        """Drop the buckets that have left the window."""
        first = self.first_live(now_ms)
        if self.hi < first:
            self.buckets.clear()
            self.used = 0
            self.lo = first
            self.hi = first - 1
            return
        # bounded by B + 1 steps: lo was at most B + 1 buckets behind hi when hi was charged
        for i in range(self.lo, first):
            self.used -= self.buckets.pop(i, 0)
        self.lo = max(self.lo, first)

    def fits(self, cost: int, limit: int) -> bool:
        # a zero-cost request (an empty prompt) still needs room left, or it would slip past a full window
        return self.used + cost <= limit if cost > 0 else self.used < limit

    def add(self, now_ms: int, amount: int) -> int:
        """Charge `amount` at now; returns the bucket it went to."""
        b = now_ms // self.g
        if amount:
            self.buckets[b] = self.buckets.get(b, 0) + amount
            self.used += amount
            self.hi = max(self.hi, b)
        return b

    def refund(self, bucket: int, amount: int) -> None:
        """Take back up to `amount` from the bucket a reservation went to, if it is still live."""
        if bucket < self.lo:
            return
        v = self.buckets.get(bucket, 0)
        r = min(amount, v)
        if r <= 0:
            return
        if r == v:
            del self.buckets[bucket]
        else:
            self.buckets[bucket] = v - r
        self.used -= r

    def reset_ms(self, now_ms: int) -> int:
        """Until the window is back to its full limit (OpenAI's `x-ratelimit-reset-*`)."""
        return (self.hi + 1) * self.g + self.window_ms - now_ms if self.used > 0 else 0

    def retry_ms(self, now_ms: int, cost: int, limit: int) -> int:
        """Until enough of the oldest buckets have left for `cost` to fit."""
        need = self.used + cost - limit if cost > 0 else self.used - limit + 1
        acc = 0
        for i in range(self.lo, self.hi + 1):
            acc += self.buckets.get(i, 0)
            if acc >= need:
                return (i + 1) * self.g + self.window_ms - now_ms
        return self.reset_ms(now_ms)

    def idle(self, now_ms: int) -> bool:
        return self.hi < self.first_live(now_ms)
