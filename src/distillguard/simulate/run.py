"""Build a population of benign and attacking accounts and write their traffic, sorted by time.

The window is produced one UTC day at a time (`merged`): every account plans its local days with light
events, the day's events are sorted together, and each is rendered into an exchange only as it is written.
So a run holds one day of plans plus the lines being written, whatever the number of days. Each account's
randomness comes from its own generators, seeded from (seed, account, day): a seed gives the same bytes
every time, and shards of accounts can be rendered in worker processes and merged back by (time, account,
sequence) into the same bytes.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import heapq
import queue
import random
import struct
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from distillguard.exchange import Exchange, validate
from distillguard.ingest.native import dump_line
from distillguard.simulate import corpora
from distillguard.simulate.attacks import STRATEGIES, AttackStrategy, Seat
from distillguard.simulate.base import DAY, HOUR, Account, Behaviour, World
from distillguard.simulate.held_out import HELD_OUT
from distillguard.simulate.held_out_personas import (
    HELD_OUT_P429,
    HELD_OUT_PERSONA_WEIGHT,
    HELD_OUT_PERSONAS,
    HELD_OUT_UA,
)
from distillguard.simulate.network import (
    NetProfile,
    nat_pool,
    stable_profile,
    tz_for,
    ua_litellm,
    user_agents,
)
from distillguard.simulate.personas import PERSONA_WEIGHTS, PERSONAS
from distillguard.simulate.responses import Bank

HYDRA = "hydra"
# The default mix, then the held-out strategies (simulate.held_out), named only on request. Appended, so a
# default strategy's random stream (seeded by its index here) does not move.
ALL_STRATEGIES: dict[str, type[AttackStrategy]] = {**STRATEGIES, **HELD_OUT}
# Benign personas likewise: the default population, then the held-out ones (simulate.held_out_personas).
ALL_PERSONAS: dict[str, type[Behaviour]] = {**PERSONAS, **HELD_OUT_PERSONAS}
OTLP_SERVICE = "acme-api-gateway"
OTLP_BATCH = 64  # spans per OTLP line, about what a collector's batch processor emits

_UA_BY_PERSONA: dict[str, dict[str, float]] = {
    "chat": {"python": 0.4, "node": 0.2, "browser": 0.25, "curl": 0.05, "langchain": 0.1},
    "power_user": {"python": 0.45, "node": 0.2, "browser": 0.25, "curl": 0.1},
    "developer": {"python": 0.45, "node": 0.25, "curl": 0.1, "httpx": 0.05, "langchain": 0.1, "go": 0.05},
    "back_office": {"python": 0.4, "httpx": 0.1, "go": 0.15, "node": 0.15, "langchain": 0.1, "litellm": 0.1},
    "tutoring": {"node": 0.5, "python": 0.4, "go": 0.1},
    "eval_harness": {"python": 0.5, "httpx": 0.2, "aiohttp": 0.2, "litellm": 0.1},
    **HELD_OUT_UA,
}
_P429 = {
    "chat": 0.002,
    "power_user": 0.01,
    "developer": 0.004,
    "back_office": 0.01,
    "tutoring": 0.005,
    "eval_harness": 0.02,
    **HELD_OUT_P429,
}
_PERSON = ("chat", "power_user", "developer")  # people at home or in an office
_SERVICE = ("back_office", "tutoring", "eval_harness")  # jobs and app backends in a cloud


@dataclass
class SimConfig:
    """What to simulate. Fractions are defaults that give a realistic mix; all are configurable."""

    accounts: int = 1000
    days: int = 7
    seed: int = 0
    start: date = date(2026, 11, 1)
    attack_fraction: float = 0.15
    # hydra size: max(floor, hydra_fraction * accounts); floor 100 from 700 accounts up, else 20
    hydra_fraction: float = 0.04
    hydra_size: int | None = None
    min_per_strategy: int = 2
    strategies: tuple[str, ...] | None = None  # None: every default strategy (plus `extra`)
    exclude: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()  # held-out strategies added to the default mix
    extra_personas: tuple[str, ...] = ()  # held-out benign personas added to the default population
    persona_weights: dict[str, float] = field(default_factory=lambda: dict(PERSONA_WEIGHTS))
    strategy_weights: dict[str, float] = field(default_factory=dict)  # default 1 each (hydra sized apart)
    release_at: datetime | None = None  # default: a third into the window, 17:00 UTC
    corporate_nat_share: float = 0.15  # people-personas behind a shared office NAT (several accounts, one IP)
    shared_egress_share: float = 0.3  # service personas behind a shared SaaS/cloud egress
    exact: bool = False  # write every record through validate + dump_line (slower; same bytes)
    volume: float = 1.0  # scale on every account's daily requests (0.1: a light log for tests and demos)

    def enabled(self) -> list[str]:
        names = [*STRATEGIES, *self.extra] if self.strategies is None else list(self.strategies)
        unknown = [n for n in [*names, *self.exclude, *self.extra] if n not in ALL_STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategies {', '.join(unknown)}; known: {', '.join(ALL_STRATEGIES)}")
        return [n for n in ALL_STRATEGIES if n in names and n not in self.exclude]

    def benign_weights(self) -> dict[str, float]:
        """The benign population's persona weights, held-out personas added (each unknown name named)."""
        unknown = [n for n in self.extra_personas if n not in HELD_OUT_PERSONAS]
        if unknown:
            raise ValueError(
                f"unknown held-out personas {', '.join(unknown)}; known: {', '.join(HELD_OUT_PERSONAS)}"
            )
        extra = {n: HELD_OUT_PERSONA_WEIGHT for n in HELD_OUT_PERSONAS if n in self.extra_personas}
        return {**self.persona_weights, **extra}


