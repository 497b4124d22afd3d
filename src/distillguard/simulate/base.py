"""The simulator's moving parts shared by personas and attack strategies.

An `Account` owns one `Behaviour` (a benign persona or an attack strategy's per-account instance). For each
local day the behaviour *plans* light events (timestamp + a small payload) with vectorised numpy draws,
and *renders* an event into an exchange only when the merged stream reaches it, so memory holds at most a
day of plans and only the exchanges being written. `World.finish` turns a rendered request into the
exchange record: network, ids, status, token counts, truncation at max_tokens and latency.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import orjson

from distillguard.exchange import Exchange
from distillguard.simulate.corpora import Corpora
from distillguard.simulate.network import NetProfile, tls_fp
from distillguard.simulate.responses import Bank

DAY = 86400.0
HOUR = 3600.0


@dataclass(frozen=True)
class ModelSpec:
    max_tokens: int  # output limit (what a "max_tokens at the model maximum" request sends)
    tokens_per_s: float
    reasoning: bool = False


MODELS: dict[str, ModelSpec] = {
    "acme-large-2": ModelSpec(16384, 55.0),
    "acme-mini-2": ModelSpec(16384, 140.0),
    "acme-reason-1": ModelSpec(32768, 70.0, reasoning=True),
    "acme-large-3": ModelSpec(32768, 65.0, reasoning=True),  # released during the window
}
BASE_MODELS = ("acme-large-2", "acme-mini-2", "acme-reason-1")
RELEASE_MODEL = "acme-large-3"
_EFFORT_MULT = {"minimal": (0.1, 0.4), "low": (0.3, 1.2), "medium": (0.8, 3.0), "high": (2.5, 8.0)}


# The request fields (endpoint .. n_tools) in Exchange order with their defaults. `finish` writes a record's
# keys in model order and leaves defaults out, so the record *is* the canonical line's content (what
# dump_line writes after validation); `run.simulate` checks that on a sample of records.
_FIELDS = list(Exchange.model_fields)
_REQUEST_FIELDS: tuple[tuple[str, Any], ...] = tuple(
    (k, Exchange.model_fields[k].get_default(call_default_factory=True))
    for k in _FIELDS[_FIELDS.index("endpoint") : _FIELDS.index("n_tools") + 1]
)

_SHAPES: dict[tuple[str, ...], tuple[tuple[str, Any], ...]] = {}


def ntok(s: str) -> int:
    """Approximate tokens of a text, about words x 1.3: English runs ~6.1 characters per word with its
    space, so characters / 4.7 (O(1), where counting words would cost a pass over every answer)."""
    return int(len(s) * 0.2128) + 1


def hexid(rnd: random.Random, bits: int = 64) -> str:
    return f"{rnd.getrandbits(bits):0{bits // 4}x}"


# -- diurnal profiles (weights per local hour) ----------------------------------------------------------
def _norm(w: list[float]) -> np.ndarray:
    a = np.asarray(w, dtype=np.float64)
    return a / a.sum()


PROFILE_PERSON = _norm(
    [1, 0.5, 0.3, 0.2, 0.2, 0.3, 0.8, 1.5, 3, 4.5, 5, 5, 4, 4.5, 5, 5, 4.5, 4, 3.5, 3.5, 4, 4, 3, 2]
)
PROFILE_WORK = _norm(
    [0.1, 0.05, 0.05, 0.05, 0.05, 0.1, 0.3, 1, 3, 6, 7, 7, 4, 6, 7, 7, 6, 4, 2, 1, 0.8, 0.6, 0.4, 0.2]
)
PROFILE_STUDENT = _norm(
    [0.3, 0.1, 0.05, 0.05, 0.05, 0.1, 0.4, 1.5, 3, 3.5, 3.5, 3, 3, 3.5, 4, 5, 6, 6.5, 6, 6, 5.5, 4, 2, 0.8]
)
PROFILE_FLAT = _norm([1.0] * 24)


def local_weekday(world: World, step: int) -> int:
    """Weekday (0 = Monday) of an account's local day `step` (its calendar date is start + step)."""
    return int((world.start_weekday + step) % 7)


def weekday_factor(wd: int, weekend: float) -> float:
    return weekend if wd >= 5 else 1.0


def day_count(world: World, rng: np.random.Generator, mean: float, noise: float = 0.35) -> int:
    """Requests on one day: a day-to-day lognormal wobble around the account's mean (times the world's
    volume scale), then Poisson."""
    mean *= world.volume
    if mean <= 0:
        return 0
    return int(rng.poisson(mean * rng.lognormal(-noise * noise / 2, noise)))


