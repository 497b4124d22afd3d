"""Online risk: a harvesting account is scored in the background and its level drives graded actions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest

from distillguard.gateway.app import Gateway
from distillguard.gateway.config import GatewayConfig
from distillguard.gateway.risk import RiskVerdict, strip_event, strip_json

from ..conftest import ORCA
from .conftest import Env, ScriptedLimiter, gateway_config, make_store
from .mock_upstream import MockUpstream, serve_in_thread

CHAT = [
    "What's a good name for a grey cat?",
    "Can you help me plan a trip to Lisbon in May?",
    "Why does my sourdough not rise?",
    "Explain the offside rule, briefly.",
    "Which is better for a beginner, guitar or piano?",
]
CAPS = ["cap_max_tokens", "disable_logprobs", "disable_n", "strip_reasoning"]
TASKS = [
    f"Natalia sold clips to {k} of her friends; how many clips did she sell in total?" for k in range(80)
]


@contextmanager
def _serve(tmp: Path, upstream: tuple[MockUpstream, str], **risk: Any) -> Iterator[Env]:
    mock, up_url = upstream
    d = gateway_config(tmp, up_url).model_dump()
    d["risk"] = {"rescore_every": 5, "rescore_s": 60, "max_tokens_cap": 256, **risk}
    cfg = GatewayConfig.model_validate(d)
    store, secrets_, ids = make_store(tmp, cfg)
    app = Gateway(cfg, limiter=ScriptedLimiter(), store=store)
    with serve_in_thread(app) as url:
        yield Env(url, mock, store, app.limiter, app, cfg, secrets_, ids)  # type: ignore[arg-type]


@pytest.fixture
def serve(tmp_path: Path, upstream: tuple[MockUpstream, str]) -> Callable[..., Any]:
    return lambda **risk: _serve(tmp_path, upstream, **risk)


def _settle(env: Env, served: int) -> None:
    """Wait until the background task has learnt `served` exchanges and applied their verdicts."""
    assert env.app.risk is not None
    deadline = time.monotonic() + 30
    while env.app.risk.applied < served:
        assert time.monotonic() < deadline, "risk scoring did not keep up"
        time.sleep(0.01)


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


def _chat(env: Env, i: int) -> Any:
    p = CHAT[i % len(CHAT)]
    msgs: list[Any] = [{"role": "user", "content": p}]
    if i % 2:
        msgs += [
            {"role": "assistant", "content": "Here are a few ideas for " + p.lower()},
            {"role": "user", "content": "Shorter please, and why?"},
        ]
    return env.client("unverified").chat.completions.create(model="mock-mini", messages=msgs)


def test_harvester_is_capped_then_blocked_chatty_user_allowed(serve: Callable[..., Any]) -> None:
    # watch and suspect both cap (the level a short run passes through first depends on timing)
    with serve(actions={"watch": CAPS, "suspect": CAPS, "block": ["block"]}) as env:
        served = 0
        levels: list[str] = []
        capped_seen = False
        blocked_at = None
        for i in range(60):
            if i < 15:
                _chat(env, i)
                served += 1
            before = len(env.upstream.bodies)
            v = env.app.risk.verdicts.get("acct_v")  # type: ignore[union-attr]
            try:
                r = _harvest(env, i)
            except openai.PermissionDeniedError as e:
                assert e.code == "risk_block"  # type: ignore[attr-defined]
                assert len(env.upstream.bodies) == before  # nothing forwarded
                blocked_at = i
                break
            served += 1
            sent = env.upstream.bodies[-1]
            if v is not None and v.level in ("watch", "suspect"):
                # request-side actions: the body sent upstream is capped and stripped of logprobs, n=1
                assert sent["max_tokens"] == 256 and sent.get("n") == 1
                assert "logprobs" not in sent and "top_logprobs" not in sent
                # response-side: the reasoning trace does not reach the client
                assert "reasoning_content" not in r.choices[0].message.model_dump()
                capped_seen = True
            else:
                assert sent["max_tokens"] == 4096 and sent["logprobs"] is True and sent["n"] == 2
                assert r.choices[0].message.model_dump().get("reasoning_content") == "Let me think."
            _settle(env, served)
            levels.append(env.app.risk.verdicts["acct_v"].level if "acct_v" in env.app.risk.verdicts else "-")  # type: ignore[union-attr]
        assert capped_seen, " ".join(levels)
        assert blocked_at is not None, levels
        assert env.app.risk.verdicts["acct_u"].level == "ok"  # type: ignore[union-attr]
        # the chatty account's requests went through unchanged after it was scored
        rows = env.audit_rows()
        u_rows = [r for r in rows if r["account_id"] == "acct_u"]
        assert all(r["attributes"].get("risk.actions", "allow") == "allow" for r in u_rows)
        assert any(r["attributes"].get("risk.level") == "ok" for r in u_rows)
        v_rows = [r for r in rows if r["account_id"] == "acct_v"]
        suspect = [r for r in v_rows if r["attributes"].get("risk.level") in ("watch", "suspect")]
        assert suspect and suspect[0].get("status", 200) == 200
        a = suspect[0]["attributes"]
        assert a["risk.actions"] == "cap_max_tokens,disable_logprobs,disable_n,strip_reasoning"
        assert (
            a["risk.reasons"].startswith(f"risk_{a['risk.level']}; ")
            and "fingerprint.orca_system" in a["risk.reasons"]
        )
        assert float(a["risk.score"]) > 0
        # the audit keeps what the client asked for (the upstream got the capped body)
        assert suspect[0]["max_tokens"] == 4096
        last = v_rows[-1]
        assert last["status"] == 403 and last["attributes"]["refusal"] == "risk_block"
        assert last["attributes"]["risk.level"] == "block" and last["attributes"]["risk.actions"] == "block"
        assert env.app.risk.dropped == 0  # type: ignore[union-attr]


def test_shadow_mode_records_without_acting(serve: Callable[..., Any]) -> None:
    with serve(shadow=True) as env:
        for served, i in enumerate(range(40), start=1):
            r = _harvest(env, i)
            sent = env.upstream.bodies[-1]
            assert sent["max_tokens"] == 4096 and sent["n"] == 2 and sent["logprobs"] is True
            assert r.choices[0].message.model_dump().get("reasoning_content") == "Let me think."
            _settle(env, served)
        assert env.app.risk.verdicts["acct_v"].level == "block"  # type: ignore[union-attr]
        rows = [r for r in env.audit_rows() if r["account_id"] == "acct_v"]
        assert all(r.get("status", 200) == 200 for r in rows)
        shadow = [r["attributes"] for r in rows if "risk.level" in r["attributes"]]
        assert shadow and all(a["risk.shadow"] == "1" for a in shadow)
        seen = {a["risk.level"] for a in shadow}
        assert "block" in seen and seen & {"watch", "suspect"}, seen
        assert any(
            a["risk.actions"] == "block" and a["risk.reasons"].startswith("risk_block") for a in shadow
        )


def _set(env: Env, level: str, actions: tuple[str, ...]) -> None:
    env.app.risk.verdicts["acct_v"] = RiskVerdict(level, 0.9, f"risk_{level}; x=1", actions)  # type: ignore[union-attr]


def test_refusing_actions_and_streamed_strip(serve: Callable[..., Any]) -> None:
    with serve() as env:
        c = env.client("verified")
        msgs: Any = [{"role": "user", "content": "hi"}]
        _set(env, "block", ("throttle",))
        with pytest.raises(openai.RateLimitError) as e:
            c.chat.completions.create(model="mock-mini", messages=msgs)
        assert e.value.response.headers["retry-after"] == "60"
        _set(env, "block", ("require_verification",))
        with pytest.raises(openai.PermissionDeniedError) as e2:
            c.chat.completions.create(model="mock-mini", messages=msgs)
        assert e2.value.code == "verification_required"  # type: ignore[attr-defined]
        _set(env, "suspect", ("strip_reasoning", "cap_max_tokens"))
        deltas = [
            ch.choices[0].delta.model_dump()
            for ch in c.chat.completions.create(model="mock-think", messages=msgs, stream=True)
            if ch.choices
        ]
        text = "".join(d.get("content") or "" for d in deltas)
        assert text == "Hello from the mock stream." and not any("reasoning_content" in d for d in deltas)
        assert env.upstream.bodies[-1]["max_tokens"] == 256  # none named: the cap is set
        rows = env.audit_rows()
        refusals = [r["attributes"].get("refusal") for r in rows]
        assert "risk_throttle" in refusals and "verification_required" in refusals


def test_strip_helpers() -> None:
    obj: dict[str, Any] = {"choices": [{"index": 0, "message": {"content": "a", "reasoning": "r"}}]}
    assert strip_json("/v1/chat/completions", obj) and obj["choices"][0]["message"] == {"content": "a"}
    resp: dict[str, Any] = {
        "output": [{"type": "reasoning", "summary": []}, {"type": "message", "content": []}]
    }
    assert strip_json("/v1/responses", resp) and [o["type"] for o in resp["output"]] == ["message"]
    assert strip_event("/v1/responses", {"type": "response.reasoning_summary_text.delta"}) == (True, False)
    assert strip_event("/v1/responses", {"type": "response.output_text.delta"}) == (False, False)


def test_busy_account_is_rescored_at_most_every_rescore_min_s() -> None:
    from datetime import UTC, datetime

    from distillguard.exchange import validate
    from distillguard.gateway.config import RiskConfig
    from distillguard.gateway.risk_state import build_state

    cfg = RiskConfig(rescore_every=10, rescore_min_s=1.0)
    st = build_state(cfg, None)
    ts = datetime(2026, 11, 1, tzinfo=UTC).isoformat()

    def batch(k: int) -> list:
        return [
            validate(
                {"exchange_id": f"e{k}-{i}", "ts": ts, "account_id": "busy", "model": "m", "messages": []}
            )
            for i in range(10)
        ]

    st.learn(batch(0), now=100.0)
    assert st.due(100.0) == ["busy"]  # the first score is never held back
    st.learn(batch(1), now=100.4)
    assert st.due(100.4) == []  # ten new exchanges, but scored 0.4 s ago
    assert st.due(100.9) == []
    assert st.due(101.0) == ["busy"]  # still pending, now due
    st.learn(batch(2), now=101.2)
    assert st.due(101.2) == []
    st.close()
