"""Gateway overhead against the issue's bar: direct mock vs distillguard vs LiteLLM proxy, one load generator.

    .venv/bin/python benchmarks/gateway_overhead.py            # full run (~2-3 minutes)
    .venv/bin/python benchmarks/gateway_overhead.py --quick    # fewer requests, shorter load phases
    .venv/bin/python benchmarks/gateway_overhead.py --runs 3   # median of 3 runs of every phase
    .venv/bin/python benchmarks/gateway_overhead.py --loadgen wrk   # throughput phases driven by wrk

Processes (all on 127.0.0.1): a fast mock upstream (raw asyncio protocol on uvloop with the httptools
parser, precomputed OpenAI-shaped answers, so it is never the bottleneck); the distillguard gateway with
every step on (key auth, in-process limits with tier quotas, geo with the bundled databases, intel
blocklists from a real store, online risk enforcing, audit with WAL and its default background fsync,
access log); with two workers for the scaling phase; and LiteLLM proxy (default config, one worker) when
`/tmp/litellm-venv/bin/litellm` exists (`python -m venv /tmp/litellm-venv &&
/tmp/litellm-venv/bin/pip install 'litellm[proxy]'`; never a project dependency).

One load generator for all targets: an asyncio protocol on uvloop, one keep-alive connection per client,
httptools parsing the responses. On a 2-core machine that Python generator needs most of a core at a
few thousand requests/s, which leaves a two-worker gateway one core, not two; `--loadgen wrk` drives the
throughput phases of every target with wrk instead (C, one thread, the same POST through `-s` script;
`apt-get install wrk`), and `--pin-loadgen CPU` pins whichever generator runs to one CPU (`taskset`),
so the targets share the others. Phases:

* latency, one client: requests go round-robin to every target (direct, gateway, LiteLLM, ...), so the
  machine's noise hits all of them alike; added latency = target percentile - direct percentile, for a
  full JSON chat answer and for a stream's first body byte;
* throughput: 50 concurrent clients for a fixed time, requests/s (answers with status 200 only; any
  other status is counted and reported), and the CPU per request of the target's processes (its
  workers and the online-risk scoring process included).

Prints a table and one JSON line (`GATEWAY_OVERHEAD {...}`); `--json PATH` also writes it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import orjson
import psutil
import uvloop

ROOT = Path(__file__).resolve().parents[1]
LITELLM = Path(os.environ.get("LITELLM_BIN", "/tmp/litellm-venv/bin/litellm"))
MODEL = "gpt-4o-mini"
PROMPT = "Summarise the benefits of keep-alive connections in two sentences."

# -- the mock upstream ---------------------------------------------------------------------------------

_WORDS = ["Keep", "-alive", " saves", " a", " handshake", " per", " request", "."]


def _chat_json() -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1764400000,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(_WORDS)},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 14, "completion_tokens": 8, "total_tokens": 22},
        }
    )


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _stream_parts(usage: bool) -> tuple[bytes, bytes]:
    """(head + first event, the rest): the mock sends the first event at once, the rest a tick later."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1764400000, "model": MODEL}
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    first = _chunk(_sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}))
    rest = [
        _sse({**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]})
        for w in _WORDS
    ]
    rest.append(_sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if usage:
        u = {"prompt_tokens": 14, "completion_tokens": 8, "total_tokens": 22}
        rest.append(_sse({**base, "choices": [], "usage": u}))
    rest.append(b"data: [DONE]\n\n")
    return head + first, b"".join(_chunk(r) for r in rest) + b"0\r\n\r\n"


def _plain(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )


class _MockConn(asyncio.Protocol):
    """One keep-alive connection of the mock upstream (requests answered in order)."""

    CHAT = _plain("200 OK", _chat_json())
    MODELS = _plain(
        "200 OK",
        orjson.dumps(
            {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "m"}]}
        ),
    )
    NOT_FOUND = _plain("404 Not Found", b'{"error":{"message":"not found","type":"invalid_request_error"}}')
    STREAM = _stream_parts(False)
    STREAM_USAGE = _stream_parts(True)

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        t = self.transport
        assert t is not None
        url, raw = self.url, b"".join(self.body)
        self.url, self.body = b"", []
        if url.endswith(b"/models"):
            t.write(self.MODELS)
        elif url.endswith(b"/chat/completions"):
            body = orjson.loads(raw) if raw else {}
            if body.get("stream"):
                usage = bool((body.get("stream_options") or {}).get("include_usage"))
                head, rest = self.STREAM_USAGE if usage else self.STREAM
                t.write(head)
                # the rest a loop tick later: a real first byte, not one write of the whole stream
                asyncio.get_running_loop().call_soon(_write_if_open, t, rest)
            else:
                t.write(self.CHAT)
        else:
            t.write(self.NOT_FOUND)
        if not self.parser.should_keep_alive():
            t.close()


