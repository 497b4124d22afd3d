"""Online-risk state in Redis: replicas share each account's window, claim re-scores once, share verdicts.

Redis at $DISTILLGUARD_TEST_REDIS (default redis://127.0.0.1:6379/0); every test works under its own key
prefix and deletes its keys. Without Redis the tests skip, except under CI (env CI set): they fail.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from redis import Redis

from distillguard.exchange import Exchange, to_row
from distillguard.gateway.app import Gateway
from distillguard.gateway.config import GatewayConfig, RiskConfig
from distillguard.gateway.risk_state import (
    MemoryRiskState,
    RedisRiskState,
    RiskVerdict,
    _row,
    _row_json,
    build_state,
)

from ..conftest import ORCA
from .conftest import Env, ScriptedLimiter, gateway_config, make_store
from .mock_upstream import MockUpstream, serve_in_thread

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _cfg(redis_url: str, prefix: str, **kw: Any) -> RiskConfig:
    return RiskConfig(state="redis", redis_url=redis_url, key_prefix=prefix, **kw)


def _harvest_ex(i: int, account: str = "acct_h") -> Exchange:
    return Exchange(
        exchange_id=f"{account}-{i}",
        ts=T0 + timedelta(seconds=7 * i),
        account_id=account,
        model="big-model",
        system_prompt=ORCA,
        messages=[
            {"role": "user", "content": f"Natalia sold clips to {i} of her friends; how many in total?"}
        ],
        temperature=0.7,
        max_tokens=4096,
        n=2,
        logprobs=True,
        top_logprobs=5,
        response_text="Step 1: think. Step 2: answer." * 3,
        reasoning_text="Let me think.",
        prompt_tokens=60,
        completion_tokens=400,
        latency_ms=900.0,
    )


def test_row_round_trip() -> None:
    ex = _harvest_ex(3)
    assert _row(_row_json(ex)) == to_row(ex)


def test_two_replicas_share_the_window_and_claim_each_rescore_once(redis_url: str, prefix: str) -> None:
    cfg = _cfg(redis_url, prefix, rescore_every=5, window=30, rescore_s=60)
    a, b = RedisRiskState(cfg), RedisRiskState(cfg)
    try:
        claims = {"a": 0, "b": 0}
        for i in range(40):  # alternate replicas, as a load balancer would
            name, st = ("a", a) if i % 2 == 0 else ("b", b)
            st.learn([_harvest_ex(i)], now=0.0)
            claims[name] += len(st.due(now=0.0))
        # one re-score per 5 exchanges of the account, whichever replica took the 5th
        assert claims["a"] + claims["b"] == 8 and claims["a"] and claims["b"]
        r = Redis.from_url(redis_url)
        rows = r.lrange(prefix + "w:acct_h", 0, -1)
        assert len(rows) == 30  # capped at the window, the newest kept
        assert [_row(x)["exchange_id"] for x in rows] == [f"acct_h-{i}" for i in range(10, 40)]
        assert r.hget(prefix + "s:acct_h", "seen") == b"40"
        assert 0 < r.ttl(prefix + "w:acct_h") <= cfg.state_ttl_s
        # quiet: both replicas fed the account last; only one claims the re-score of what is pending
        a.learn([_harvest_ex(40)], now=100.0)
        b.learn([_harvest_ex(41)], now=100.0)
        assert len(a.due(now=200.0)) + len(b.due(now=200.0)) == 1
        assert a.due(now=300.0) == b.due(now=300.0) == []  # nothing new since
        r.close()
    finally:
        a.close()
        b.close()


def test_verdicts_published_on_one_replica_are_pulled_by_the_other(redis_url: str, prefix: str) -> None:
    cfg = _cfg(redis_url, prefix)
    a, b = RedisRiskState(cfg), RedisRiskState(cfg)
    try:
        v1 = RiskVerdict("suspect", 0.7, "risk_suspect; x=1", ("cap_max_tokens",))
        a.publish({"acct_1": v1})
        assert b.pull() == {"acct_1": v1}
        assert b.pull() == {}  # only what changed since the last pull
        v2 = RiskVerdict("block", 0.95, "risk_block; y=2", ("block",))
        b.publish({"acct_1": v2, "acct_2": v1})
        assert a.pull() == {"acct_1": v2, "acct_2": v1}
        # a replica started later reads every verdict at its first pull
        c = RedisRiskState(cfg)
        assert c.pull() == {"acct_1": v2, "acct_2": v1}
        c.close()
    finally:
        a.close()
        b.close()


def test_redis_window_scores_like_the_in_process_scorer(redis_url: str, prefix: str) -> None:
    # the same exchanges, two backends: the same batch SQL over the same window gives the same score
    cfg = _cfg(redis_url, prefix, rescore_every=1000, window=100)
    mem = MemoryRiskState(RiskConfig(window=100))
    red = RedisRiskState(cfg)
    try:
        exs = [_harvest_ex(i) for i in range(25)]
        mem.learn(exs, now=0.0)
        red.learn(exs, now=0.0)
        vm, vr = mem.score("acct_h"), red.score("acct_h")
        assert vm.level == vr.level != "ok"
        assert vr.score == pytest.approx(vm.score, abs=1e-9)
        assert [e.signal for e in vr.evidence] == [e.signal for e in vm.evidence]
        assert red.score("nobody").level == "ok"
    finally:
        mem.close()
        red.close()


def test_build_state_picks_the_backend(redis_url: str, prefix: str) -> None:
    s = build_state(_cfg(redis_url, prefix))
    assert isinstance(s, RedisRiskState)
    s.close()
    m = build_state(RiskConfig())
    assert isinstance(m, MemoryRiskState)
    m.close()
    with pytest.raises(ValueError, match="redis_url"):
        RiskConfig(state="redis", redis_url="http://x")


TASKS = [
    f"Natalia sold clips to {k} of her friends; how many clips did she sell in total?" for k in range(80)
]


def _harvest(env: Env, i: int) -> Any:
    return env.client("verified").chat.completions.create(
        model="mock-think",
        messages=[{"role": "system", "content": ORCA}, {"role": "user", "content": TASKS[i]}],
        max_tokens=4096,
        temperature=0.7,
        logprobs=True,
        top_logprobs=5,
        n=2,
    )


def _settle(app: Gateway, served: int) -> None:
    assert app.risk is not None
    deadline = time.monotonic() + 30
    while app.risk.applied < served:
        assert time.monotonic() < deadline, "risk scoring did not keep up"
        time.sleep(0.01)


def test_two_gateways_share_an_accounts_risk_state(
    tmp_path: Path, upstream: tuple[MockUpstream, str], redis_url: str, prefix: str
) -> None:
    mock, up_url = upstream
    d = gateway_config(tmp_path, up_url).model_dump()
    risk = {"state": "redis", "redis_url": redis_url, "key_prefix": prefix, "sync_s": 0.05}
    d["risk"] = {"rescore_every": 5, "rescore_s": 60, **risk}
    envs: list[Env] = []
    with ExitStack() as stack:
        for n in range(2):  # two replicas: their own audit logs, one identity store, one Redis
            dn = {**d, "audit": {**d["audit"], "path": str(tmp_path / f"audit{n}.jsonl")}}
            cfg = GatewayConfig.model_validate(dn)
            if n == 0:
                store, secrets_, ids = make_store(tmp_path, cfg)
            app = Gateway(cfg, limiter=ScriptedLimiter(), store=store)
            url = stack.enter_context(serve_in_thread(app))
            envs.append(Env(url, mock, store, app.limiter, app, cfg, secrets_, ids))  # type: ignore[arg-type]
        served = [0, 0]
        blocked_at = None
        for i in range(60):
            k = i % 2  # alternate replicas
            try:
                _harvest(envs[k], i)
            except openai.PermissionDeniedError as e:
                assert e.code == "risk_block"  # type: ignore[attr-defined]
                blocked_at = i
                break
            served[k] += 1
            _settle(envs[k].app, served[k])
        assert blocked_at is not None, "the harvester was never blocked"
        r = Redis.from_url(redis_url)
        # every exchange either replica served is in the one shared window
        assert r.llen(prefix + "w:acct_v") == sum(served)
        r.close()
        # the verdict reached on one replica acts on the other within sync_s, with no traffic of its own
        other = envs[(blocked_at + 1) % 2]
        deadline = time.monotonic() + 5
        while (v := other.app.risk.verdicts.get("acct_v")) is None or v.level != "block":  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the other replica never pulled the verdict"
            time.sleep(0.02)
        with pytest.raises(openai.PermissionDeniedError):
            _harvest(other, 79)
        # neither replica alone saw enough to score the whole window: each learnt only its own half
        assert all(0 < e.app.risk.learnt < sum(served) for e in envs)  # type: ignore[union-attr]


def test_redis_down_traffic_flows_and_last_verdicts_stay(
    tmp_path: Path, upstream: tuple[MockUpstream, str]
) -> None:
    # nothing listens on this port: every state call fails fast; requests never wait on Redis
    from .mock_upstream import free_port

    mock, up_url = upstream
    d = gateway_config(tmp_path, up_url).model_dump()
    d["risk"] = {
        "state": "redis",
        "redis_url": f"redis://127.0.0.1:{free_port()}/0",
        "redis_timeout_s": 0.2,
        "rescore_every": 1,
        "sync_s": 0.05,
    }
    cfg = GatewayConfig.model_validate(d)
    store, secrets_, ids = make_store(tmp_path, cfg)
    app = Gateway(cfg, limiter=ScriptedLimiter(), store=store)
    with serve_in_thread(app) as url:
        env = Env(url, mock, store, app.limiter, app, cfg, secrets_, ids)  # type: ignore[arg-type]
        assert app.risk is not None
        app.risk.verdicts["acct_u"] = RiskVerdict("suspect", 0.6, "risk_suspect", ("cap_max_tokens",))
        for i in range(3):
            assert _harvest(env, i).choices  # served: the request path never waits on Redis
        _settle(app, 3)
        assert app.risk.learnt == 0 and app.risk.failures >= 1  # the batches could not be stored
        assert app.risk.verdicts["acct_u"].level == "suspect"  # kept, not wiped by the outage
