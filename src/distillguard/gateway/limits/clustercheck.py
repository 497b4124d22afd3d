"""The exactness bar end to end: real gateway processes sharing Redis and one identity database.

`run_cluster` starts a counting mock upstream and N `distillguard gateway serve` processes (their own
ports and audit logs, one Redis, one identity database), then drives many concurrent clients (asyncio,
one coroutine each, bounded by the deadline) on ONE key with a TPM limit. Meanwhile a second key is
probed on every gateway and revoked through the admin CLI (`distillguard gateway revoke-key`).

What it measures, from three independent counts (the clients', the audit logs', the mock's):

* admitted tokens: every admitted request's real usage (the mock answers with a usage no larger than
  the gateway's reservation, prompt bytes / 4 + 1 + max_tokens, as a real upstream's is), summed over
  the most loaded 60 s window; the bar is limit + one request's reservation;
* every request the clients sent is one audit record, and the admitted ones are exactly the ones the
  mock served;
* revocation, twice: one probe key revoked while the load runs, one after it (gateways idle but for
  the probes). Per gateway: the time from the key's `revoked_at` (written by the CLI just before its
  commit, so the measure errs long) to the arrival of the first request refused as revoked, and any
  request arriving more than 1 s after `revoked_at` that was still admitted. Under a load that queues
  requests for seconds the first measure includes the queue; the idle one is the propagation itself.

Used by tests/gateway/test_cluster.py (small) and benchmarks/gateway_exactness.py (the issue's size).
The mock runs as `python -m distillguard.gateway.limits.clustercheck upstream PORT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from distillguard.gateway.body import receive_body
from distillguard.gateway.limits.model import WINDOWS_MS

MODEL = "mock-mini"
CHARS_PER_TOKEN = 4  # as gateway/policy.py: the reservation is len(body) // 4 + 1 + max_tokens


# -- the counting mock upstream --------------------------------------------------------------------------


def usage_for(raw: bytes, body: dict[str, Any]) -> tuple[int, int]:
    """(prompt, completion) tokens the mock reports: at most the gateway's reservation, at least 1/4 of it.

    The completion's share comes from a hash of the body, so the clients can predict it and the runs
    repeat; a real upstream's usage is likewise bounded by prompt + max_tokens.
    """
    prompt = len(raw) // CHARS_PER_TOKEN + 1
    mt = int(body.get("max_tokens") or 16)
    frac = 0.25 + 0.75 * (zlib.crc32(raw) / 2**32)
    return prompt, max(1, int(mt * frac))


class CountingUpstream:
    """OpenAI-shaped chat completions that count what they served; `GET /stats` reports the counts."""

    def __init__(self) -> None:
        self.served: list[tuple[str, int]] = []  # (last user message, total tokens reported)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                done = "startup" if msg["type"] == "lifespan.startup" else "shutdown"
                await send({"type": f"lifespan.{done}.complete"})
                if done == "shutdown":
                    return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            stats = {"served": self.served}
            await _send_json(send, 200, orjson.dumps(stats))
            return
        raw = await receive_body(receive, 1 << 40)  # any size: the gateway bounds bodies, a mock does not
        body = orjson.loads(raw)
        prompt, completion = usage_for(raw, body)
        msgs = body.get("messages") or [{}]
        self.served.append((str(msgs[-1].get("content", "")), prompt + completion))
        answer = {
            "id": "chatcmpl-count",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", MODEL),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
        await _send_json(send, 200, orjson.dumps(answer))


async def _send_json(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve_upstream(port: int) -> None:
    import uvicorn

    uvicorn.run(CountingUpstream(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the cluster --------------------------------------------------------------------------------------


@dataclass
class ClusterSpec:
    """One run. `identity_db`: SQLAlchemy URL or SQLite path (default: a SQLite file in `workdir`)."""

    redis_url: str
    workdir: Path
    gateways: int = 4
    clients: int = 1_000
    seconds: float = 20.0
    tpm: int = 100_000
    min_max_tokens: int = 100
    max_max_tokens: int = 2_000
    revoke_after_s: float = 2.0
    probe_interval_s: float = 0.02
    identity_db: str | None = None
    fsync: bool = True
    seed: int = 0
    startup_timeout_s: float = 90.0


@dataclass
class Revocation:
    """How fast a key revoked through the admin CLI stopped working, per gateway.

    `gateway_s`: from `revoked_at` to the arrival (the audit record's `ts`) of the first request that
    gateway refused as revoked, an upper bound of the propagation time (probes are `probe_interval_s`
    apart). `client_s`: the same to the moment the client received that refusal, which adds the
    request's time in the gateway's queue under load. `late_admitted`: requests that arrived more than
    1 s after `revoked_at` and were still admitted (the bar: none).
    """

    cli_s: float  # wall time of the admin CLI, start to exit
    gateway_s: dict[int, float | None]
    client_s: dict[int, float | None]
    late_admitted: int
    admitted_before: dict[int, int]  # probes admitted before the revocation (the key did work)
    refused: int = 0  # probes refused as revoked
    refused_attributed: int = 0  # ... whose audit record names the key (who keeps using a revoked key)

    @property
    def worst_s(self) -> float | None:
        vals = list(self.gateway_s.values())
        return None if not vals or any(v is None for v in vals) else max(v for v in vals if v is not None)

    def summary(self) -> dict[str, Any]:
        return {
            "cli_s": round(self.cli_s, 3),
            "gateway_ms": _ms(self.gateway_s),
            "client_ms": _ms(self.client_s),
            "worst_ms": None if self.worst_s is None else round(self.worst_s * 1000, 1),
            "late_admitted": self.late_admitted,
            "refused": self.refused,
            "refused_attributed": self.refused_attributed,
            "admitted_before": {str(g): v for g, v in sorted(self.admitted_before.items())},
        }


@dataclass
class ClusterResult:
    spec: ClusterSpec
    elapsed_s: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)  # the load clients' responses
    codes: Counter[str] = field(default_factory=Counter)  # error codes of refusals
    errors: Counter[str] = field(default_factory=Counter)  # exceptions (no HTTP response)
    sent: int = 0
    client_ok: set[str] = field(default_factory=set)  # nonces answered 200
    unanswered: set[str] = field(default_factory=set)  # nonces that got no HTTP response (errors)
    unanswered_in_audit: int = 0  # ... of which the gateway had read (so they are in its audit log)
    client_tokens: int = 0
    admitted_reservations: int = 0  # sum of the admitted requests' reservations (before refunds)
    max_reservation: int = 0
    audit_records: int = 0  # the load key's records, all gateways
    audit_ok: set[str] = field(default_factory=set)
    audit_tokens: int = 0
    audit_duplicates: int = 0
    max_window_tokens: int = 0  # most real usage admitted in any 60 s (by the audit's ts)
    mock_requests: int = 0
    mock_tokens: int = 0
    mock_ok: set[str] = field(default_factory=set)
    revocations: dict[str, Revocation] = field(default_factory=dict)  # "load", "idle"
    per_gateway: Counter[int] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)

    @property
    def bound(self) -> int:
        return self.spec.tpm + self.max_reservation

    @property
    def exact(self) -> bool:
        return self.max_window_tokens <= self.bound

    def summary(self) -> dict[str, Any]:
        return {
            "gateways": self.spec.gateways,
            "clients": self.spec.clients,
            "seconds": round(self.elapsed_s, 2),
            "requests": self.sent,
            "requests_per_s": round(self.sent / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "latency_ms": _percentiles(self.latencies_s),
            "per_gateway": {str(g): v for g, v in sorted(self.per_gateway.items())},
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "refusal_codes": dict(self.codes),
            "errors": dict(self.errors),
            "tpm": self.spec.tpm,
            "max_reservation": self.max_reservation,
            "admitted_reservations": self.admitted_reservations,
            "max_window_tokens": self.max_window_tokens,
            "excess_over_limit": self.max_window_tokens - self.spec.tpm,
            "bound": self.bound,
            "exact": self.exact,
            "tokens": {"clients": self.client_tokens, "audit": self.audit_tokens, "mock": self.mock_tokens},
            "admitted": {
                "clients": len(self.client_ok),
                "audit": len(self.audit_ok),
                "mock": self.mock_requests,
            },
            "audit_records": self.audit_records,
            "unanswered_in_audit": self.unanswered_in_audit,
            "admitted_answer_lost": len(self.audit_ok - self.client_ok),
            "audit_duplicates": self.audit_duplicates,
            "revocation": {phase: rv.summary() for phase, rv in self.revocations.items()},
        }


def _ms(d: dict[int, float | None]) -> dict[str, float | None]:
    return {str(g): None if v is None else round(v * 1000, 1) for g, v in sorted(d.items())}


def _percentiles(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {}
    s = sorted(xs)
    return {f"p{p}": round(s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000, 1) for p in (50, 90, 99)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_command() -> list[str]:
    """`distillguard` next to this interpreter (the installed entry point), else the module."""
    exe = Path(sys.executable).with_name("distillguard")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("distillguard")
    return [found] if found else [sys.executable, "-m", "distillguard.cli"]


def _toml(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def write_config(spec: ClusterSpec, i: int, port: int, up_port: int, db: str, prefix: str) -> Path:
    p = spec.workdir / f"gateway-{i}.toml"
    p.write_text(
        f"""[gateway]
default_tier = "metered"
[gateway.upstream]
url = "http://127.0.0.1:{up_port}/v1"
read_timeout = 30
[gateway.server]
host = "127.0.0.1"
port = {port}
access_log = false
log_level = "warning"
[gateway.identity]
db = {_toml(db)}
[gateway.audit]
path = {_toml(str(spec.workdir / f"audit-{i}.jsonl"))}
fsync = {"true" if spec.fsync else "false"}
[gateway.limits]
backend = "redis"
redis_url = {_toml(spec.redis_url)}
key_prefix = {_toml(prefix)}
fail_open = false
[gateway.tiers.metered]
models = ["*"]
max_tokens = {spec.max_max_tokens}
quotas = {{ key = {{ tpm = {spec.tpm} }} }}
[gateway.tiers.open]
models = ["*"]
"""
    )
    return p


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as err:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def wait_healthy(
    urls: list[str], procs: list[subprocess.Popen[bytes]], logs: list[Path], timeout: float
) -> None:
    """Every URL answers its health check (200) within `timeout`; a process that exits fails at once."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1.0, trust_env=False) as c:
        pending = set(range(len(urls)))
        while pending:
            for i in sorted(pending):
                if procs[i].poll() is not None:
                    raise RuntimeError(f"{urls[i]} exited: {logs[i].read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await c.get(urls[i])).status_code == 200:
                        pending.discard(i)
            if time.monotonic() > deadline:
                raise RuntimeError(f"not healthy within {timeout}s: {[urls[i] for i in sorted(pending)]}")
            await asyncio.sleep(0.1)


PHASES = ("load", "idle")  # a key revoked while the load runs, and one revoked after it


@dataclass
class _Keys:
    load_secret: str
    load_key_id: str
    probes: dict[str, tuple[str, str]]  # phase -> (secret, key id)


def _make_keys(db: str, tiers: set[str]) -> _Keys:
    from distillguard.gateway.identity import IdentityStore, open_identity_db

    engine = open_identity_db(db)
    try:
        s = IdentityStore(engine, tiers, "metered")
        run = uuid.uuid4().hex[:8]
        s.create_account("exactness load", tier="metered", account_id=f"acct_load_{run}")
        s.create_account("revocation probe", tier="open", account_id=f"acct_probe_{run}")
        lk, ls = s.create_key(f"acct_load_{run}", "load")
        probes = {}
        for phase in PHASES:
            pk, ps = s.create_key(f"acct_probe_{run}", f"probe-{phase}")
            probes[phase] = (ps, pk.id)
    finally:
        engine.dispose()
    return _Keys(ls, lk.id, probes)


def _revoked_at(db: str, key_id: str) -> float | None:
    from distillguard.gateway.identity import IdentityStore, open_identity_db

    engine = open_identity_db(db)
    try:
        for k in IdentityStore(engine, {"metered"}, "metered").list_keys():
            if k.id == key_id and k.revoked_at is not None:
                return k.revoked_at.timestamp()
    finally:
        engine.dispose()
    return None


def _code(resp: httpx.Response) -> str:
    with contextlib.suppress(Exception):
        err = orjson.loads(resp.content).get("error") or {}
        return str(err.get("code") or err.get("type") or resp.status_code)
    return str(resp.status_code)


@dataclass
class _Sent:
    gateway: int
    nonce: str
    status: int | None
    code: str | None
    reservation: int
    tokens: int
    latency_s: float


@dataclass
class _Probe:
    gateway: int
    t_send: float
    t_recv: float
    status: int | None
    code: str | None
    phase: str


async def _drive(
    spec: ClusterSpec, urls: list[str], keys: _Keys, revoke_cmd: list[str]
) -> tuple[list[_Sent], list[_Probe], float, dict[str, float]]:
    """Run the load, then an idle spell; revoke one probe key in each.

    Returns (sent, probes, the load's duration, the admin CLI's wall time per phase).
    """
    n = len(urls)
    per_gw = spec.clients // n + 1
    clients = [
        httpx.AsyncClient(
            base_url=u,
            timeout=httpx.Timeout(120.0),
            # idle connections dropped after 1 s, well before the gateway's 5 s keep-alive time-out
            # closes them: a request sent as the server closes gets a ReadError (a client-side race)
            limits=httpx.Limits(
                max_connections=per_gw + 8, max_keepalive_connections=per_gw + 8, keepalive_expiry=1.0
            ),
            trust_env=False,
        )
        for u in urls
    ]
    sent: list[_Sent] = []
    probes: list[_Probe] = []
    t0 = time.monotonic()
    deadline = t0 + spec.seconds
    cli_s: dict[str, float] = {}
    cli_end: dict[str, float] = {}
    load_headers = {"authorization": f"Bearer {keys.load_secret}", "content-type": "application/json"}

    async def client(c: int) -> None:
        rng = random.Random(spec.seed * 1_000_003 + c)
        g = c % n
        i = 0
        while time.monotonic() < deadline:
            nonce = f"load-{c}-{i}"
            i += 1
            mt = rng.randint(spec.min_max_tokens, spec.max_max_tokens)
            raw = orjson.dumps(
                {"model": MODEL, "messages": [{"role": "user", "content": nonce}], "max_tokens": mt}
            )
            reservation = len(raw) // CHARS_PER_TOKEN + 1 + mt
            ts = time.monotonic()
            try:
                r = await clients[g].post("/v1/chat/completions", content=raw, headers=load_headers)
            except httpx.HTTPError as e:
                sent.append(_Sent(g, nonce, None, type(e).__name__, reservation, 0, time.monotonic() - ts))
                await asyncio.sleep(0.05)
                continue
            if r.status_code == 200:
                used = int(orjson.loads(r.content)["usage"]["total_tokens"])
                sent.append(_Sent(g, nonce, 200, None, reservation, used, time.monotonic() - ts))
                continue
            sent.append(_Sent(g, nonce, r.status_code, _code(r), reservation, 0, time.monotonic() - ts))
            # Refused: retry soon (a short jitter instead of Retry-After keeps the pressure on the limit
            # while bounding the CPU the refusals cost on a small machine).
            await asyncio.sleep(rng.uniform(0.01, 0.1))

    async def probe(phase: str, g: int) -> None:
        secret, _ = keys.probes[phase]
        headers = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
        body = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": f"probe-{phase}-{g}"}]})
        # until 1.5 s after the revocation (bounded, should the CLI hang)
        while phase not in cli_end or time.monotonic() < cli_end[phase] + 1.5:
            if time.monotonic() - t0 > spec.seconds + 600:
                break
            ts = time.time()
            try:
                r = await clients[g].post("/v1/chat/completions", content=body, headers=headers)
                probes.append(_Probe(g, ts, time.time(), r.status_code, _code(r), phase))
            except httpx.HTTPError as e:
                probes.append(_Probe(g, ts, time.time(), None, type(e).__name__, phase))
            await asyncio.sleep(spec.probe_interval_s)

    async def revoke(phase: str, delay: float) -> None:
        await asyncio.sleep(delay)
        cmd = [*revoke_cmd[:3], keys.probes[phase][1], *revoke_cmd[3:]]
        t = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), timeout=300)
        cli_s[phase] = time.monotonic() - t
        cli_end[phase] = time.monotonic()
        if proc.returncode != 0:
            raise RuntimeError(f"revoke-key failed ({proc.returncode}): {err.decode()[-1000:]}")

    try:
        load_probes = [asyncio.ensure_future(probe("load", g)) for g in range(n)]
        await asyncio.gather(revoke("load", spec.revoke_after_s), *(client(c) for c in range(spec.clients)))
        elapsed = time.monotonic() - t0
        await asyncio.gather(*load_probes)
        # idle: only the probes run, so the measure is the propagation, not a queue of 1,000 requests
        await asyncio.gather(revoke("idle", 1.0), *(probe("idle", g) for g in range(n)))
    finally:
        for c in clients:
            await c.aclose()
    return sent, probes, elapsed, cli_s