def _write_if_open(t: asyncio.Transport, data: bytes) -> None:
    if not t.is_closing():
        t.write(data)


async def _mock_main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_MockConn, "127.0.0.1", port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


# -- the load generator --------------------------------------------------------------------------------


class _ClientConn(asyncio.Protocol):
    """One keep-alive client connection: `request()` sends prebuilt bytes and awaits the whole answer."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[int] | None = None
        self.t_first = 0.0
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        if not self.t_first:
            self.t_first = time.perf_counter()

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(self.parser.get_status_code())

    async def request(self, raw: bytes) -> tuple[int, float, float, float]:
        """(status, start, first body byte, end) in perf_counter seconds."""
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.t_first = 0.0
        t0 = time.perf_counter()
        self.transport.write(raw)
        status = await self.done
        t1 = time.perf_counter()
        return status, t0, self.t_first or t1, t1


async def _connect(port: int) -> _ClientConn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(_ClientConn, "127.0.0.1", port)
    return conn


def _request(port: int, token: str, stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 64,
    }
    if stream:
        body["stream"] = True
    data = orjson.dumps(body)
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nauthorization: Bearer {token}\r\n"
        f"content-type: application/json\r\nuser-agent: dg-bench/1\r\ncontent-length: {len(data)}\r\n\r\n"
    ).encode() + data


@dataclass
class Target:
    name: str
    port: int
    token: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


async def _latency(targets: list[Target], n: int, stream: bool) -> dict[str, list[float]]:
    """Round-robin over the targets, one request at a time; ms to the end (JSON) or first byte (stream)."""
    conns = {t.name: await _connect(t.port) for t in targets}
    reqs = {t.name: _request(t.port, t.token, stream) for t in targets}
    out: dict[str, list[float]] = {t.name: [] for t in targets}
    warm = max(20, n // 10)
    for i in range(n + warm):
        for t in targets:
            status, t0, tf, t1 = await conns[t.name].request(reqs[t.name])
            if status != 200:
                raise RuntimeError(f"{t.name}: status {status} in the latency phase (request {i})")
            if i >= warm:
                out[t.name].append(((tf if stream else t1) - t0) * 1000)
    for c in conns.values():
        assert c.transport is not None
        c.transport.close()
    return out


def _cpu_seconds(t: Target) -> float:
    """CPU (user + system) used so far by the target's processes and their children (workers)."""
    total = 0.0
    for p in t.procs:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(p.pid)
            for q in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    c = q.cpu_times()
                    total += c.user + c.system
    return total


_WRK_LUA = """
wrk.method = "POST"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = %(auth)s
wrk.headers["User-Agent"] = "dg-bench/1"
done = function(summary, latency, requests)
  io.write(string.format("WRK_JSON {\\"requests\\":%%d,\\"duration_us\\":%%d,\\"status\\":%%d,"
    .. "\\"connect\\":%%d,\\"read\\":%%d,\\"write\\":%%d,\\"timeout\\":%%d}\\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout))
end
"""