@dataclass
class Population:
    world: World
    accounts: list[Account]


@dataclass
class Summary:
    exchanges: int
    accounts: int
    benign: int
    attack: int
    campaigns: int
    seconds: float
    by_strategy: dict[str, int]  # exchanges per persona / strategy

    @property
    def rate(self) -> float:
        return self.exchanges / self.seconds if self.seconds > 0 else 0.0


def _largest_remainder(total: int, weights: dict[str, float], floor: int = 0) -> dict[str, int]:
    names = [n for n, w in weights.items() if w > 0]
    if not names or total <= 0:
        return dict.fromkeys(names, 0)
    base = dict.fromkeys(names, min(floor, total // len(names)))
    rest = total - sum(base.values())
    w = np.array([weights[n] for n in names], dtype=float)
    raw = rest * w / w.sum()
    cnt = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - cnt), kind="stable")[: rest - int(cnt.sum())]:
        cnt[i] += 1
    return {n: base[n] + int(c) for n, c in zip(names, cnt, strict=True)}


def plan_counts(cfg: SimConfig) -> tuple[dict[str, int], dict[str, int]]:
    """(accounts per benign persona, accounts per attack strategy) for a config."""
    n = cfg.accounts
    enabled = cfg.enabled()
    attack: dict[str, int] = {}
    if HYDRA in enabled:
        floor = 100 if n >= 700 else 20
        attack[HYDRA] = (
            cfg.hydra_size if cfg.hydra_size is not None else max(floor, round(cfg.hydra_fraction * n))
        )
    others = [s for s in enabled if s != HYDRA]
    if others:
        want = round(cfg.attack_fraction * n) - attack.get(HYDRA, 0)
        total = max(len(others) * cfg.min_per_strategy, want)
        weights = {s: cfg.strategy_weights.get(s, 1.0) for s in others}
        attack.update(_largest_remainder(total, weights, cfg.min_per_strategy))
    n_benign = n - sum(attack.values())
    if n_benign < len(PERSONAS):
        raise ValueError(
            f"{n} accounts are too few for the enabled strategies ({sum(attack.values())} attack accounts); "
            f"use more accounts or fewer strategies"
        )
    benign = _largest_remainder(n_benign, cfg.benign_weights(), 1)
    return benign, attack


