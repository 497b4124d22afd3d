"""Where online risk keeps its per-account state: this process, or Redis so that replicas share it.

`RiskEngine` (risk.py) drives one `RiskState` from its background worker thread: `learn` a batch of
exchanges, `due` lists the accounts to re-score now (claimed: no other replica scores them for the same
exchanges), `score` one of them, `publish` the new verdicts and `pull` the verdicts other replicas
published. All calls block and run off the event loop; the request path never touches the state.

- `MemoryRiskState`: an `OnlineScorer` in this process (state per account, lost on restart; each
  replica sees only the traffic it served). `publish` / `pull` do nothing.
- `RedisRiskState`: every replica appends its exchanges to the account's shared window in Redis (one
  Lua script per account and batch, all pipelined into one round trip); the replica whose append brings
  the account's pending count to `rescore_every` claims the re-score atomically (or, after `rescore_s`
  of quiet, the one that saw its last exchange); it scores the shared window with the same batch SQL
  and publishes the verdict; every replica pulls changed verdicts every `sync_s` into its local dict.
  So an account spread over replicas is scored on all of its traffic, once per `rescore_every`
  exchanges, and a verdict reached on one replica acts on all of them within `sync_s`.

Redis keys (prefix `key_prefix`, default `dg:risk:`): `w:<account>` the window (a list of rows, capped at
`window`), `s:<account>` (hash: seen, tok, pending), `d:<account>` (set of active days), `accounts`
(set, for the peer medians), `v` (hash: account -> verdict JSON), `vseq` and `vchg` (a counter and a
sorted set account -> sequence of its last verdict, so a replica reads only what changed). Per-account
keys expire after `state_ttl_s` without traffic. The window holds what the signals read, prompt text
included: protect that Redis as you protect the audit log (ACLs, TLS, no persistence if not needed).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import orjson

from distillguard.detect.evidence import Verdict
from distillguard.detect.online import OnlineScorer
from distillguard.exchange import ARROW_SCHEMA, Exchange, to_values
from distillguard.gateway.config import RiskConfig

log = logging.getLogger("distillguard.gateway.risk")

_TS_I = ARROW_SCHEMA.names.index("ts")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_PULL_PAGE = 5000
_PULL_PAGES = 20  # at most 100k changed verdicts per pull; the rest come at the next one
_PEER_SAMPLE = 1000
_PEER_REFRESH_S = 30.0


@dataclass(frozen=True, slots=True)
class RiskVerdict:
    """An account's latest level, with what it leads to (precomputed when the verdict changes)."""

    level: str
    score: float
    reasons: str
    actions: tuple[str, ...]

    def to_json(self) -> bytes:
        return orjson.dumps([self.level, self.score, self.reasons, list(self.actions)])

    @classmethod
    def from_json(cls, raw: bytes | str) -> RiskVerdict:
        level, score, reasons, actions = orjson.loads(raw)
        return cls(str(level), float(score), str(reasons), tuple(str(a) for a in actions))


class RiskState(Protocol):
    """Per-account streaming state, in-process or shared (see the module doc)."""

    def learn(self, exchanges: list[Exchange], now: float) -> None: ...
    def due(self, now: float) -> list[str]: ...
    def score(self, account_id: str) -> Verdict: ...
    def publish(self, verdicts: dict[str, RiskVerdict]) -> None: ...
    def pull(self) -> dict[str, RiskVerdict]: ...
    def close(self) -> None: ...