def _lua_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _wrk(t: Target, clients: int, seconds: float, pin: str | None, tmp: Path) -> dict[str, float]:
    """Requests/s of `t` under wrk (one thread, `clients` connections), after a one-second warm-up."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("--loadgen wrk: wrk not found (apt-get install wrk)")
    body = _request(t.port, t.token, False).split(b"\r\n\r\n", 1)[1].decode()
    script = tmp / f"wrk-{t.name}.lua"
    script.write_text(_WRK_LUA % {"body": _lua_str(body), "auth": _lua_str(f"Bearer {t.token}")})
    url = f"http://127.0.0.1:{t.port}/v1/chat/completions"
    pre = ["taskset", "-c", pin] if pin else []

    def run(secs: float) -> dict[str, int]:
        cmd = [*pre, wrk, "-t1", f"-c{clients}", f"-d{secs:g}s", "--timeout", "10s", "-s", str(script), url]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        line = next(ln for ln in out.splitlines() if ln.startswith("WRK_JSON "))
        return orjson.loads(line.removeprefix("WRK_JSON "))

    run(1)  # warm-up: connections, caches, the first scores
    c0 = _cpu_seconds(t)
    r = run(seconds)
    used = _cpu_seconds(t) - c0
    dur = r["duration_us"] / 1e6
    bad = r["status"] + r["read"] + r["write"] + r["timeout"]
    return {
        "rps": (r["requests"] - r["status"]) / dur,
        "non_200": bad,
        "cpu_us": used / max(1, r["requests"]) * 1e6,
    }


async def _throughput(t: Target, clients: int, seconds: float, stream: bool = False) -> dict[str, float]:
    conns = [await _connect(t.port) for _ in range(clients)]
    req = _request(t.port, t.token, stream)
    counts = {"ok": 0, "other": 0}
    t_start = time.perf_counter()
    t_measure = t_start + min(1.0, seconds / 4)  # warm-up excluded from the count
    t_end = t_measure + seconds

    cpu: dict[str, float] = {}

    async def one(c: _ClientConn) -> None:
        while True:
            status, _, _, t1 = await c.request(req)
            if t1 >= t_end:
                return
            if t1 >= t_measure:
                if "start" not in cpu:
                    cpu["start"] = _cpu_seconds(t)
                counts["ok" if status == 200 else "other"] += 1

    await asyncio.gather(*(one(c) for c in conns))
    used = _cpu_seconds(t) - cpu.get("start", 0.0)
    for c in conns:
        assert c.transport is not None
        c.transport.close()
    # CPU per answered request of the target's processes: less hostage to the machine's other load
    # than requests/s (a process that waits for a core uses no CPU meanwhile)
    done = counts["ok"] + counts["other"]
    return {"rps": counts["ok"] / seconds, "non_200": counts["other"], "cpu_us": used / max(1, done) * 1e6}


# -- processes -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout:.0f} s")


async def _wait_ready(t: Target, timeout: float = 60) -> None:
    """Until one chat request answers 200 (listening is not enough: workers may still be starting)."""
    deadline = time.monotonic() + timeout
    req = _request(t.port, t.token, False)
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            c = await _connect(t.port)
            status, *_ = await asyncio.wait_for(c.request(req), 10)
            assert c.transport is not None
            c.transport.close()
            if status == 200:
                return
            last = f"status {status}"
        except (OSError, TimeoutError) as e:
            last = e.__class__.__name__
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{t.name} was not ready within {timeout:.0f} s ({last})")


def _gateway_config(tmp: Path, up_port: int, port: int) -> Path:
    """Every step on: identity, tiers, quotas (memory limiter), geo, intel store, risk enforcing, audit (default
    sync: background fsync)."""
    from distillguard.gateway.geo import bundled_dbs
    from distillguard.intel.indicator import Indicator, IndicatorType, Records
    from distillguard.intel.privacy import Keyring
    from distillguard.intel.store import IntelStore

    ring = Keyring.generate(epoch=1)
    ring.save(tmp / "keys.json")
    org = "identity--bench-provider"
    inds = [
        Indicator(type=IndicatorType.IPV4, value=f"192.0.2.{i}", confidence=90, source_org=org)
        for i in range(1, 60)
    ]
    inds += [
        Indicator(type=IndicatorType.CIDR, value="198.51.100.0/28", confidence=90, source_org=org),
        Indicator(type=IndicatorType.ASN, value="AS64500", confidence=90, source_org=org),
        Indicator(
            type=IndicatorType.ACCOUNT,
            value=ring.digest("account", "acct_evil", 1),
            key_epoch=1,
            confidence=90,
            source_org=org,
        ),
    ]
    with IntelStore.open(tmp / "intel.db") as store:
        store.add(Records(indicators=inds))
    country, asn = bundled_dbs()
    cfg = tmp / "gateway.toml"
    # quotas far above what the benchmark sends, so the limiter does all its work and refuses nothing;
    # risk enforces (not shadow) with non-refusing actions, so a flagged bench account changes the body
    # instead of turning the measurement into 403s
    acts = '["cap_max_tokens", "disable_logprobs", "disable_n", "strip_reasoning"]'
    cfg.write_text(
        f"""