def hour_starts(rng: np.random.Generator, day0: float, n: int, profile: np.ndarray) -> np.ndarray:
    """`n` times on the local day starting at `day0` (UTC seconds), hours drawn from `profile`."""
    if n <= 0:
        return np.empty(0)
    hours = rng.choice(24, size=n, p=profile)
    return np.sort(day0 + hours * HOUR + rng.random(n) * HOUR)


def regular_times(
    rng: np.random.Generator, t0: float, t1: float, n: int, jitter: float, outage_p: float = 0.0
) -> np.ndarray:
    """An automated client: `n` requests evenly spread over [t0, t1) with relative jitter.

    With probability `outage_p` the script dies for one to four hours (the crash, then a cron restart).
    """
    if n <= 0 or t1 <= t0:
        return np.empty(0)
    gap = (t1 - t0) / n
    t = t0 + (np.arange(n) + 0.5) * gap + (rng.random(n) - 0.5) * 2 * jitter * gap
    if outage_p and rng.random() < outage_p:
        a = t0 + rng.random() * (t1 - t0)
        keep = (t < a) | (t > a + rng.uniform(1, 4) * HOUR)
        t = t[keep]
    return np.sort(np.clip(t, t0, None))


def loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def human_sessions(
    rng: np.random.Generator,
    day0: float,
    n: int,
    profile: np.ndarray,
    per_session: float,
    think_median: float,
    sigma: float = 0.9,
) -> list[np.ndarray]:
    """`n` requests of a person: sessions started by the diurnal profile, think time between requests."""
    if n <= 0:
        return []
    s = max(1, round(n / per_session))
    starts = hour_starts(rng, day0, s, profile)
    sizes = rng.multinomial(n - s, np.full(s, 1.0 / s)) + 1
    gaps = think_gaps(rng, n, think_median, sigma)
    out = []
    off = 0
    for st, k in zip(starts, sizes, strict=True):
        g = gaps[off : off + k]
        off += k
        out.append(st + np.concatenate(([0.0], np.cumsum(g[:-1]))))
    return out


def think_gaps(rng: np.random.Generator, n: int, median: float, sigma: float = 0.8) -> np.ndarray:
    """Human think / read / type time between requests: lognormal around `median` seconds."""
    return median * rng.lognormal(0.0, sigma, n)


