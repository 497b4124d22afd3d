"""Online risk's worker: scoring in a child process (restarted if it dies), or a thread that shuts down cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Any

from distillguard.detect.evidence import Verdict
from distillguard.exchange import Exchange
from distillguard.gateway.config import RiskConfig
from distillguard.gateway.risk import RiskEngine
from distillguard.gateway.risk_state import RiskVerdict
from distillguard.gateway.risk_worker import ProcessWorker, ThreadWorker

from ..conftest import ORCA

TASKS = [
    f"Natalia sold clips to {k} of her friends; how many clips did she sell in total?" for k in range(40)
]


def _rec(account: str, i: int) -> dict[str, Any]:
    return {
        "exchange_id": f"{account}-{i}",
        "ts": datetime(2026, 11, 1, 12, 0, i % 60, tzinfo=UTC),
        "account_id": account,
        "endpoint": "/v1/chat/completions",
        "model": "mock-think",
        "system_prompt": ORCA,
        "messages": [{"role": "user", "content": TASKS[i % len(TASKS)]}],
        "max_tokens": 4096,
        "logprobs": True,
        "n": 2,
        "response_text": "Step 1: think. Step 2: answer.",
        "completion_tokens": 900,
        "prompt_tokens": 60,
        "attributes": {},
    }


async def _applied(eng: RiskEngine, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while eng.applied < n:
        assert time.monotonic() < deadline, "risk worker did not keep up"
        await asyncio.sleep(0.02)


def test_scoring_runs_in_a_child_process_that_is_restarted_when_it_dies() -> None:
    cfg = RiskConfig(rescore_every=5, rescore_s=60, rescore_min_s=0)

    async def run() -> None:
        eng = RiskEngine(cfg)
        assert isinstance(eng.worker, ProcessWorker)
        await eng.start()
        try:
            for i in range(20):
                eng.observe(_rec("acct_h", i))
            await _applied(eng, 20)
            assert eng.failures == 0 and eng.learnt == 20 and eng.scored >= 1
            v = eng.verdicts["acct_h"]
            assert v.level != "ok" and v.reasons.startswith(f"risk_{v.level}")  # a harvester is flagged
            proc = eng.worker._proc
            assert proc is not None and proc.pid != os.getpid()
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            # the next batch starts a new worker (its in-memory state starts empty)
            for i in range(20):
                eng.observe(_rec("acct_k", i))
            await _applied(eng, 40)
            assert eng.worker.restarts == 1 and eng.worker._proc is not proc
            assert "acct_k" in eng.verdicts and eng.learnt == 40
        finally:
            await eng.stop()
        assert eng.worker._proc is None and proc.poll() is not None

    asyncio.run(run())


class _SlowState:
    """A state whose learning takes a while, and that must not be closed while it learns."""

    def __init__(self) -> None:
        self.learning = threading.Event()
        self.events: list[str] = []

    def learn(self, exchanges: list[Exchange], now: float) -> None:
        self.learning.set()
        self.events.append("learn")
        time.sleep(0.3)
        self.events.append("learnt")

    def due(self, now: float) -> list[str]:
        return []

    def score(self, account_id: str) -> Verdict:
        raise AssertionError("nothing is due")

    def publish(self, verdicts: dict[str, RiskVerdict]) -> None:
        return None

    def pull(self) -> dict[str, RiskVerdict]:
        return {}

    def close(self) -> None:
        self.events.append("close")


def test_thread_worker_stop_waits_for_the_batch_in_flight() -> None:
    state = _SlowState()

    async def run() -> None:
        eng = RiskEngine(RiskConfig(), state=state)
        assert isinstance(eng.worker, ThreadWorker)  # an injected state stays in this process
        await eng.start()
        eng.observe(_rec("acct_a", 0))
        await asyncio.to_thread(state.learning.wait, 5)
        await eng.stop()  # used to close the state (DuckDB) under the running batch

    asyncio.run(run())
    assert state.events == ["learn", "learnt", "close"]


def test_unserialisable_record_is_dropped_not_raised() -> None:
    async def run() -> None:
        eng = RiskEngine(RiskConfig(worker="thread"))
        eng.observe({**_rec("acct_a", 0), "attributes": {"x": object()}})
        assert eng.dropped == 1 and eng._queue.empty()
        await eng.stop()

    asyncio.run(run())