def _window(cfg: SimConfig) -> tuple[float, float]:
    start = datetime(cfg.start.year, cfg.start.month, cfg.start.day, tzinfo=UTC)
    if cfg.release_at is not None:
        rel = cfg.release_at if cfg.release_at.tzinfo else cfg.release_at.replace(tzinfo=UTC)
    elif cfg.days >= 2:
        rel = start + timedelta(days=max(1, cfg.days // 3), hours=17)
    else:
        rel = start + timedelta(hours=10)
    return start.timestamp(), rel.timestamp()


def build(cfg: SimConfig) -> Population:
    """The population: every account with its behaviour, network, client and label."""
    if cfg.accounts <= 0 or cfg.days <= 0:
        raise ValueError("accounts and days must be positive")
    benign_n, attack_n = plan_counts(cfg)
    corp = corpora.load()
    start, release = _window(cfg)
    world = World(
        corp, Bank(corp, cfg.seed), cfg.seed, start, cfg.days, cfg.start.weekday(), release, cfg.volume
    )
    rng = np.random.default_rng([cfg.seed, 0x51D])
    n = cfg.accounts
    # One id generator for everyone: an id says nothing about what the account is.
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        a = f"acct_{int(rng.integers(0, 2**63)):016x}"
        if a not in seen:
            seen.add(a)
            ids.append(a)

    def hexs(prefix: str, k: int = 1) -> list[str]:
        return [f"{prefix}{int(x):012x}" for x in rng.integers(0, 2**48, k)]

    accounts: list[Account] = []
    # benign ------------------------------------------------------------------------------------------
    persons: list[Account] = []
    services: list[Account] = []
    for name, count in benign_n.items():
        cls = ALL_PERSONAS[name]
        for _ in range(count):
            prng = np.random.default_rng([cfg.seed, 0xBE, len(accounts)])
            beh = cls(world, prng)  # type: ignore[call-arg]
            if name in _PERSON:
                net = stable_profile(prng)
                tz = tz_for(net.endpoints[0].country, prng)
            else:
                kind = "business" if name == "eval_harness" and prng.random() < 0.5 else "cloud"
                net = NetProfile("pool", nat_pool(prng, kind))
                tz = tz_for(str(prng.choice(["US", "US", "DE", "GB", "IN", "JP", "FR", "BR"])), prng)
            org = prng.random() < {"chat": 0.2, "power_user": 0.3, "developer": 0.6}.get(name, 1.0)
            acct = Account(
                idx=len(accounts),
                account_id="",
                label="benign",
                strategy=name,
                campaign_id="",
                behaviour=beh,
                net=net,
                user_agents=user_agents(prng, _UA_BY_PERSONA[name], 1 if prng.random() < 0.8 else 2),
                api_keys=hexs("key_", int(prng.integers(1, 4))),
                org_id=hexs("org_")[0] if org else None,
                payment_fp=hexs("pm_")[0],
                tz=tz,
                p429=_P429[name],
                adopt=_benign_adoption(prng),
            )
            accounts.append(acct)
            (persons if name in _PERSON else services).append(acct)
    _share_infrastructure(rng, persons, services, cfg)
    # attack ------------------------------------------------------------------------------------------
    n_campaigns = 0
    for name, count in attack_n.items():
        strat = ALL_STRATEGIES[name]()
        srng = np.random.default_rng([cfg.seed, 0xA7, list(ALL_STRATEGIES).index(name)])
        for size in strat.campaign_sizes(count, srng):
            n_campaigns += 1
            cid = f"camp_{n_campaigns:03d}"
            seats: list[Seat] = strat.seats(world, size, srng)
            for slot, seat in enumerate(seats):
                accounts.append(
                    Account(
                        idx=len(accounts),
                        account_id="",
                        label="attack",
                        strategy=name,
                        campaign_id=cid,
                        behaviour=seat.behaviour,
                        net=seat.net,
                        user_agents=seat.user_agents,
                        api_keys=hexs("key_", int(srng.integers(1, 3))),
                        org_id=hexs("org_")[0] if seat.org else None,
                        payment_fp=seat.payment_fp,
                        tz=seat.tz,
                        p429=seat.p429,
                        p500=seat.p500,
                        adopt=seat.adopt,
                        state={"slot": slot},
                    )
                )
    # Ids are dealt in a random order, so neither id nor position reveals the label.
    for acct, j in zip(accounts, rng.permutation(n), strict=True):
        acct.account_id = ids[int(j)]
    return Population(world, accounts)


def _benign_adoption(rng: np.random.Generator) -> tuple[float, float, float]:
    """How a customer moves to a newly released model: most not within weeks, some over days, a few early."""
    u = rng.random()
    if u < 0.55:
        return (float("inf"), 1.0, 0.0)
    if u < 0.9:
        return (
            float(rng.uniform(1, 10)) * DAY,
            float(rng.uniform(3, 14)) * DAY,
            float(rng.uniform(0.2, 0.7)),
        )
    return (float(rng.uniform(3, 48)) * HOUR, float(rng.uniform(1, 5)) * DAY, float(rng.uniform(0.3, 0.8)))


def _share_infrastructure(
    rng: np.random.Generator, persons: list[Account], services: list[Account], cfg: SimConfig
) -> None:
    """Benign accounts that share addresses: colleagues behind one office NAT (same org), and services
    behind one SaaS or cloud egress (an LLM gateway product, say). Shared infrastructure alone is normal."""
    order = rng.permutation(len(persons))
    k = int(len(persons) * cfg.corporate_nat_share)
    i = 0
    while i < k:
        size = min(int(rng.integers(3, 11)), k - i)
        if size < 2:
            break
        nat = nat_pool(rng, "business", int(rng.integers(1, 4)))
        org = f"org_{int(rng.integers(0, 2**48)):012x}"
        for j in order[i : i + size]:
            a = persons[int(j)]
            home = a.net.endpoints[0]
            a.net = NetProfile("stable", [*nat, home], main_share=float(rng.uniform(0.6, 0.9)))
            a.org_id = org
        i += size
    order = rng.permutation(len(services))
    k = int(len(services) * cfg.shared_egress_share)
    i = 0
    while i < k:
        size = min(int(rng.integers(2, 7)), k - i)
        if size < 2:
            break
        egress = nat_pool(rng, "cloud", int(rng.integers(1, 4)))
        ua = ua_litellm(rng)
        for j in order[i : i + size]:
            a = services[int(j)]
            a.net = NetProfile("pool", egress, shared=True)
            a.set_user_agents([ua])
        i += size


# -- writing ------------------------------------------------------------------------------------------------
CHECK_EVERY = 97  # one record in this many is also written the canonical way and compared


def encode_line(rec: dict[str, Any]) -> bytes:
    """`dump_line(validate(rec))` for a record of this simulator, without the pydantic round trip.

    `World.finish` writes a record's keys in Exchange order, leaves out fields at their default and keeps
    values in canonical form (floats where the model has floats, normalised IPs, the timestamp as pydantic
    writes it), so the canonical line is the record itself. `simulate` compares the two on a sample of
    records and switches to the canonical writer if they ever differ; the tests compare every record.
    """
    return orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE)


def canonical_line(rec: dict[str, Any]) -> bytes:
    """The reference: validate into an `Exchange` and write it with the native adapter's `dump_line`."""
    return dump_line(validate(rec))


# -- streaming ------------------------------------------------------------------------------------------
Timed = tuple[float, int, int, dict[str, Any]]  # (ts, account idx, seq, record)


def _first(e: tuple[float, Any]) -> float:
    return e[0]


class _Cursor:
    """Where one account's planning stands: the next local day to plan and events planned but not yet due."""

    __slots__ = ("floor", "pending", "step")

    def __init__(self) -> None:
        self.step = -1  # local day -1 covers the window's first hours for accounts east of UTC
        self.pending: list[tuple[float, Any]] = []
        self.floor = 0.0


def _render_rnd(seed: int, idx: int, day: int) -> random.Random:
    state = np.random.SeedSequence([seed, idx, day, 0x5E]).generate_state(2, np.uint64)
    return random.Random(int(state[0]) << 64 | int(state[1]))


def merged(pop: Population, accounts: list[Account] | None = None) -> Iterator[Timed]:
    """`(ts, account index, seq, record)` for the given accounts (default all) in time order.

    One UTC day at a time: every account plans the local days that start before the day ends (each plan
    from its own generator, seeded by seed, account and local day), the day's events of all accounts are
    sorted at once, and each is rendered (with the account's own generator for that day) only as it is
    yielded. Memory holds one day of light plans; an account's exchanges depend on nothing but itself, so
    any subset of accounts gives the same records for them (what the worker processes rely on).
    """
    world = pop.world
    accts = pop.accounts if accounts is None else accounts
    cursors = [_Cursor() for _ in accts]
    for a, cur in zip(accts, cursors, strict=True):
        if a.tz >= 0:  # local day -1 ends by the window start: nothing of it would be kept
            cur.step = 0
    w0, w1 = world.start, world.end
    for d in range(world.days):
        day_start = w0 + d * DAY
        day_end = day_start + DAY
        ts_l: list[float] = []
        who: list[int] = []
        what: list[Any] = []
        for pos, a in enumerate(accts):
            cur = cursors[pos]
            shift = a.tz * HOUR
            while True:
                day0 = w0 + cur.step * DAY - shift
                if day0 >= day_end or day0 >= w1:
                    break
                rng = np.random.default_rng([world.seed, a.idx, cur.step + 1])
                cur.pending.extend(a.behaviour.plan(world, a, cur.step, day0, rng))
                cur.step += 1
            if not cur.pending:
                continue
            cur.pending.sort(key=_first)
            cut = bisect.bisect_left(cur.pending, day_end, key=_first)
            floor = cur.floor
            for t, payload in cur.pending[:cut]:
                if t < w0:
                    continue
                ts_l.append(t if t >= floor else floor)  # a plan never reaches back into a day already out
                who.append(pos)
                what.append(payload)
            del cur.pending[:cut]
            cur.floor = day_end
        if not ts_l:
            continue
        # Milliseconds, as gateways log them (rounding keeps each account's order).
        ts_a = np.round(np.asarray(ts_l), 3)
        who_a = np.asarray(who)
        order = np.lexsort((np.arange(len(ts_l)), who_a, ts_a))
        # Per-day state by position in `accts` (lists, not dicts: this loop runs once per exchange).
        rnds: list[random.Random | None] = [None] * len(accts)
        seqs = [0] * len(accts)
        for j, ts, p in zip(order.tolist(), ts_a[order].tolist(), who_a[order].tolist(), strict=True):
            a = accts[p]
            rnd = rnds[p]
            if rnd is None:
                rnd = rnds[p] = _render_rnd(world.seed, a.idx, d)
            rec = a.behaviour.render(world, a, what[j], ts, rnd)
            rec["ts"] = iso_ts(ts)
            seq = seqs[p]
            seqs[p] = seq + 1
            yield ts, a.idx, d << 32 | seq, rec
        del ts_l, who, what


_MINUTE: dict[int, str] = {}


def iso_ts(ts: float) -> str:
    """UTC epoch seconds (millisecond precision) in pydantic's JSON form: 2026-11-01T09:30:00.250000Z."""
    ms = round(ts * 1000)
    minute, rest = divmod(ms, 60000)
    pre = _MINUTE.get(minute)
    if pre is None:
        if len(_MINUTE) > 4096:  # records come in time order: old minutes are not needed again
            _MINUTE.clear()
        pre = _MINUTE[minute] = datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%M:")
    s, msec = divmod(rest, 1000)
    if msec:
        return f"{pre}{s:02d}.{msec:03d}000Z"
    return f"{pre}{s:02d}Z"


def exchanges(pop: Population) -> Iterator[dict[str, Any]]:
    """Every account's exchanges in timestamp order, as dicts ready for `distillguard.exchange.validate`."""
    for item in merged(pop):
        yield item[3]


def write_labels(pop: Population, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["account_id", "label", "campaign_id", "strategy"])
        for a in sorted(pop.accounts, key=lambda a: a.account_id):
            w.writerow([a.account_id, a.label, a.campaign_id, a.strategy])


def labels_path_for(out: Path) -> Path:
    """Default labels file: the log's name with its suffixes replaced by `.labels.csv`."""
    name = out.name
    for suf in (".gz", ".jsonl", ".json", ".ndjson", ".log"):
        name = name.removesuffix(suf)
    return out.with_name(name + ".labels.csv")


class _Writer:
    """Writes chunks on a background thread: zlib and file writes release the GIL, so compressing a .gz
    log costs the generator next to nothing. One thread, chunks in order: the bytes are deterministic."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._out: IO[bytes] | gzip.GzipFile = self._raw
        if path.suffix == ".gz":
            # No file name or time in the header, so the same seed gives the same bytes.
            self._out = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=3)
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="simulate-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._q.get()) is not None:
            if self._error is None:
                try:
                    self._out.write(chunk)
                except BaseException as e:  # reported by write()/close() on the caller's thread
                    self._error = e

    def write(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(chunk)

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        if self._out is not self._raw:
            self._out.close()
        self._raw.close()
        if self._error is not None:
            raise self._error


class _Lines:
    """Native lines from records: the fast encoder, checked against `dump_line` on a sample of records."""

    def __init__(self, exact: bool) -> None:
        self.exact = exact
        self.n = 0

    def __call__(self, rec: dict[str, Any]) -> bytes:
        self.n += 1
        if self.exact:
            return canonical_line(rec)
        line = encode_line(rec)
        if self.n % CHECK_EVERY == 1 and line != (ref := canonical_line(rec)):
            warnings.warn(
                "simulate: the fast writer and dump_line disagree; using dump_line for every record",
                RuntimeWarning,
                stacklevel=2,
            )
            self.exact = True
            return ref
        return line


Key = tuple[float, int, int]
BATCH = 1024


def _local(pop: Population, exact: bool) -> Iterator[tuple[Key, bytes]]:
    lines = _Lines(exact)
    for ts, idx, seq, rec in merged(pop):
        yield (ts, idx, seq), lines(rec)


# Worker protocol (stdout of `python -m distillguard.simulate.worker`): frames of a header (records, bytes
# of lines), the records' keys and line lengths as a packed array, then the lines; a 0-record frame ends.
_HEADER = struct.Struct("<II")
_KEYS = np.dtype([("ts", "<f8"), ("idx", "<i4"), ("seq", "<i8"), ("len", "<i4")])


def run_shard(cfg: SimConfig, shard: int, shards: int, out: IO[bytes]) -> None:
    """Render the accounts with idx % shards == shard and write them to `out` as protocol frames."""
    pop = build(cfg)
    lines = _Lines(cfg.exact)
    keys: list[tuple[float, int, int, int]] = []
    chunk: list[bytes] = []

    def flush() -> None:
        blob = b"".join(chunk)
        out.write(_HEADER.pack(len(chunk), len(blob)))
        out.write(np.array(keys, dtype=_KEYS).tobytes())
        out.write(blob)
        keys.clear()
        chunk.clear()

    for ts, idx, seq, rec in merged(pop, [a for a in pop.accounts if a.idx % shards == shard]):
        line = lines(rec)
        keys.append((ts, idx, seq, len(line)))
        chunk.append(line)
        if len(chunk) == BATCH:
            flush()
    if chunk:
        flush()
    out.write(_HEADER.pack(0, 0))
    out.flush()


def _read_exact(f: IO[bytes], n: int) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise EOFError
    return b


def _frames(proc: Any, errlog: IO[bytes]) -> Iterator[tuple[Key, bytes]]:
    f = proc.stdout
    try:
        while True:
            count, size = _HEADER.unpack(_read_exact(f, _HEADER.size))
            if count == 0:
                return
            k = np.frombuffer(_read_exact(f, count * _KEYS.itemsize), dtype=_KEYS)
            blob = _read_exact(f, size)
            ends = np.cumsum(k["len"]).tolist()
            starts = [0, *ends[:-1]]
            keys = zip(k["ts"].tolist(), k["idx"].tolist(), k["seq"].tolist(), strict=True)
            yield from zip(keys, [blob[a:b] for a, b in zip(starts, ends, strict=True)], strict=True)
    except EOFError:
        proc.wait()
        errlog.seek(0)
        raise RuntimeError(
            f"simulate worker exited with {proc.returncode}:\n{errlog.read().decode(errors='replace')[-4000:]}"
        ) from None


def _parallel(cfg: SimConfig, workers: int, procs: list[Any]) -> Iterator[tuple[Key, bytes]]:
    """Shards of accounts rendered in worker processes, merged back by (ts, account, seq): the same bytes
    as one process makes, since every account's stream depends on nothing but itself.

    Workers are plain subprocesses reading their job from stdin and writing frames to stdout: no fork (the
    caller may run threads) and no re-import of the caller's main module (as multiprocessing's spawn does).
    """
    import pickle
    import subprocess
    import sys
    import tempfile

    streams = []
    for i in range(workers):
        err = tempfile.TemporaryFile()  # noqa: SIM115 - closed by simulate() once the worker is done
        proc = subprocess.Popen(
            [sys.executable, "-m", "distillguard.simulate.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        procs.append((proc, err))
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps((cfg, i, workers)))
        proc.stdin.close()
        streams.append(_frames(proc, err))
    yield from heapq.merge(*streams)


def default_workers(cfg: SimConfig) -> int:
    """One process for small runs (a worker costs about a second to start) and on machines with few
    CPUs (the parent merging and writing needs one); else a worker per spare CPU, up to 8."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cfg.accounts * cfg.days * cfg.volume < 1500 or cpus < 4:
        return 1
    return min(8, cpus - 1)