# -- the simulation's shared state ---------------------------------------------------------------------
@dataclass
class World:
    corpora: Corpora
    bank: Bank
    seed: int
    start: float  # UTC epoch seconds of the window start (midnight)
    days: int
    start_weekday: int
    release_ts: float  # when RELEASE_MODEL becomes available
    volume: float = 1.0  # scales every account's daily volume (small, fast logs for tests and demos)

    @property
    def end(self) -> float:
        return self.start + self.days * DAY

    def finish(self, acct: Account, ts: float, req: dict[str, Any], rnd: random.Random) -> dict[str, Any]:
        """Complete a rendered request into an exchange record (the dict `Exchange` validates)."""
        rand = rnd.random
        model = req["model"]
        spec = MODELS[model]
        text: str = req.pop("response_text")
        ep = acct.net.pick(ts, rnd)
        keys = acct.api_keys
        key = keys[0] if len(keys) == 1 or rand() < 0.85 else keys[int(rand() * len(keys))]
        clients = acct.clients
        ua, fp = clients[0] if len(clients) == 1 else clients[int(rand() * len(clients))]
        rec: dict[str, Any] = {
            "exchange_id": f"chatcmpl-{rnd.getrandbits(120):030x}",
            "ts": ts,
            "account_id": acct.account_id,
        }
        if acct.org_id is not None:
            rec["org_id"] = acct.org_id
        rec["api_key_id"] = key
        eu = req.get("end_user")
        if eu is not None:
            rec["end_user"] = eu
        rec["client_ip"] = ep.ip
        rec["asn"] = ep.asn
        rec["country"] = ep.country
        rec["user_agent"] = ua
        if acct.payment_fp is not None:
            rec["payment_fp"] = acct.payment_fp
        rec["device_fp"] = fp
        # The request fields this kind of request sets, in model order (a handful of shapes per run).
        shape = tuple(req)
        fields = _SHAPES.get(shape)
        if fields is None:
            fields = _SHAPES[shape] = tuple((k, d) for k, d in _REQUEST_FIELDS if k in req)
        for k, d in fields:
            v = req[k]
            if v is not None and v != d:
                rec[k] = v
        sp = req.get("system_prompt")
        ptok = 4 + (ntok(sp) if sp else 0)
        for m in req["messages"]:
            # an assistant turn that only calls tools has no content; its call's arguments count instead
            ptok += 4 + ntok(m["content"] or orjson.dumps(m.get("tool_calls")).decode())
        u = rand()
        if u < acct.p429:
            rec["latency_ms"] = round(3 + rand() * 40, 1)
            rec["status"] = 429
            rec["error"] = "rate_limit_exceeded"
            return rec
        if u < acct.p429 + acct.p500:
            rec["latency_ms"] = round(200 + rand() * 30000, 1)
            rec["status"] = 500
            rec["error"] = "internal_server_error"
            return rec
        vis = ntok(text)
        reasoning = 0
        if spec.reasoning:
            lo, hi = _EFFORT_MULT.get(req.get("reasoning_effort") or "medium", (0.8, 3.0))
            reasoning = int(vis * (lo + (hi - lo) * rand())) + 16
        cap = min(req.get("max_tokens") or spec.max_tokens, spec.max_tokens)
        finish = "stop"
        if vis + reasoning > cap:
            # Reasoning tokens count against max_tokens; the visible answer is cut where the budget ends.
            finish = "length"
            if reasoning >= cap:
                reasoning = int(cap * (0.85 + 0.1 * rand()))
            keep = max(1, cap - reasoning)
            if keep < vis:
                text = text[: max(1, int(len(text) * keep / vis))]
                vis = keep
        elif req.get("n_tools") and rand() < 0.35:
            finish = "tool_calls"
        n = req.get("n", 1)
        rec["response_text"] = text
        if spec.reasoning:
            rec["reasoning_tokens"] = reasoning * n
        rec["finish_reason"] = finish
        rec["prompt_tokens"] = ptok
        rec["completion_tokens"] = (vis + reasoning) * n
        # Time to first token, then decoding; n choices decode in parallel.
        speed = spec.tokens_per_s * (0.8 + 0.4 * rand())
        rec["latency_ms"] = round(250 + ptok * 0.05 + rand() * 500 + (vis + reasoning) / speed * 1000, 1)
        return rec


@dataclass
class Account:
    """One customer account: identity, network, client, and the behaviour that drives its traffic."""

    idx: int
    account_id: str
    label: str  # "benign" or "attack"
    strategy: str  # persona name or attack strategy name
    campaign_id: str
    behaviour: Behaviour
    net: NetProfile
    user_agents: list[str]
    api_keys: list[str]
    org_id: str | None = None
    payment_fp: str | None = None
    tz: float = 0.0
    p429: float = 0.003
    p500: float = 0.002
    # adoption of the model released mid-window: (delay after release in s, ramp in s, final share)
    adopt: tuple[float, float, float] = (float("inf"), 1.0, 0.0)
    state: dict[str, Any] = field(default_factory=dict)
    clients: list[tuple[str, str]] = field(default_factory=list)  # (user agent, TLS fingerprint)

    def __post_init__(self) -> None:
        self.set_user_agents(self.user_agents)

    def set_user_agents(self, uas: list[str]) -> None:
        self.user_agents = uas
        self.clients = [(ua, tls_fp(ua)) for ua in uas]

    def new_model_share(self, world: World, ts: float) -> float:
        delay, ramp, top = self.adopt
        dt = ts - world.release_ts - delay
        if dt <= 0 or top <= 0:
            return 0.0
        return top * min(1.0, dt / ramp)

    def model(self, world: World, ts: float, rnd: random.Random, usual: str) -> str:
        """The model this account calls now: its usual one, or the new release as it adopts it."""
        if ts >= world.release_ts and rnd.random() < self.new_model_share(world, ts):
            return RELEASE_MODEL
        return usual


class Behaviour:
    """What drives one account: plans each local day's events, renders each event into an exchange."""

    name: ClassVar[str] = ""

    def plan(
        self, world: World, acct: Account, step: int, day0: float, rng: np.random.Generator
    ) -> list[tuple[float, Any]]:
        """Events `(ts, payload)` of local day `step`, which starts at `day0` (UTC seconds); all ts >= day0."""
        raise NotImplementedError

    def render(
        self, world: World, acct: Account, payload: Any, ts: float, rnd: random.Random
    ) -> dict[str, Any]:
        """The exchange record for one planned event (call `world.finish` on the request)."""
        raise NotImplementedError