def read_audit(paths: list[Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in paths:
        for cand in [p, *sorted(p.parent.glob(f"{p.stem}.*{p.suffix}"))]:  # and slots: audit-0.1.jsonl
            if not cand.exists():
                continue
            rows += [orjson.loads(x) for x in cand.read_bytes().splitlines() if x.strip()]
    return rows


def max_window(points: list[tuple[float, int]], window_s: float) -> int:
    """The largest sum of values whose times fall within any interval of `window_s`."""
    pts = sorted(points)
    best = total = lo = 0
    for hi in range(len(pts)):
        total += pts[hi][1]
        while pts[hi][0] - pts[lo][0] >= window_s:
            total -= pts[lo][1]
            lo += 1
        best = max(best, total)
    return best


def _ts(v: Any) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()


def run_cluster(spec: ClusterSpec) -> ClusterResult:
    """Start everything, run the load and the revocation, stop everything, and count (see the module doc)."""
    spec.workdir.mkdir(parents=True, exist_ok=True)
    db = spec.identity_db or str(spec.workdir / "identity.db")
    keys = _make_keys(db, {"metered", "open"})
    prefix = f"dgcluster:{uuid.uuid4().hex[:12]}:"
    up_port = free_port()
    ports = [free_port() for _ in range(spec.gateways)]
    cfgs = [write_config(spec, i, p, up_port, db, prefix) for i, p in enumerate(ports)]
    logs = [spec.workdir / f"gateway-{i}.log" for i in range(spec.gateways)]
    up_log = spec.workdir / "upstream.log"
    procs: list[subprocess.Popen[bytes]] = []
    up = _spawn(
        [sys.executable, "-m", "distillguard.gateway.limits.clustercheck", "upstream", str(up_port)], up_log
    )
    result = ClusterResult(spec)
    try:
        for c, log in zip(cfgs, logs, strict=True):
            procs.append(_spawn([*cli_command(), "gateway", "serve", "--config", str(c)], log))
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        asyncio.run(
            wait_healthy(
                [f"http://127.0.0.1:{up_port}/stats", *(u + "/healthz" for u in urls)],
                [up, *procs],
                [up_log, *logs],
                spec.startup_timeout_s,
            )
        )
        revoke_cmd = [*cli_command(), "gateway", "revoke-key", "--config", str(cfgs[0])]
        sent, probes, elapsed, cli_s = asyncio.run(_drive(spec, urls, keys, revoke_cmd))
        stats = orjson.loads(
            httpx.get(f"http://127.0.0.1:{up_port}/stats", timeout=10, trust_env=False).content
        )
    finally:
        for p in procs:
            stop(p)  # a clean stop: the audit logs are complete and the WALs empty
        stop(up)
        _clean_redis(spec.redis_url, prefix)
    result.elapsed_s = elapsed
    _count_clients(result, sent)
    rows = [(i, r) for i in range(spec.gateways) for r in read_audit([spec.workdir / f"audit-{i}.jsonl"])]
    _count_audit(result, keys, [r for _, r in rows])
    load = [(str(n), int(t)) for n, t in stats["served"] if str(n).startswith("load-")]
    result.mock_ok = {n for n, _ in load}
    result.mock_requests = len(load)
    result.mock_tokens = sum(t for _, t in load)
    # found by the probe's message: a refused request is recorded whatever it carries
    for phase in PHASES:
        prows = [(i, r) for i, r in rows if _nonce(r).startswith(f"probe-{phase}-")]
        key_id = keys.probes[phase][1]
        result.revocations[phase] = _revocation(
            [p for p in probes if p.phase == phase],
            prows,
            _revoked_at(db, key_id),
            cli_s.get(phase, 0.0),
            spec.gateways,
            key_id,
        )
    return result


def _count_clients(res: ClusterResult, sent: list[_Sent]) -> None:
    for s in sent:
        res.sent += 1
        res.latencies_s.append(s.latency_s)
        res.per_gateway[s.gateway] += 1
        res.max_reservation = max(res.max_reservation, s.reservation)
        if s.status is None:
            res.errors[s.code or "?"] += 1
            res.unanswered.add(s.nonce)
            continue
        res.statuses[s.status] += 1
        if s.status == 200:
            res.client_ok.add(s.nonce)
            res.client_tokens += s.tokens
            res.admitted_reservations += s.reservation
        elif s.code:
            res.codes[s.code] += 1


def _nonce(r: dict[str, Any]) -> str:
    return str((r.get("messages") or [{}])[-1].get("content", ""))


def _count_audit(res: ClusterResult, keys: _Keys, rows: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    points: list[tuple[float, int]] = []
    for r in rows:
        if r.get("api_key_id") != keys.load_key_id:
            continue
        res.audit_records += 1
        if r["exchange_id"] in seen:
            res.audit_duplicates += 1
        res.unanswered_in_audit += _nonce(r) in res.unanswered
        seen.add(r["exchange_id"])
        if r.get("status", 200) == 200:
            res.audit_ok.add(_nonce(r))
            used = int(r.get("prompt_tokens") or 0) + int(r.get("completion_tokens") or 0)
            res.audit_tokens += used
            points.append((_ts(r["ts"]), used))
    res.max_window_tokens = max_window(points, WINDOWS_MS["tpm"] / 1000)


def _revocation(
    probes: list[_Probe],
    rows: list[tuple[int, dict[str, Any]]],
    revoked_at: float | None,
    cli_s: float,
    n: int,
    key_id: str,
) -> Revocation:
    gw: dict[int, float | None] = {g: None for g in range(n)}
    cl: dict[int, float | None] = {g: None for g in range(n)}
    before: dict[int, int] = {g: 0 for g in range(n)}
    late = refused = attributed = 0
    if revoked_at is None:
        return Revocation(cli_s, gw, cl, late, before)
    for g, r in sorted(rows, key=lambda x: _ts(x[1]["ts"])):
        t = _ts(r["ts"])
        status = r.get("status", 200)
        if status == 200:
            if t > revoked_at + 1.0:
                late += 1
            elif t < revoked_at:
                before[g] += 1
        elif (r.get("attributes") or {}).get("refusal") == "api_key_revoked":
            refused += 1
            attributed += r.get("api_key_id") == key_id
            if gw[g] is None:
                gw[g] = max(0.0, t - revoked_at)
    for p in sorted(probes, key=lambda p: p.t_recv):
        if p.status == 401 and p.code == "api_key_revoked" and cl[p.gateway] is None:
            cl[p.gateway] = max(0.0, p.t_recv - revoked_at)
    return Revocation(cli_s, gw, cl, late, before, refused, attributed)


def _clean_redis(url: str, prefix: str) -> None:
    with contextlib.suppress(Exception):
        from redis import Redis

        r = Redis.from_url(url, socket_connect_timeout=1)
        ks = list(r.scan_iter(match=prefix + "*", count=1000))
        if ks:
            r.delete(*ks)
        r.close()


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "upstream":
        serve_upstream(int(argv[1]))
        return
    raise SystemExit("usage: python -m distillguard.gateway.limits.clustercheck upstream PORT")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(sys.argv[1:])
