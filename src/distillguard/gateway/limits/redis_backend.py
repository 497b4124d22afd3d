"""Redis limiter: the windows of `window.py` in Redis hashes, one Lua script per admission and reconcile.

Every replica runs the same script against the same keys, and the script reads the server's `TIME`, so
replicas with skewed clocks agree and the limits hold across all of them, not per replica. A window is
one hash: `u` (used), `lo` and `hi` (live bucket range) and one field per bucket; every write refreshes
a TTL of W + 2g + 1 s, so idle windows vanish on their own.

While Redis is unreachable, the policy decides (`fail_open`): a warning is logged once per outage, the
hook gets `backend_down` / `backend_up` and one `fail_open` or `fail_closed` per decision, and Redis is
probed again at most every `retry_interval_s` so an outage does not add a time-out to every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from redis import exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from distillguard.gateway.limits.model import (
    WINDOWS_MS,
    Charge,
    Decision,
    DescriptorLike,
    LimitState,
    Reservation,
    build_decision,
    plan,
    refused_by_outage,
)
from distillguard.gateway.limits.window import bucket_ms

log = logging.getLogger("distillguard.gateway.limits")

# Shared by both scripts. `now` is integer milliseconds; bucket fields are integer indices.
_LUA_COMMON = """
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Load a window and drop the buckets that have left it. Returns used, lo, hi.
local function load(key, now, win, g)
  local first = math.floor((now - win) / g)
  local st = redis.call('HMGET', key, 'u', 'lo', 'hi')
  if not st[1] then return 0, first, first - 1 end
  local used, lo, hi = tonumber(st[1]), tonumber(st[2]), tonumber(st[3])
  if hi < first then
    redis.call('DEL', key)
    return 0, first, first - 1
  end
  if lo < first then
    local fields = {}
    for i = lo, first - 1 do fields[#fields + 1] = tostring(i) end
    local vals = redis.call('HMGET', key, unpack(fields))
    for j = 1, #vals do
      if vals[j] then used = used - tonumber(vals[j]) end
    end
    redis.call('HDEL', key, unpack(fields))
    lo = first
    redis.call('HSET', key, 'u', used, 'lo', lo)
  end
  return used, lo, hi
end

local function charge(key, now, win, g, used, lo, hi, amount)
  local b = math.floor(now / g)
  redis.call('HINCRBY', key, tostring(b), amount)
  if b > hi then hi = b end
  used = used + amount
  redis.call('HSET', key, 'u', used, 'lo', lo, 'hi', hi)
  redis.call('PEXPIRE', key, win + 2 * g + 1000)
  return used, hi
end

local function reset_ms(now, win, g, used, hi)
  if used > 0 then return (hi + 1) * g + win - now end
  return 0
end
"""

# KEYS: one window per (descriptor, limit). ARGV: now ('' = server TIME), then per key:
# limit, cost, window ms, bucket ms. Returns now, allowed, then per key: used, reset ms, retry ms.
ADMIT_LUA = (
    _LUA_COMMON
    + """
local now = clock(ARGV[1])
local n = #KEYS
local used, lo, hi, lim, cost, win, g = {}, {}, {}, {}, {}, {}, {}
local ok = 1
for i = 1, n do
  local b = 1 + (i - 1) * 4
  lim[i], cost[i], win[i], g[i] = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]),
    tonumber(ARGV[b + 4])
  used[i], lo[i], hi[i] = load(KEYS[i], now, win[i], g[i])
  local fits
  if cost[i] > 0 then fits = used[i] + cost[i] <= lim[i] else fits = used[i] < lim[i] end
  if not fits or cost[i] > lim[i] or lim[i] == 0 then ok = 0 end