def simulate(
    cfg: SimConfig,
    out: Path,
    fmt: str = "native",
    labels: Path | None = None,
    on_progress: Callable[[float, int], None] | None = None,
    workers: int | None = None,
) -> Summary:
    """Simulate `cfg`, write the log to `out` (native JSONL or OTLP JSON; `.gz` is gzipped) and the labels.

    `on_progress(fraction_of_window_done, exchanges_so_far)` is called every few thousand exchanges.
    `workers` > 1 renders shards of accounts in that many processes (default: `default_workers`); the
    output is the same either way.
    """
    if fmt not in ("native", "otlp"):
        raise ValueError(f"unknown format {fmt!r}; use native or otlp")
    t0 = time.perf_counter()
    pop = build(cfg)
    write_labels(pop, labels or labels_path_for(out))
    per_account: Counter[int] = Counter()
    n = 0
    start, span = pop.world.start, pop.world.end - pop.world.start
    workers = default_workers(cfg) if workers is None else workers
    procs: list[Any] = []
    f = _Writer(out)
    try:
        buf: list[bytes] = []
        if fmt == "otlp":
            from distillguard.ingest.otel import to_otlp_line

            batch: list[Exchange] = []
            for ts, idx, _, rec in merged(pop):
                per_account[idx] += 1
                batch.append(validate(rec))
                if len(batch) == OTLP_BATCH:
                    f.write(to_otlp_line(batch, service_name=OTLP_SERVICE))
                    batch = []
                n += 1
                if on_progress is not None and n % 4096 == 0:
                    on_progress((ts - start) / span, n)
            if batch:
                f.write(to_otlp_line(batch, service_name=OTLP_SERVICE))
        else:
            stream = _parallel(cfg, workers, procs) if workers > 1 else _local(pop, cfg.exact)
            for key, line in stream:
                per_account[key[1]] += 1
                buf.append(line)
                n += 1
                if len(buf) == 1024:
                    f.write(b"".join(buf))
                    buf.clear()
                    if on_progress is not None and n % 4096 == 0:
                        on_progress((key[0] - start) / span, n)
            f.write(b"".join(buf))
    finally:
        f.close()
        for proc, err in procs:
            if proc.poll() is None:
                proc.kill()  # only on error: a finished worker has exited already
            proc.wait()
            err.close()
    per_strategy: Counter[str] = Counter()
    for a in pop.accounts:
        per_strategy[a.strategy] += per_account.get(a.idx, 0)
    if on_progress is not None:
        on_progress(1.0, n)
    return Summary(
        exchanges=n,
        accounts=len(pop.accounts),
        benign=sum(a.label == "benign" for a in pop.accounts),
        attack=sum(a.label == "attack" for a in pop.accounts),
        campaigns=len({a.campaign_id for a in pop.accounts if a.campaign_id}),
        seconds=time.perf_counter() - t0,
        by_strategy=dict(per_strategy),
    )
