"""The gateway through the official openai SDK: chat, streams, embeddings, models, errors, 429s."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

from distillguard.gateway.app import Gateway

from .conftest import Env, gateway_config, make_store
from .mock_upstream import MockUpstream, serve_in_thread


def wait_for(cond: object, timeout: float = 2.0) -> bool:
    """Reconcile and metrics run just after the last byte: give them a moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_chat_plain_is_forwarded_and_audited(env: Env) -> None:
    c = env.client()
    r = c.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "plain one"}],
        temperature=0.5,
        max_tokens=50,
        user="end-user-7",
    )
    assert r.choices[0].message.content == "Hello from mock: plain one"
    assert r.usage is not None and r.usage.total_tokens == 16
    # The final record is durable before the client gets the body: readable right now.
    rows = env.audit_rows()
    rec = next(x for x in rows if x["exchange_id"] == r._request_id)
    assert rec["account_id"] == "acct_v" and rec["org_id"] == "org_acme"
    assert rec["api_key_id"] == env.key_ids["verified"]
    assert rec["system_prompt"] == "Be brief."
    assert rec["messages"] == [{"role": "user", "content": "plain one"}]
    assert rec["response_text"] == "Hello from mock: plain one"
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (11, 5)
    assert rec["client_ip"] == "127.0.0.1" and rec["end_user"] == "end-user-7"
    assert rec["temperature"] == 0.5 and rec["max_tokens"] == 50 and rec.get("status", 200) == 200
    assert rec["user_agent"].startswith("OpenAI/Python")
    # the upstream got the gateway's key, never the client's
    assert env.upstream.auth[-1] == "Bearer sk-upstream-secret"
    # the limiter saw quotas as data and was reconciled with the real usage
    descs, est = env.limiter.admits[-1]
    assert est >= 50
    assert wait_for(lambda: env.limiter.reconciled[-1:] == [16])
    assert all(d.kind != "account" for d in descs)  # the verified tier in this config sets no quotas


def test_stream_with_include_usage(env: Env) -> None:
    c = env.client()
    stream = c.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    rid = stream.response.headers["x-request-id"]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "Hello from the mock stream."
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 15
    rec = next(x for x in env.audit_rows() if x["exchange_id"] == rid)
    assert rec["response_text"] == text and rec["finish_reason"] == "stop"
    assert rec["completion_tokens"] == 6
    assert wait_for(lambda: env.limiter.reconciled[-1:] == [15])


def test_stream_without_include_usage_hides_the_usage_chunk(env: Env) -> None:
    chunks = list(
        env.client().chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "no usage"}], stream=True
        )
    )
    assert all(ch.usage is None for ch in chunks) and all(ch.choices for ch in chunks)
    rows = env.audit_rows()
    assert rows[-1]["prompt_tokens"] == 9  # the gateway asked for usage itself


def test_stream_is_relayed_event_by_event(env: Env) -> None:
    env.upstream.drip_s = 0.2
    with (
        httpx.Client(timeout=10) as h,
        h.stream(
            "POST",
            env.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {env.keys['verified']}"},
            json={"model": "mock-drip", "messages": [{"role": "user", "content": "drip"}], "stream": True},
        ) as r,
    ):
        t0 = time.perf_counter()
        it = r.iter_raw()
        first = next(it)
        # 6 more events follow 0.2 s apart: the first must not wait for them (slack for a loaded machine)
        assert time.perf_counter() - t0 < 0.6, "the first event must not wait for the rest"
        assert first.startswith(b"data: ")
        rest = b"".join(it)
        assert time.perf_counter() - t0 > 1.0  # the upstream dripped 6 events 0.2 s apart
    env.upstream.drip_s = 0.05
    assert rest.endswith(b"data: [DONE]\n\n")


def test_embeddings_completions_responses_models(env: Env) -> None:
    c = env.client()
    e = c.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(e.data) == 2 and e.usage.prompt_tokens == 10
    comp = c.completions.create(model="gpt-4o", prompt="complete me")
    assert comp.choices[0].text == "completion answer"
    resp = c.responses.create(model="gpt-4o", input="respond", instructions="You are terse.")
    assert resp.output_text == "responses answer"
    ids = {m.id for m in c.models.list()}
    assert "gpt-4o" in ids
    # the unverified tier only sees the models it may call
    u_ids = {m.id for m in env.client("unverified").models.list()}
    assert "gpt-4o" not in u_ids and "gpt-4o-mini" in u_ids
    rows = {r["endpoint"]: r for r in env.audit_rows()}
    assert rows["/v1/embeddings"]["messages"] == [{"role": "user", "content": ["a", "b"]}]
    assert rows["/v1/responses"]["system_prompt"] == "You are terse."
    assert rows["/v1/responses"]["response_text"] == "responses answer"
    assert rows["/v1/completions"]["prompt_tokens"] == 4