end
local out = {now, ok}
for i = 1, n do
  local retry = 0
  if ok == 1 then
    if cost[i] > 0 then
      used[i], hi[i] = charge(KEYS[i], now, win[i], g[i], used[i], lo[i], hi[i], cost[i])
    end
  else
    local need
    if cost[i] > 0 then need = used[i] + cost[i] - lim[i] else need = used[i] - lim[i] + 1 end
    if need > 0 and hi[i] >= lo[i] then
      local fields = {}
      for j = lo[i], hi[i] do fields[#fields + 1] = tostring(j) end
      local vals = redis.call('HMGET', KEYS[i], unpack(fields))
      local acc = 0
      retry = reset_ms(now, win[i], g[i], used[i], hi[i])
      for j = 1, #vals do
        if vals[j] then acc = acc + tonumber(vals[j]) end
        if acc >= need then
          retry = (lo[i] + j) * g[i] + win[i] - now
          break
        end
      end
    end
  end
  out[#out + 1] = used[i]
  out[#out + 1] = reset_ms(now, win[i], g[i], used[i], hi[i])
  out[#out + 1] = retry
end
return out
"""
)

# KEYS: the reservation's token windows. ARGV: now ('' = server TIME), refund, extra, then per key:
# bucket, window ms, bucket ms. A refund comes out of the reservation's bucket if it is still live;
# usage beyond the reservation is charged to the current bucket.
RECONCILE_LUA = (
    _LUA_COMMON
    + """
local now = clock(ARGV[1])
local refund, extra = tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, #KEYS do
  local b = 3 + (i - 1) * 3
  local bucket, win, g = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local key = KEYS[i]
  local used, lo, hi = load(key, now, win, g)
  if refund > 0 and bucket >= lo then
    local f = tostring(bucket)
    local v = tonumber(redis.call('HGET', key, f) or '0')
    local r = math.min(refund, v)
    if r > 0 then
      if r == v then redis.call('HDEL', key, f) else redis.call('HINCRBY', key, f, -r) end
      used = used - r
      redis.call('HSET', key, 'u', used)
    end
  end
  if extra > 0 then charge(key, now, win, g, used, lo, hi, extra) end
end
return now
"""
)


def _where(url: str) -> str:
    """The URL without credentials, for log lines."""
    p = urlsplit(url)
    host = p.hostname or p.path or "?"
    return f"{p.scheme}://{host}:{p.port}" if p.port else f"{p.scheme}://{host}"


class _PoolTimeout(rexc.ConnectionError):
    """No slot free within pool_timeout_s."""


def _pool_exhausted(exc: BaseException) -> bool:
    return isinstance(exc, _PoolTimeout | rexc.MaxConnectionsError)


class RedisLimiter:
    """The Redis backend; see the module docstring.

    `clock` (seconds) replaces the server's `TIME` and exists for tests only: replicas must use the
    server's clock to agree. `client` lets a caller share a `redis.asyncio.Redis`.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "dg:rl:",
        fail_open: bool = True,
        buckets_per_window: int = 60,
        connect_timeout_s: float = 0.5,
        timeout_s: float = 0.5,
        retry_interval_s: float = 1.0,
        max_connections: int | None = 64,
        pool_timeout_s: float = 2.0,
        hook: Callable[[str], None] | None = None,
        client: Redis | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if buckets_per_window < 1:
            raise ValueError("buckets_per_window must be >= 1")
        self._where = _where(url)
        self._owns_client = client is None
        if client is None:
            opts: dict[str, Any] = {
                "socket_connect_timeout": connect_timeout_s,
                "socket_timeout": timeout_s,
                # One immediate retry, on connection errors only: it replaces a pooled connection that a
                # Redis restart killed. Time-outs are not retried, so a slow Redis is not asked twice.
                "retry": Retry(NoBackoff(), 1, supported_errors=(rexc.ConnectionError,)),
            }
            client = Redis.from_url(url, **opts)
        self._r: Redis = client
        # At most max_connections commands in flight per limiter (so at most that many connections): the
        # rest wait in FIFO order, up to pool_timeout_s, instead of opening hundreds of connections whose
        # connects time out on a busy event loop. redis-py's blocking pool wakes waiters unfairly.
        self._sem = asyncio.Semaphore(max_connections) if max_connections else None
        self._pool_timeout = pool_timeout_s
        self._admit = self._r.register_script(ADMIT_LUA)
        self._reconcile = self._r.register_script(RECONCILE_LUA)
        self._prefix = prefix
        self._buckets = buckets_per_window
        self.fail_open = fail_open
        self._retry_interval = retry_interval_s
        self._hook = hook
        self._clock = clock
        self._down_since: float | None = None
        self._next_probe = 0.0
        self._probing = False
        self._last_overload_log = -1e9

    @property
    def available(self) -> bool:
        """False while the last call found Redis unreachable."""
        return self._down_since is None

    def _emit(self, event: str) -> None:
        if self._hook is not None:
            try:
                self._hook(event)
            except Exception:  # a broken metrics hook must not break admission
                log.exception("rate limiter hook failed on %s", event)

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(round(self._clock() * 1000))

    def _skip(self) -> bool:
        # While down, answer by policy without a network call until the next probe is due, and let one
        # request probe at a time, so that an unreachable host costs one time-out, not one per request.
        if self._down_since is None:
            return False
        if self._probing or time.monotonic() < self._next_probe:
            return True
        self._probing = True
        return False

    def _mark_down(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._next_probe = now + self._retry_interval
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "rate limiter: Redis at %s unavailable (%s: %s); failing %s until it returns",
                self._where,
                type(exc).__name__,
                exc,
                "open (requests admitted unlimited)" if self.fail_open else "closed (requests refused)",
            )
            self._emit("backend_down")

    def _mark_up(self) -> None:
        if self._down_since is not None:
            log.warning(
                "rate limiter: Redis at %s is back after %.1fs; limits enforced again",
                self._where,
                time.monotonic() - self._down_since,
            )
            self._down_since = None
            self._emit("backend_up")

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._sem is None:
            yield
            return
        try:
            async with asyncio.timeout(self._pool_timeout):
                await self._sem.acquire()
        except TimeoutError:
            raise _PoolTimeout(f"no connection slot free within {self._pool_timeout}s") from None
        try:
            yield
        finally:
            self._sem.release()

    def _overloaded(self) -> None:
        # no free pooled connection in time: overload on our side, not an outage, so keep using Redis
        now = time.monotonic()
        if now - self._last_overload_log > 10:
            self._last_overload_log = now
            log.warning(
                "rate limiter: no Redis connection free within the pool time-out (overloaded process?); "
                "failing %s for such requests",
                "open" if self.fail_open else "closed",
            )
        self._emit("pool_exhausted")

    def _outage(self) -> Decision:
        self._emit("fail_open" if self.fail_open else "fail_closed")
        return refused_by_outage(self.fail_open)

    async def admit(self, descriptors: Sequence[DescriptorLike], tokens: int) -> Decision:
        """Check every descriptor and reserve `tokens` on all of them at once, or on none."""
        slots = plan(descriptors, tokens, self._prefix, self._buckets)
        if not slots:
            return build_decision([], Reservation(tokens, (), 0))
        if self._skip():
            return self._outage()
        args: list[Any] = [self._now_arg()]
        for s in slots:
            args += [s.limit, s.cost, s.window_ms, s.bucket_ms]
        try:
            async with self._slot():
                raw = await self._admit(keys=[s.key for s in slots], args=args)
        except rexc.RedisError as exc:  # connection, time-out, OOM, READONLY replica, ...
            if _pool_exhausted(exc):
                self._overloaded()
            else:
                self._mark_down(exc)
            return self._outage()
        finally:
            self._probing = False  # also when cancelled (the client went away mid-probe)
        self._mark_up()
        now, ok = int(raw[0]), raw[1] == 1
        states: list[LimitState] = []
        charges: list[Charge] = []
        for i, s in enumerate(slots):
            used, reset, retry = int(raw[2 + 3 * i]), int(raw[3 + 3 * i]), int(raw[4 + 3 * i])
            if ok:
                if s.name != "rpm":
                    charges.append(Charge(s.key, s.name, now // s.bucket_ms))
                states.append(LimitState(s.label, s.name, s.limit, used, reset))
            else:
                fits = used + s.cost <= s.limit if s.cost > 0 else used < s.limit
                refused = s.oversize or not fits
                states.append(LimitState(s.label, s.name, s.limit, used, reset, retry, refused, s.oversize))
        return build_decision(states, Reservation(tokens, tuple(charges), now) if ok else None)

    async def reconcile(self, decision: Decision, actual_tokens: int) -> None:
        """Replace the reservation with the real usage: refund or charge the difference."""
        res = decision.reservation
        if res is None or res.settled or not res.charges:
            return
        res.settled = True  # a second reconcile would refund twice
        delta = max(0, actual_tokens) - res.tokens
        if delta == 0:
            return
        if self._down_since is not None:
            # only admissions probe a down Redis; the reservation stays as it was charged
            self._emit("reconcile_lost")
            return
        args: list[Any] = [self._now_arg(), max(0, -delta), max(0, delta)]
        for c in res.charges:
            win = WINDOWS_MS[c.name]
            args += [c.bucket, win, bucket_ms(win, self._buckets)]
        try:
            async with self._slot():
                await self._reconcile(keys=[c.key for c in res.charges], args=args)
        except rexc.RedisError as exc:
            # the reservation stays charged (never less than the real usage when it was an upper bound)
            if not _pool_exhausted(exc):
                self._mark_down(exc)
            self._emit("reconcile_lost")
            return
        self._mark_up()

    async def aclose(self) -> None:
        """Close the connection pool if this limiter made it."""
        if self._owns_client:
            await self._r.aclose()
