"""Benchmark logs: realistic native JSONL from the real prompt corpora, cached under bench-out/data/.

Where `distillguard simulate` exists (its command, or else its module), a log of up to 1M exchanges is one
simulated day of enough accounts, cut to the exact size; bigger logs (10M) replicate the 1M log. Without
the simulator, a small generator below (the same corpora, a realistic field mix, benign personas and the
attack recipes the signals look for) writes a 100k base that is replicated. Replicas get fresh exchange
ids, accounts, orgs, keys, fingerprints, addresses and ASNs, and each account's timeline is shifted, so
that a 10M log holds 10M distinct exchanges of ten times the accounts, as ten times the traffic would.

Files are named by source, size and seed (`sim-1000000-s7.jsonl`, `gen1-1000000-s7.jsonl`) and written
under a temporary name then renamed: an interrupted run never leaves a partial file a rerun would reuse.
`python benchmarks/data.py 1M` writes (or finds) one and prints its path.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
BENCH_OUT = ROOT / "bench-out"
DATA_DIR = BENCH_OUT / "data"
# The corpora: ../shared/data/prompts (plain), or the copy packaged in the source tree (gzip).
CORPORA = [ROOT.parent / "shared" / "data" / "prompts", ROOT / "src" / "distillguard" / "data" / "prompts"]
BASE_ROWS = 100_000
GENERATOR_VERSION = 1  # bump when generate_base changes, so cached logs are not reused
BASE_ACCOUNTS = 1_000  # ~100 exchanges per account per replica: 10k accounts at 1M, 100k at 10M
DAYS = 3
T0 = datetime(2026, 11, 2, tzinfo=UTC)


# -- corpora ---------------------------------------------------------------------------------------


def _read_corpus(name: str) -> bytes:
    import gzip

    for d in CORPORA:
        if (d / name).exists():
            return (d / name).read_bytes()
        if (d / (name + ".gz")).exists():
            return gzip.decompress((d / (name + ".gz")).read_bytes())
    raise FileNotFoundError(f"prompt corpus {name} not found in {', '.join(map(str, CORPORA))}")


def _jsonl(name: str) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in _read_corpus(name).splitlines() if x.strip()]


class Corpora:
    """The real prompts (and the few real answers) the generator draws from."""

    def __init__(self) -> None:
        self.arena = [d["prompt"] for d in _jsonl("arena_hard_v0.1.jsonl")]
        self.mt = [d["turns"] for d in _jsonl("mt_bench.jsonl")]
        self.vicuna = [d["turns"][0] for d in _jsonl("vicuna_bench.jsonl")]
        self.gsm = [(d["question"], d["answer"]) for d in _jsonl("gsm8k_test.jsonl")]
        self.seed_tasks = _jsonl("self_instruct_seed_tasks.jsonl")
        self.user_tasks = _jsonl("self_instruct_user_oriented.jsonl")
        self.alpaca = _read_corpus("alpaca_generation_prompt.txt").decode()
        # Answer-like text to cut responses from: worked answers, task outputs, and prompts as prose.
        outs = [i["output"] for t in self.seed_tasks + self.user_tasks for i in t["instances"]]
        self.prose = " ".join([a for _q, a in self.gsm] + outs + self.arena)


# -- one base log ----------------------------------------------------------------------------------

UAS = [
    "OpenAI/Python 1.54.3",
    "OpenAI/NodeJS 4.67.1",
    "python-requests/2.32.3",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 Chrome/130.0 Safari/537.36",
    "langchain/0.3.7",
    "curl/8.5.0",
]
MODELS = ["acme-large-2", "acme-large-2", "acme-mini-2", "acme-reasoner-1"]
COUNTRIES = ["US", "US", "GB", "DE", "IN", "BR", "JP", "FR", "CA", "SG"]
ORCA = (
    "You are an AI assistant. User will you give you a task. Your goal is to complete the task as "
    "faithfully as you can. While performing the task think step-by-step and justify your steps."
)
COT = ["Let's think step by step.", "Explain your reasoning step by step.", "Show all your work."]


class _Gen:
    def __init__(self, seed: int, corp: Corpora) -> None:
        self.rng = random.Random(seed)
        self.c = corp
        self.n = 0

    def text(self, median: float, cap: int = 16_000) -> str:
        """A response-like span of real prose, log-normally long (median `median` characters)."""
        n = min(cap, max(20, int(self.rng.lognormvariate(math.log(median), 0.8))))
        i = self.rng.randrange(0, len(self.c.prose) - n - 1)
        return self.c.prose[i : i + n]

    def row(self, acct: dict[str, Any], t: datetime, prompt: str, **kw: Any) -> dict[str, Any]:
        self.n += 1
        rng = self.rng
        resp = kw.pop("response", None) or self.text(kw.pop("resp_median", 1200))
        msgs = [*kw.pop("history", []), {"role": "user", "content": prompt}]
        d: dict[str, Any] = {
            "exchange_id": f"req_{self.n:08d}{rng.getrandbits(32):08x}",
            "ts": t.isoformat(),
            "account_id": acct["id"],
            "org_id": acct["org"],
            "api_key_id": rng.choice(acct["keys"]),
            "client_ip": rng.choice(acct["ips"]),
            "asn": acct["asn"],
            "country": acct["country"],
            "user_agent": acct["ua"],
            "model": kw.pop("model", acct["model"]),
            "messages": msgs,
            "response_text": resp,
            "finish_reason": "stop" if rng.random() < 0.97 else "length",
            "prompt_tokens": (len(prompt) + sum(len(str(m.get("content") or "")) for m in msgs)) // 4 + 8,
            "completion_tokens": len(resp) // 4 + 1,
            "latency_ms": round(rng.lognormvariate(math.log(900 + len(resp) * 2), 0.4), 1),
        }
        if acct.get("end_users"):
            d["end_user"] = rng.choice(acct["end_users"])
        if rng.random() < 0.01:
            d["status"], d["error"], d["finish_reason"] = 429, "rate_limit_exceeded", None
        d.update({k: v for k, v in kw.items() if v is not None})
        return d

    def account(self, i: int, kind: str) -> dict[str, Any]:
        rng = self.rng
        a = f"acct_{i:05d}"
        net = f"{rng.randrange(11, 223)}.{rng.randrange(256)}.{rng.randrange(256)}"
        ips = [f"{net}.{rng.randrange(1, 255)}" for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.1:
            ips.append(f"2001:db8:{rng.randrange(1 << 16):x}::{rng.randrange(1, 1 << 16):x}")
        return {
            "id": a,
            "kind": kind,
            "org": f"org_{i // 3:05d}",
            "keys": [f"key_{a}_{k}" for k in range(rng.randint(1, 3))],
            "ips": ips,
            "asn": rng.randrange(1000, 64000),
            "country": rng.choice(COUNTRIES),
            "ua": rng.choice(UAS),
            "model": rng.choice(MODELS),
            "end_users": [f"u{rng.getrandbits(40):010x}" for _ in range(rng.randint(2, 30))]
            if kind == "app"
            else [],
        }

    def exchanges(self, acct: dict[str, Any], n: int, days: int) -> Iterator[dict[str, Any]]:
        rng, c, kind = self.rng, self.c, acct["kind"]
        for k in range(n):
            day = rng.randrange(days)
            if kind in ("harvest", "selfinst", "sampler"):
                # automated: round the clock, steady spacing
                t = T0 + timedelta(days=day, seconds=(k * 86400 * days / max(n, 1)) % 86400)
            else:
                t = T0 + timedelta(days=day, hours=rng.gauss(14, 3) % 24, seconds=rng.random() * 3600)
            if kind == "chat":
                if rng.random() < 0.3:
                    turns = rng.choice(c.mt)
                    yield self.row(
                        acct,
                        t,
                        turns[1],
                        history=[
                            {"role": "user", "content": turns[0]},
                            {"role": "assistant", "content": self.text(1500)},
                        ],
                        temperature=rng.choice([0.7, 1.0, None]),
                    )
                else:
                    p = rng.choice(c.arena) if rng.random() < 0.8 else rng.choice(c.vicuna)
                    yield self.row(acct, t, p, temperature=rng.choice([0.7, 1.0, None]))
            elif kind == "app":
                task = rng.choice(c.user_tasks)
                inst = rng.choice(task["instances"])
                yield self.row(
                    acct,
                    t,
                    f"{task['instruction']}\n\n{inst['input']}".strip(),
                    system_prompt=f"You are the assistant inside {task['motivation_app']}.",
                    temperature=0.3,
                    max_tokens=1024,
                    attributes={"app": task["motivation_app"]},
                    resp_median=400,
                )
            elif kind == "tutor":
                q, a = rng.choice(c.gsm)
                yield self.row(
                    acct, t, f"{q} Explain step by step for a student.", response=a, temperature=0.5
                )
            elif kind == "eval":
                p = rng.choice(c.arena + c.vicuna)
                yield self.row(acct, t, p, temperature=0.0, max_tokens=2048)
            elif kind == "harvest":
                q, a = rng.choice(c.gsm)
                yield self.row(
                    acct,
                    t,
                    f"{q} {rng.choice(COT)}",
                    system_prompt=ORCA,
                    model="acme-reasoner-1",
                    reasoning_effort="high",
                    reasoning_text=self.text(2500),
                    reasoning_tokens=700,
                    max_tokens=4096,
                    temperature=0.7,
                    response=a,
                )
            elif kind == "selfinst":
                seeds = rng.sample(c.seed_tasks, 3)
                listing = "\n".join(f"{j + 1}. {s['instruction']}" for j, s in enumerate(seeds))
                yield self.row(
                    acct,
                    t,
                    f"{c.alpaca.rstrip()}\n{listing}\n4.",
                    max_tokens=3072,
                    temperature=1.0,
                    top_p=1.0,
                    resp_median=2500,
                )
            else:  # sampler: the same prompt many times, n > 1, logprobs, a temperature sweep
                p = rng.choice(c.arena[:50])
                yield self.row(
                    acct,
                    t,
                    p,
                    n=rng.choice([4, 8]),
                    temperature=rng.choice([0.2, 0.6, 1.0, 1.4]),
                    logprobs=True,
                    top_logprobs=5,
                    max_tokens=4096,
                    resp_median=2000,
                )


KINDS = [
    ("chat", 0.66),
    ("app", 0.12),
    ("tutor", 0.08),
    ("eval", 0.06),
    ("harvest", 0.03),
    ("selfinst", 0.03),
    ("sampler", 0.02),
]


def generate_base(out: Path, rows: int, seed: int, accounts: int = BASE_ACCOUNTS) -> int:
    """Write about `rows` exchanges of `accounts` accounts (heavy-tailed volumes), sorted by time."""
    corp = Corpora()
    g = _Gen(seed, corp)
    rng = g.rng
    kinds = rng.choices([k for k, _ in KINDS], [w for _, w in KINDS], k=accounts)
    weights = [
        rng.paretovariate(1.3) * (3.0 if k in ("harvest", "selfinst", "sampler") else 1.0) for k in kinds
    ]
    total = sum(weights)
    rows_out: list[dict[str, Any]] = []
    for i, (kind, w) in enumerate(zip(kinds, weights, strict=True)):
        acct = g.account(i, kind)
        rows_out.extend(g.exchanges(acct, max(1, round(rows * w / total)), DAYS))
    rows_out.sort(key=lambda d: d["ts"])
    with open(out, "wb") as f:
        for d in rows_out:
            f.write(orjson.dumps(d) + b"\n")
    return len(rows_out)


def _simulator() -> str | None:
    """How to run the simulator here: "cli" (`distillguard simulate`), "api" (its module), or None."""
    exe = Path(sys.executable).parent / "distillguard"
    try:
        helped = subprocess.run([str(exe), "simulate", "--help"], capture_output=True, timeout=120)
        if helped.returncode == 0:
            return "cli"
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        from distillguard.simulate.run import SimConfig, simulate  # noqa: F401
    except ImportError:
        return None
    return "api"


def simulate_log(out: Path, accounts: int, seed: int, how: str) -> None:
    """One simulated day of `accounts` accounts (native JSONL, time-ordered) into `out`."""
    if how == "cli":
        exe = Path(sys.executable).parent / "distillguard"
        cmd = [str(exe), "simulate", "--accounts", str(accounts), "--days", "1", "--seed", str(seed)]
        subprocess.run([*cmd, "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    else:
        from distillguard.simulate.run import SimConfig, simulate

        simulate(SimConfig(accounts=accounts, days=1, seed=seed), out, labels=Path(f"{out}.labels.csv"))


# -- replication -----------------------------------------------------------------------------------


def _replica(d: dict[str, Any], k: int, shift: timedelta) -> dict[str, Any]:
    """Exchange `d` of replica k: fresh ids, accounts, keys and addresses; time shifted per account."""
    s = f"-r{k}"
    d = dict(d)
    d["exchange_id"] = d["exchange_id"] + s
    for f in ("account_id", "org_id", "api_key_id", "end_user", "payment_fp", "device_fp"):
        if d.get(f):
            d[f] = d[f] + s
    ip = d.get("client_ip")
    if ip and "." in ip:
        # A different network per replica (first octet), so that replicas do not share addresses.
        a, rest = ip.split(".", 1)
        d["client_ip"] = f"{(int(a) + 7 * k) % 213 + 11}.{rest}"
    elif ip:
        d["client_ip"] = f"2001:db8:{k:x}:{ip.split(':', 3)[-1]}" if ip.count(":") >= 3 else ip
    if d.get("asn") is not None:
        # ...and a different autonomous system: clones sharing ASN + user agent would link into campaigns.
        d["asn"] = (d["asn"] + 7919 * k) % 400_000 + 1000
    d["ts"] = (datetime.fromisoformat(d["ts"]) + shift).isoformat()
    return d


def _shift(account: str, k: int) -> timedelta:
    h = hashlib.blake2b(f"{account}/{k}".encode(), digest_size=4).digest()
    return timedelta(seconds=int.from_bytes(h) % 7200) if k else timedelta(0)


def replicate(base: Path, out: Path, rows: int) -> int:
    """Write exactly `rows` exchanges: the base log (its first `rows` lines), then replicas of it."""
    n = k = 0
    with open(out, "wb", buffering=1 << 22) as f:
        while n < rows:
            shifts: dict[str, timedelta] = {}
            start = n
            with open(base, "rb", buffering=1 << 22) as src:
                for line in src:
                    if n >= rows:
                        break
                    if not line.strip():
                        continue
                    if k == 0:
                        f.write(line if line.endswith(b"\n") else line + b"\n")
                    else:
                        d = orjson.loads(line)
                        a = d["account_id"]
                        sh = shifts.get(a)
                        if sh is None:
                            sh = shifts[a] = _shift(a, k)
                        f.write(orjson.dumps(_replica(d, k, sh)) + b"\n")
                    n += 1
            if n == start:
                raise ValueError(f"{base} holds no exchanges")
            k += 1
    return n


SIM_MAX_ROWS = 1_000_000  # bigger logs replicate this one (simulating 10M rows would take ~10 minutes)
SIM_ROWS_PER_ACCOUNT = 250  # about what one simulated account-day holds (270 at seed 7)


def bench_log(rows: int, seed: int = 7, say: Any = print) -> Path:
    """The cached bench log of exactly `rows` exchanges (generated on first use), time-ordered per replica.

    Up to `SIM_MAX_ROWS` it is one simulated day of enough accounts, cut to `rows` (the day's first
    hours when the simulator overshoots, replicas when it falls short); above, replicas of that log.
    Without the simulator, replicas of a `generate_base` log. The name says which: sim- or gen-.
    """
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    how = _simulator()
    src = "sim" if how else f"gen{GENERATOR_VERSION}"
    out = DATA_DIR / f"{src}-{rows}-s{seed}.jsonl"
    if out.exists():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        if rows > SIM_MAX_ROWS:
            base = bench_log(SIM_MAX_ROWS, seed, say)
        elif how:
            base = out.with_name(out.name + f".day{os.getpid()}")
            accounts = math.ceil(rows * 1.1 / SIM_ROWS_PER_ACCOUNT)
            say(f"simulating one day of {accounts:,} accounts for {out.name} ...")
            simulate_log(base, accounts, seed, how)
        else:
            base = DATA_DIR / f"gen{GENERATOR_VERSION}-base-s{seed}.jsonl"
            if not base.exists():
                say(f"generating {base.name} (no simulator installed) ...")
                btmp = base.with_name(base.name + f".tmp{os.getpid()}")
                generate_base(btmp, BASE_ROWS, seed)
                btmp.rename(base)
        say(f"writing {out.name} ({rows:,} exchanges) ...")
        replicate(base, tmp, rows)
        tmp.rename(out)
    finally:
        tmp.unlink(missing_ok=True)
        for p in DATA_DIR.glob(f"{out.name}.day{os.getpid()}*"):
            p.unlink()
    return out


def label(rows: int) -> str:
    """1000000 -> "1M", 10000000 -> "10M", 60000 -> "60k"."""
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    if rows % 1_000 == 0:
        return f"{rows // 1_000}k"
    return str(rows)


def source_of(log: Path) -> str:
    if log.name.startswith("sim-"):
        return "distillguard simulate" + (" (replicated)" if _rows_of(log) > SIM_MAX_ROWS else "")
    return "benchmarks/data.py generator (replicated)"


def _rows_of(log: Path) -> int:
    return int(log.name.split("-")[1])


if __name__ == "__main__":
    arg = sys.argv[1].upper() if len(sys.argv) > 1 else "1M"
    n = int(float(arg.rstrip("KM")) * {"K": 1_000, "M": 1_000_000}.get(arg[-1], 1))
    print(bench_log(n))