def test_upstream_500_is_an_internal_server_error_with_our_message(env: Env) -> None:
    with pytest.raises(openai.InternalServerError) as ei:
        env.client().chat.completions.create(model="mock-500", messages=[{"role": "user", "content": "x"}])
    assert ei.value.status_code == 502
    assert "upstream failed with status 500: mock exploded" in ei.value.message
    rec = env.audit_rows()[-1]
    assert rec["status"] == 502 and rec["attributes"]["outcome"] == "upstream_error"


def test_stream_reset_mid_way_is_an_error_event(env: Env) -> None:
    with pytest.raises(openai.APIError) as ei:
        for _ in env.client().chat.completions.create(
            model="mock-reset", messages=[{"role": "user", "content": "reset"}], stream=True
        ):
            pass
    assert "upstream connection failed" in str(ei.value)
    rec = env.audit_rows()[-1]
    assert rec["response_text"] == "Hello from the" and rec["attributes"]["outcome"] == "upstream_reset"


def test_bad_key_is_an_authentication_error(env: Env) -> None:
    from openai import OpenAI

    c = OpenAI(base_url=env.url + "/v1", api_key="dg-not-a-real-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as ei:
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert ei.value.code == "invalid_api_key"
    rec = env.audit_rows()[-1]
    assert rec["status"] == 401 and rec["account_id"] == "anonymous"
    assert rec["attributes"]["refusal"] == "invalid_api_key"
    assert "dg-not-a-real-key" not in env.cfg.audit.path.read_text()


@pytest.mark.parametrize(
    ("kwargs", "code", "param"),
    [
        ({"model": "gpt-4o"}, "model_not_allowed", "model"),
        ({"model": "gpt-4o-mini", "logprobs": True}, "feature_not_allowed", "logprobs"),
        ({"model": "gpt-4o-mini", "n": 2}, "feature_not_allowed", "n"),
        ({"model": "gpt-4o-mini", "max_tokens": 5000}, "max_tokens_exceeds_tier", "max_tokens"),
        ({"model": "gpt-4o-mini", "reasoning_effort": "high"}, "feature_not_allowed", "reasoning_effort"),
    ],
)
def test_tier_rules_are_permission_denied(env: Env, kwargs: dict[str, object], code: str, param: str) -> None:
    with pytest.raises(openai.PermissionDeniedError) as ei:
        env.client("unverified").chat.completions.create(
            messages=[{"role": "user", "content": "x"}], **kwargs
        )  # type: ignore[call-overload]
    assert ei.value.code == code and ei.value.param == param
    assert "unverified" in ei.value.message
    assert env.audit_rows()[-1]["attributes"]["refusal"] == code


def test_unverified_quotas_reach_the_limiter(env: Env) -> None:
    env.client("unverified").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=100
    )
    descs, est = env.limiter.admits[-1]
    by_kind = {d.kind: d for d in descs}
    assert by_kind["account"].id == "acct_u" and by_kind["account"].tpm == 10000
    assert by_kind["ip"].id == "127.0.0.1" and by_kind["ip"].rpm == 100
    assert 100 < est < 200


def test_limiter_refusal_is_a_rate_limit_error(env: Env) -> None:
    env.limiter.refuse = 1
    n_up = len(env.upstream.received)
    with pytest.raises(openai.RateLimitError) as ei:
        env.client().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    h = ei.value.response.headers
    assert h["retry-after"] == "1" and h["x-ratelimit-remaining-requests"] == "0"
    assert "account:acct_v rpm" in ei.value.message
    assert len(env.upstream.received) == n_up  # max_retries=0: refused once, nothing forwarded
    assert env.audit_rows()[-1]["status"] == 429
    # with a retry allowed, the SDK waits the Retry-After (retry-after-ms: 300) and then succeeds
    env.limiter.refuse = 1
    t0 = time.perf_counter()
    r = env.client(max_retries=1).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "retry"}]
    )
    assert r.choices[0].message.content and time.perf_counter() - t0 >= 0.25