default_tier = "verified"
[upstream]
url = "http://127.0.0.1:{up_port}/v1"
api_key = "sk-upstream-bench"
[server]
port = {port}
access_log = true
log_level = "warning"
[identity]
db = "{tmp / "gw.db"}"
[audit]
path = "{tmp / "audit.jsonl"}"
[geo]
country_db = "{country}"
asn_db = "{asn}"
denied_countries = ["KP"]
hosting_asns = [64498]
vpn_asns = [64499]
[intel]
db = "{tmp / "intel.db"}"
keyring = "{tmp / "keys.json"}"
refresh_s = 30
[risk]
enabled = true
shadow = false
[risk.actions]
suspect = {acts}
block = {acts}
[tiers.verified]
models = ["gpt-*"]
reasoning = true
max_tokens = 4096
jurisdictions = ["XL", "XA"]
[tiers.verified.quotas.account]
rpm = 100000000
tpm = 1000000000000
tpd = 1000000000000
[tiers.verified.quotas.ip]
rpm = 100000000
[tiers.verified.quotas.key]
rpm = 100000000
"""
    )
    return cfg


def _gateway_key(tmp: Path) -> str:
    from distillguard.gateway.identity import IdentityStore, open_identity_db

    store = IdentityStore(open_identity_db(str(tmp / "gw.db")), {"verified"}, "verified")
    org = store.create_org("Bench", tier="verified", org_id="org_bench")
    store.create_account("bench", org_id=org, account_id="acct_bench")
    _, secret = store.create_key("acct_bench", "bench")
    store.engine.dispose()
    return secret


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    f = open(log, "wb")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


# attribution variants (`--also`): the full gateway less one step, to see what that step costs
_VARIANTS = {
    "perrequest": ("[audit]\n", '[audit]\nsync = "per_request"\n'),
    "nofsync": ("[audit]\n", '[audit]\nsync = "off"\n'),
    "norisk": ("[risk]\nenabled = true", "[risk]\nenabled = false"),
}


def _start_gateway(
    tmp: Path, up_port: int, workers: int, env: dict[str, str], name: str, variant: str | None = None
) -> Target:
    d = tmp / name
    d.mkdir()
    port = _free_port()
    cfg = _gateway_config(d, up_port, port)
    if variant is not None:
        old, new = _VARIANTS[variant]
        cfg.write_text(cfg.read_text().replace(old, new))
    token = _gateway_key(d)
    cmd = [sys.executable, "-m", "distillguard.gateway.cli", "serve", "--config", str(cfg)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    p = _spawn(cmd, env, d / "gateway.log")
    _wait_port(port, p, name)
    return Target(name, port, token, [p])


def _start_litellm(tmp: Path, up_port: int) -> Target | None:
    if not LITELLM.exists():
        return None
    port = _free_port()
    cfg = tmp / "litellm.yaml"
    cfg.write_text(
        f"""model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: http://127.0.0.1:{up_port}/v1
      api_key: sk-upstream-bench
