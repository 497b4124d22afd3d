"""Where online risk learns and scores: a child process (the default), or a thread of the gateway.

A re-score runs the batch feature SQL in DuckDB over the account's window (about 100 ms of CPU), and
most of it holds the GIL: converting the window to Arrow, DuckDB reading a registered Arrow table. In
a thread of the gateway process, every request that arrives meanwhile waits for the GIL (measured: P99
of the event loop's wake-ups 3-4 ms instead of 0.4 ms while a score runs). In a child process the
request path never waits for it; the kernel spreads the two over the cores, and the child runs at a
lower CPU priority (`nice` +5) so that, when the cores are busy, requests go first and scoring lags.

Both run the same `learn_and_score` over a batch of completed exchanges (JSON lines, as the engine
queued them) and return the new verdicts. The child speaks length-prefixed frames over its stdin and
stdout: the `RiskConfig` as JSON first, then one batch per request frame, one result per reply frame;
it exits when its stdin closes (the gateway stopped, or was killed). A child that dies is started
again at the next batch (an in-memory state starts empty; a Redis state loses nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import orjson
from pydantic import ValidationError

from distillguard.exchange import Exchange
from distillguard.gateway.config import RiskConfig
from distillguard.gateway.risk_state import RiskState, RiskVerdict, build_state

log = logging.getLogger("distillguard.gateway.risk")

_LEN = struct.Struct("!I")
_NICE = 5


@dataclass(slots=True)
class BatchResult:
    """What one batch changed: verdicts reached (here or, shared, elsewhere) and counters."""

    verdicts: dict[str, RiskVerdict] = field(default_factory=dict)
    learnt: int = 0
    scored: int = 0
    score_seconds: float = 0.0


def batch_payload(lines: list[bytes]) -> bytes:
    """Queued records (each one JSON object) as one JSON array."""
    return b"[" + b",".join(lines) + b"]"


def learn_and_score(state: RiskState, cfg: RiskConfig, payload: bytes) -> BatchResult:
    """Learn a batch of exchange records (a JSON array), re-score the accounts that are due, share
    verdicts."""
    from distillguard.gateway.risk import to_exchange

    now = time.monotonic()
    exs: list[Exchange] = []
    for rec in orjson.loads(payload):
        try:
            exs.append(to_exchange(rec))
        except (ValidationError, ValueError):
            continue
    state.learn(exs, now)
    res = BatchResult(learnt=len(exs))
    out: dict[str, RiskVerdict] = {}
    for acc in state.due(now):
        t = time.perf_counter()
        v = state.score(acc)
        res.score_seconds += time.perf_counter() - t
        res.scored += 1
        code = f"risk_{v.level}"
        top = v.reasons(cfg.top_reasons)
        out[acc] = RiskVerdict(
            level=v.level,
            score=v.score,
            reasons=f"{code}; {top}" if top else code,
            actions=tuple(a for a in cfg.actions.get(v.level, []) if a != "allow"),
        )
    state.publish(out)
    # verdicts reached anywhere (ours included, when shared) since the last pull
    res.verdicts = {**state.pull(), **out}
    return res


class RiskWorker(Protocol):
    async def start(self) -> None: ...
    async def run(self, lines: list[bytes]) -> BatchResult: ...
    async def close(self) -> None: ...


class ThreadWorker:
    """In the gateway process (an injected state or scorer, or `[risk] worker = "thread"`)."""

    def __init__(self, cfg: RiskConfig, state: RiskState) -> None:
        self.cfg = cfg
        self.state = state
        self._inflight: asyncio.Future[BatchResult] | None = None

    async def start(self) -> None:
        return None

    async def run(self, lines: list[bytes]) -> BatchResult:
        # one thread at a time: the scorer (and its DuckDB connection) is never shared
        payload = batch_payload(lines)
        fut = asyncio.get_running_loop().run_in_executor(None, learn_and_score, self.state, self.cfg, payload)
        self._inflight = fut
        # shielded: a cancelled caller (shutdown) must not close the state under a running batch
        return await asyncio.shield(fut)

    async def close(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            await asyncio.wait([self._inflight])
        await asyncio.to_thread(self.state.close)


class ProcessWorker:
    """A child process (`python -m distillguard.gateway.risk_worker`) holding the state."""

    def __init__(self, cfg: RiskConfig) -> None:
        self.cfg = cfg
        self._proc: subprocess.Popen[bytes] | None = None
        self._inflight: asyncio.Future[BatchResult] | None = None
        self.restarts = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "distillguard.gateway.risk_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # its own stderr is the gateway's (a crash's traceback lands in the gateway's log)
        )
        assert proc.stdin is not None
        _write_frame(proc.stdin, self.cfg.model_dump_json().encode())
        return proc

    def _ensure(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            if proc is not None:
                self.restarts += 1
                log.warning("risk worker process exited; starting a new one", extra={"rc": proc.returncode})
            proc = self._proc = self._spawn()
        return proc

    async def start(self) -> None:
        # at startup, not at the first batch: the child imports and warms up before traffic arrives
        await asyncio.to_thread(self._ensure)

    def _call(self, lines: list[bytes]) -> BatchResult:
        proc = self._ensure()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            _write_frame(proc.stdin, batch_payload(lines))
            reply = _read_frame(proc.stdout)
        except OSError as e:
            raise RuntimeError(f"risk worker process failed: {e.__class__.__name__}") from e
        if reply is None:
            raise RuntimeError("risk worker process exited")
        msg = orjson.loads(reply)
        if msg.get("error"):
            raise RuntimeError(msg["error"])
        return BatchResult(
            verdicts={
                a: RiskVerdict(str(v[0]), float(v[1]), str(v[2]), tuple(v[3])) for a, v in msg["v"].items()
            },
            learnt=int(msg["learnt"]),
            scored=int(msg["scored"]),
            score_seconds=float(msg["score_s"]),
        )

    async def run(self, lines: list[bytes]) -> BatchResult:
        fut = asyncio.get_running_loop().run_in_executor(None, self._call, lines)
        self._inflight = fut
        return await asyncio.shield(fut)

    async def close(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            await asyncio.wait([self._inflight])
        proc, self._proc = self._proc, None
        if proc is not None:
            await asyncio.to_thread(_stop_child, proc)


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        assert proc.stdin is not None
        proc.stdin.close()  # the child's cue to close its state and exit
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def build_worker(cfg: RiskConfig, scorer: Any = None, state: RiskState | None = None) -> RiskWorker:
    """A thread with an injected scorer or state (objects cannot cross a process), else as configured."""
    if scorer is not None or state is not None or cfg.worker == "thread":
        return ThreadWorker(cfg, state or build_state(cfg, scorer))
    return ProcessWorker(cfg)


def _write_frame(f: IO[bytes], data: bytes) -> None:
    f.write(_LEN.pack(len(data)) + data)
    f.flush()


def _read_exactly(f: IO[bytes], n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        part = f.read(n - len(buf))
        if not part:
            return None
        buf += part
    return buf


def _read_frame(f: IO[bytes]) -> bytes | None:
    head = _read_exactly(f, _LEN.size)
    if head is None:
        return None
    return _read_exactly(f, _LEN.unpack(head)[0])


def _child_main() -> None:
    inp = sys.stdin.buffer
    # the protocol owns the original stdout; anything printed by a library goes to stderr instead
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    with contextlib.suppress(OSError):
        os.nice(_NICE)  # background work: requests first when the cores are busy
    # Ctrl-C reaches the whole process group: the gateway stops, and this process with it (stdin closes)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raw = _read_frame(inp)
    if raw is None:
        return
    cfg = RiskConfig.model_validate_json(raw)
    state = build_state(cfg)
    # the scoring pipeline's imports now, not inside the first re-score (~0.5 s of CPU)
    import distillguard.detect.pipeline  # noqa: F401

    try:
        while (frame := _read_frame(inp)) is not None:
            try:
                res = learn_and_score(state, cfg, frame)
                msg: dict[str, Any] = {
                    "v": {a: [v.level, v.score, v.reasons, list(v.actions)] for a, v in res.verdicts.items()},
                    "learnt": res.learnt,
                    "scored": res.scored,
                    "score_s": res.score_seconds,
                }
            except Exception as e:  # reported to the gateway, which keeps its last verdicts
                msg = {"error": f"{e.__class__.__name__}: {e}"}
            try:
                _write_frame(out, orjson.dumps(msg))
            except BrokenPipeError:
                break  # the gateway is gone (killed): nobody to answer
    finally:
        state.close()


if __name__ == "__main__":
    _child_main()