def test_malformed_and_oversized_bodies(env: Env) -> None:
    auth = {"authorization": f"Bearer {env.keys['verified']}", "content-type": "application/json"}
    with httpx.Client(base_url=env.url, timeout=10) as h:
        r = h.post("/v1/chat/completions", content=b'{"model": "gpt-4o", "messages": [', headers=auth)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        assert "not valid JSON" in r.json()["error"]["message"]
        r = h.post("/v1/chat/completions", content=b"[1, 2]", headers=auth)
        assert r.status_code == 400 and "JSON object" in r.json()["error"]["message"]
        r = h.post("/v1/chat/completions", json={"model": "gpt-4o"}, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
        r = h.post("/v1/chat/completions", content=b"x" * (65 * 1024), headers=auth)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        r = h.get("/v1/chat/completions", headers=auth)
        assert r.status_code == 405
        r = h.get("/v1/nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"


def test_client_disconnect_cancels_the_upstream_call(env: Env) -> None:
    with httpx.Client(timeout=0.5) as h, pytest.raises(httpx.ReadTimeout):
        h.post(
            env.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {env.keys['verified']}"},
            json={"model": "mock-slow", "messages": [{"role": "user", "content": "cancel me"}]},
        )
    deadline = time.monotonic() + 5
    while "cancel me" not in env.upstream.cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "cancel me" in env.upstream.cancelled
    while time.monotonic() < deadline:
        rows = [r for r in env.audit_rows() if r["messages"] and r["messages"][0]["content"] == "cancel me"]
        if rows:
            break
        time.sleep(0.02)
    assert rows[0]["status"] == 499 and rows[0]["attributes"]["outcome"] == "client_disconnected"


def test_revocation_and_rotation(env: Env) -> None:
    c = env.client()
    c.models.list()
    env.store.revoke_key(env.key_ids["verified"])
    t0 = time.perf_counter()
    while True:
        try:
            c.models.list()
        except openai.AuthenticationError as e:
            assert "revoked" in e.message
            break
        assert time.perf_counter() - t0 < 1.0, "a revoked key must be refused within 1 s"
        time.sleep(0.02)
    # rotation: old and new both work during the grace period, then only the new one
    from datetime import timedelta

    info, secret = env.store.rotate_key(env.key_ids["unverified"], timedelta(seconds=3))
    time.sleep(0.6)  # > one revision poll
    old = env.client("unverified")
    from openai import OpenAI

    new = OpenAI(base_url=env.url + "/v1", api_key=secret, max_retries=0)
    old.models.list()
    new.models.list()
    time.sleep(2.6)
    with pytest.raises(openai.AuthenticationError, match="expired"):
        old.models.list()
    new.models.list()
    stored = {k.id: k for k in env.store.list_keys()}
    assert stored[env.key_ids["unverified"]].replaced_by == info.id


def test_metrics_and_health(env: Env) -> None:
    env.client().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "m"}])
    with pytest.raises(openai.PermissionDeniedError):
        env.client("unverified").chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    with httpx.Client(base_url=env.url) as h:
        assert h.get("/healthz").json()["status"] == "ok"
        m = h.get("/metrics").text
    assert 'distillguard_gateway_requests_total{route="/v1/chat/completions",status="200"}' in m
    assert 'distillguard_gateway_refusals_total{reason="model_not_allowed"}' in m
    assert "distillguard_gateway_overhead_seconds_bucket" in m
    assert "distillguard_gateway_upstream_seconds_count" in m


def test_configured_limiter_enforces_tier_quotas(tmp_path: Path, upstream: tuple[MockUpstream, str]) -> None:
    """Without an injected limiter the gateway builds the configured one (in-process by default) and
    the tier's quotas hold: the unverified tier's 60 RPM per account refuses the 61st request."""
    _, up_url = upstream
    cfg = gateway_config(tmp_path, up_url)
    store, keys, _ = make_store(tmp_path, cfg)
    app = Gateway(cfg, store=store)
    from openai import OpenAI

    with serve_in_thread(app) as url:
        c = OpenAI(base_url=url + "/v1", api_key=keys["unverified"], max_retries=0)
        for _ in range(60):
            c.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=50
            )
        with pytest.raises(openai.RateLimitError) as ei:
            c.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=50
            )
        assert "rpm" in ei.value.message and int(ei.value.response.headers["retry-after"]) >= 1