class MemoryRiskState:
    """The state in this process: an `OnlineScorer` and the re-score schedule."""

    def __init__(self, cfg: RiskConfig, scorer: OnlineScorer | None = None) -> None:
        self.cfg = cfg
        # the scorer's own refresh schedule is ours: re-score whenever asked and something is new
        self.scorer = scorer or OnlineScorer(window=cfg.window, refresh_every=1, dense_until=0)
        self._pending: dict[str, int] = {}  # account -> exchanges learnt since its last score
        self._last_new: dict[str, float] = {}  # account -> monotonic time of its last new exchange
        self._last_scored: dict[str, float] = {}  # account -> monotonic time of its last re-score

    def learn(self, exchanges: list[Exchange], now: float) -> None:
        for ex in exchanges:
            self.scorer.learn_one(ex)
            self._pending[ex.account_id] = self._pending.get(ex.account_id, 0) + 1
            self._last_new[ex.account_id] = now

    def due(self, now: float) -> list[str]:
        gap = self.cfg.rescore_min_s
        out = [
            acc
            for acc, n in self._pending.items()
            if (n >= self.cfg.rescore_every or now - self._last_new[acc] >= self.cfg.rescore_s)
            # an account's first score is never held back; later ones at most every rescore_min_s
            and now - self._last_scored.get(acc, -gap) >= gap
        ]
        for acc in out:
            del self._pending[acc]
            self._last_scored[acc] = now
        if len(self._last_scored) > 4 * self.scorer.max_accounts:
            self._last_scored = {a: t for a, t in self._last_scored.items() if a in self.scorer}
        return out

    def score(self, account_id: str) -> Verdict:
        return self.scorer.score_one(account_id)

    def publish(self, verdicts: dict[str, RiskVerdict]) -> None:
        return None

    def pull(self) -> dict[str, RiskVerdict]:
        return {}

    def close(self) -> None:
        self.scorer.close()


# KEYS: window, summary, days, accounts. ARGV: window size, tokens, days (comma-separated), ttl,
# rescore_every, account id, rows... Returns 1 when this call claimed the account's re-score.
_LEARN = """
local n = #ARGV - 6
for i = 7, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
redis.call('HINCRBY', KEYS[2], 'seen', n)
redis.call('HINCRBYFLOAT', KEYS[2], 'tok', ARGV[2])
local pending = redis.call('HINCRBY', KEYS[2], 'pending', n)
for day in string.gmatch(ARGV[3], '[^,]+') do redis.call('SADD', KEYS[3], day) end
redis.call('SADD', KEYS[4], ARGV[6])
local ttl = tonumber(ARGV[4])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
if pending >= tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[2], 'pending', 0)
  return 1
end
return 0
"""

# KEYS: summary. Claims a quiet account's re-score when something is pending (1), else 0.
_CLAIM = """
local p = tonumber(redis.call('HGET', KEYS[1], 'pending') or '0')
if p > 0 then
  redis.call('HSET', KEYS[1], 'pending', 0)
  return 1
end
return 0
"""