"""
    )
    # recent LiteLLM refuses to start without a master key; with one it checks it on every request (no
    # database: the key is compared in memory), the nearest it has to the gateway's key auth
    master = "sk-" + secrets.token_hex(16)
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": master,
        # no downloads at run time: the model cost map ships with the package
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "NO_PROXY": "*",
    }
    p = _spawn(
        [
            str(LITELLM),
            "--config",
            str(cfg),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--num_workers",
            "1",
        ],
        env,
        tmp / "litellm.log",
    )
    _wait_port(port, p, "litellm", timeout=120)
    return Target("litellm", port, master, [p])


# -- report --------------------------------------------------------------------------------------------


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


async def _one_run(targets: list[Target], scale: list[Target], args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"latency": {}, "first_byte": {}, "rps": {}}
    for stream, key in ((False, "latency"), (True, "first_byte")):
        ms = await _latency(targets, args.n, stream)
        for name, xs in ms.items():
            res[key][name] = {p: _pct(xs, p) for p in (50, 95, 99)}
    for t in [*targets, *scale]:
        if args.loadgen == "wrk":
            res["rps"][t.name] = await asyncio.to_thread(
                _wrk, t, args.clients, args.seconds, args.pin_loadgen, args.tmp
            )
        else:
            res["rps"][t.name] = await _throughput(t, args.clients, args.seconds)
    return res


def _summarise(runs: list[dict[str, Any]], names: list[str], scale: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "runs": len(runs),
        "latency_ms": {},
        "first_byte_ms": {},
        "added_ms": {},
        "rps": {},
    }
    for key, okey in (("latency", "latency_ms"), ("first_byte", "first_byte_ms")):
        for name in names:
            out[okey][name] = {
                f"p{p}": round(_median([r[key][name][p] for r in runs]), 3) for p in (50, 95, 99)
            }
    for name in names[1:]:
        # added = the target's percentile minus direct's, per run (side by side), then the median
        out["added_ms"][name] = {
            f"{what}_p{p}": round(_median([r[key][name][p] - r[key]["direct"][p] for r in runs]), 3)
            for key, what in (("latency", "json"), ("first_byte", "first_byte"))
            for p in (50, 95, 99)
        }
    out["cpu_us_per_request"] = {}
    for name in [*names, *scale]:
        out["rps"][name] = round(_median([r["rps"][name]["rps"] for r in runs]), 1)
        out["cpu_us_per_request"][name] = round(_median([r["rps"][name]["cpu_us"] for r in runs]), 1)
        bad = sum(r["rps"][name]["non_200"] for r in runs)
        if bad:
            out.setdefault("non_200", {})[name] = bad
    rps = out["rps"]
    if rps.get("litellm"):
        out["gateway_vs_litellm_rps"] = round(rps["gateway"] / rps["litellm"], 1)
        cpu = out["cpu_us_per_request"]
        out["litellm_vs_gateway_cpu"] = round(cpu["litellm"] / cpu["gateway"], 1)
    if "gateway_2w" in rps:
        out["two_worker_scaling"] = round(rps["gateway_2w"] / rps["gateway"], 2)
        # Where the throughput ratio stops: the cores the gateway's processes used (workers, the risk
        # child, the audit thread) out of the machine's, the rest going to the load generator and the
        # mock; and the requests each gateway core served, two workers against one.
        cpu = out["cpu_us_per_request"]
        cores = {n: rps[n] * cpu[n] / 1e6 for n in ("gateway", "gateway_2w")}
        out["gateway_cores"] = {n: round(c, 2) for n, c in cores.items()}
        out["machine_cores"] = os.cpu_count()
        out["two_worker_per_core_efficiency"] = round(
            (rps["gateway_2w"] / max(cores["gateway_2w"], 1e-9))
            / (rps["gateway"] / max(cores["gateway"], 1e-9)),
            2,
        )
    return out


def _print_table(s: dict[str, Any], clients: int) -> None:
    print(f"\nmedian of {s['runs']} run(s); added = target minus direct, same run, side by side")
    print(
        f"{'target':<12} {'JSON P50/P95/P99 ms':>26} {'first byte P50/P95/P99 ms':>28} "
        f"{'rps@' + str(clients):>10} {'CPU us/req':>11}"
    )
    for name, lat in s["latency_ms"].items():
        fb = s["first_byte_ms"][name]
        print(
            f"{name:<12} {lat['p50']:>8.3f} {lat['p95']:>8.3f} {lat['p99']:>8.3f} "
            f"{fb['p50']:>9.3f} {fb['p95']:>8.3f} {fb['p99']:>8.3f} {s['rps'][name]:>10.0f}"
            f" {s['cpu_us_per_request'][name]:>11.0f}"
        )
    for name in s["rps"]:
        if name not in s["latency_ms"]:
            print(
                f"{name:<12} {'':>26} {'':>28} {s['rps'][name]:>10.0f} {s['cpu_us_per_request'][name]:>11.0f}"
            )
    print("\nadded latency (ms)      JSON P50   P95    P99 | first byte P50   P95    P99")
    for name, a in s["added_ms"].items():
        print(
            f"{name:<22} {a['json_p50']:>8.3f} {a['json_p95']:>6.3f} {a['json_p99']:>6.3f} |"
            f" {a['first_byte_p50']:>14.3f} {a['first_byte_p95']:>5.3f} {a['first_byte_p99']:>6.3f}"
        )
    g = s["added_ms"].get("gateway")
    if g:
        bars = [
            ("adds <= 1 ms at P50 (JSON, 1 client)", g["json_p50"] <= 1.0),
            ("adds <= 3 ms at P99 (JSON, 1 client)", g["json_p99"] <= 3.0),
            ("adds <= 2 ms to a stream's first byte (P50)", g["first_byte_p50"] <= 2.0),
        ]
        if "gateway_vs_litellm_rps" in s:
            bars.append(
                (
                    f">= 10x LiteLLM's rps at {clients} clients ({s['gateway_vs_litellm_rps']}x)",
                    s["gateway_vs_litellm_rps"] >= 10,
                )
            )
        if "two_worker_scaling" in s:
            bars.append(
                (f"two workers scale ({s['two_worker_scaling']}x one worker)", s["two_worker_scaling"] >= 1.3)
            )
            gc = s["gateway_cores"]
            print(
                f"\ngateway processes used {gc['gateway']} cores with one worker, {gc['gateway_2w']} with two, of "
                f"{s['machine_cores']} on the machine (the rest: load generator, mock, system); requests per "
                f"gateway core with two workers: {s['two_worker_per_core_efficiency']:.0%} of one worker's"
            )
        print()
        for what, ok in bars:
            print(f"{'PASS' if ok else 'FAIL'}  {what}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="Requests per target per latency phase.")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=8.0, help="Length of each throughput phase.")
    ap.add_argument("--runs", type=int, default=1, help="Repeat every phase; medians are reported.")
    ap.add_argument("--quick", action="store_true", help="--n 500 --seconds 3.")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--no-workers", action="store_true", help="Skip the two-worker phase.")
    ap.add_argument(
        "--also",
        action="append",
        default=[],
        choices=sorted(_VARIANTS),
        help="Also measure the gateway with each answer waiting for its audit fsync (perrequest), audit "
        "fsync off (nofsync) or online risk off (norisk).",
    )
    ap.add_argument(
        "--loadgen",
        choices=["python", "wrk"],
        default="python",
        help="Load generator of the throughput phases (the latency phases always use the Python one).",
    )
    ap.add_argument("--pin-loadgen", metavar="CPU", help="taskset CPU list for the load generator, e.g. 0.")
    ap.add_argument("--json", type=Path, help="Also write the summary here.")
    ap.add_argument("--keep", action="store_true", help="Keep the temporary directory (logs, audit).")
    ap.add_argument("--role", choices=["mock"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "mock":
        uvloop.run(_mock_main(args.port))
        return
    if args.quick:
        args.n, args.seconds = 500, 3.0
    tmp = Path(tempfile.mkdtemp(prefix="dg-gw-overhead-"))
    args.tmp = tmp
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up_port = _free_port()
        mock = _spawn(
            [sys.executable, __file__, "--role", "mock", "--port", str(up_port)], env, tmp / "mock.log"
        )
        procs.append(mock)
        _wait_port(up_port, mock, "mock upstream")
        targets = [Target("direct", up_port, "sk-upstream-bench", [mock])]
        gw = _start_gateway(tmp, up_port, 1, env, "gateway")
        procs += gw.procs
        targets.append(gw)
        for v in args.also:
            gv = _start_gateway(tmp, up_port, 1, env, f"gw_{v}", v)
            procs += gv.procs
            targets.append(gv)
        scale: list[Target] = []
        if not args.no_workers:
            gw2 = _start_gateway(tmp, up_port, 2, env, "gateway_2w")
            procs += gw2.procs
            scale.append(gw2)
        if not args.no_litellm:
            lt = _start_litellm(tmp, up_port)
            if lt is None:
                print(f"LiteLLM not found at {LITELLM}: its column is skipped", file=sys.stderr)
            else:
                procs += lt.procs
                targets.append(lt)

        async def run_all() -> list[dict[str, Any]]:
            for t in [*targets, *scale]:
                await _wait_ready(t, timeout=120)
            return [await _one_run(targets, scale, args) for _ in range(args.runs)]

        if args.pin_loadgen and args.loadgen == "python":
            # this process is the load generator: pinned only now, so the targets it started are not
            os.sched_setaffinity(0, {int(c) for c in args.pin_loadgen.split(",")})
        runs = uvloop.run(run_all())
    finally:
        for p in procs:
            _stop(p)
    summary = _summarise(runs, [t.name for t in targets], [t.name for t in scale])
    summary["clients"] = args.clients
    summary["n"] = args.n
    summary["seconds"] = args.seconds
    summary["loadgen"] = args.loadgen + (f" pinned to CPU {args.pin_loadgen}" if args.pin_loadgen else "")
    _print_table(summary, args.clients)
    line = orjson.dumps(summary).decode()
    print("GATEWAY_OVERHEAD " + line)
    if args.json:
        args.json.write_text(line + "\n")
    if args.keep:
        print(f"kept {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