# KEYS: verdicts, seq, changes. ARGV: account, verdict JSON.
_PUBLISH = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[3], seq, ARGV[1])
return seq
"""


def _row_json(ex: Exchange) -> bytes:
    vals = to_values(ex)
    ts: datetime = vals[_TS_I]
    vals[_TS_I] = (ts - _EPOCH) // _US  # integer microseconds: JSON has no datetime
    return orjson.dumps(vals)


def _row(raw: bytes) -> dict[str, Any]:
    vals = orjson.loads(raw)
    vals[_TS_I] = _EPOCH + vals[_TS_I] * _US
    return dict(zip(ARROW_SCHEMA.names, vals, strict=True))


class RedisRiskState:
    """The state in Redis, shared by every replica with the same `redis_url` and `key_prefix`."""

    def __init__(self, cfg: RiskConfig, client: Any | None = None) -> None:
        from redis import Redis

        self.cfg = cfg
        self.r: Any = client or Redis.from_url(
            cfg.redis_url, socket_timeout=cfg.redis_timeout_s, socket_connect_timeout=cfg.redis_timeout_s
        )
        p = cfg.key_prefix
        self._k_accounts, self._k_v, self._k_seq, self._k_chg = (
            p + "accounts",
            p + "v",
            p + "vseq",
            p + "vchg",
        )
        self._learn = self.r.register_script(_LEARN)
        self._claim = self.r.register_script(_CLAIM)
        self._publish = self.r.register_script(_PUBLISH)
        self.scorer = OnlineScorer(window=cfg.window)
        self._claimed: set[str] = set()  # accounts whose re-score this replica claimed, not yet scored
        self._last_new: dict[str, float] = {}  # accounts this replica fed, for the quiet re-score
        self._seq = 0.0  # last verdict sequence pulled
        self._peers: tuple[float, float] | None = None
        self._peers_at = -_PEER_REFRESH_S

    def _keys(self, account_id: str) -> list[str]:
        p = self.cfg.key_prefix
        return [f"{p}w:{account_id}", f"{p}s:{account_id}", f"{p}d:{account_id}", self._k_accounts]

    def learn(self, exchanges: list[Exchange], now: float) -> None:
        by_acc: dict[str, list[Exchange]] = {}
        for ex in exchanges:
            by_acc.setdefault(ex.account_id, []).append(ex)
        if not by_acc:
            return
        pipe = self.r.pipeline(transaction=False)
        accs = list(by_acc)
        for acc in accs:
            exs = by_acc[acc]
            tok = sum(ex.completion_tokens or 0 for ex in exs)
            days = ",".join(sorted({ex.ts.date().isoformat() for ex in exs}))
            args: list[Any] = [self.cfg.window, tok, days, self.cfg.state_ttl_s, self.cfg.rescore_every, acc]
            self._learn(keys=self._keys(acc), args=[*args, *map(_row_json, exs)], client=pipe)
        for acc, claimed in zip(accs, pipe.execute(), strict=True):
            self._last_new[acc] = now
            if claimed:
                self._claimed.add(acc)

    def due(self, now: float) -> list[str]:
        quiet = [a for a, t in self._last_new.items() if now - t >= self.cfg.rescore_s]
        for a in quiet:
            del self._last_new[a]
        quiet = [a for a in quiet if a not in self._claimed]
        if quiet:
            pipe = self.r.pipeline(transaction=False)
            for a in quiet:
                self._claim(keys=[f"{self.cfg.key_prefix}s:{a}"], client=pipe)
            self._claimed.update(a for a, ok in zip(quiet, pipe.execute(), strict=True) if ok)
        out = sorted(self._claimed)
        self._claimed.clear()
        return out

    def _peer_medians(self) -> tuple[float, float]:
        """Median exchanges and completion tokens per active day over (a sample of) all accounts."""
        now = time.monotonic()
        if self._peers is not None and now - self._peers_at < _PEER_REFRESH_S:
            return self._peers
        accs = [a.decode() for a in self.r.srandmember(self._k_accounts, _PEER_SAMPLE) or []]
        pipe = self.r.pipeline(transaction=False)
        p = self.cfg.key_prefix
        for a in accs:
            pipe.hmget(f"{p}s:{a}", "seen", "tok")
            pipe.scard(f"{p}d:{a}")
        res = pipe.execute()
        per_day, tok = [], []
        for (seen, t), days in zip(res[::2], res[1::2], strict=True):
            if seen is None:
                continue  # expired since it was sampled
            d = max(int(days), 1)
            per_day.append(int(seen) / d)
            tok.append(float(t or 0) / d)
        self._peers = (float(np.median(per_day)), float(np.median(tok))) if per_day else (1.0, 0.0)
        self._peers_at = now
        return self._peers

    def score(self, account_id: str) -> Verdict:
        rows = self.r.lrange(f"{self.cfg.key_prefix}w:{account_id}", 0, -1)
        return self.scorer.score_rows(account_id, map(_row, rows), self._peer_medians())

    def publish(self, verdicts: dict[str, RiskVerdict]) -> None:
        if not verdicts:
            return
        pipe = self.r.pipeline(transaction=False)
        for acc, v in verdicts.items():
            self._publish(keys=[self._k_v, self._k_seq, self._k_chg], args=[acc, v.to_json()], client=pipe)
        pipe.execute()

    def pull(self) -> dict[str, RiskVerdict]:
        """Verdicts published (by any replica) since the last pull; the first pull reads them all."""
        out: dict[str, RiskVerdict] = {}
        for _ in range(_PULL_PAGES):
            changed = self.r.zrangebyscore(
                self._k_chg, f"({self._seq}", "+inf", start=0, num=_PULL_PAGE, withscores=True
            )
            if not changed:
                break
            accs = [a.decode() for a, _ in changed]
            for acc, raw in zip(accs, self.r.hmget(self._k_v, accs), strict=True):
                if raw is not None:
                    try:
                        out[acc] = RiskVerdict.from_json(raw)
                    except (ValueError, TypeError):
                        log.warning("unreadable risk verdict in Redis", extra={"account_id": acc})
            self._seq = max(self._seq, float(changed[-1][1]))
            if len(changed) < _PULL_PAGE:
                break
        return out

    def close(self) -> None:
        self.scorer.close()
        self.r.close()


def build_state(cfg: RiskConfig, scorer: OnlineScorer | None = None) -> RiskState:
    """The configured backend (`[risk] state`)."""
    if cfg.state == "redis":
        return RedisRiskState(cfg)
    return MemoryRiskState(cfg, scorer)
