"""Radioactivity, closed setting: a suspect API queried with our prompts, tested sequentially.

The endpoints are real OpenAI-compatible HTTP handlers (httpx transport, no socket) answering with a
tiny teacher's samples, watermarked with one account's key (a reseller of our outputs) or not (a clean
model). Answers are space-separated token ids (the `ids` codec).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from distillguard.forensics.keys import KeyRing, ProviderSecret
from distillguard.forensics.kgw import KGW
from distillguard.forensics.remote import (
    ChatEndpoint,
    IdsCodec,
    MixtureEProcess,
    RemoteError,
    sequential_test,
)
from distillguard.forensics.suspect import control_ring, run_closed
from distillguard.forensics.teacher import RandomLogitsTeacher

SECRET = ProviderSecret(bytes(range(1, 33)))
RING = KeyRing.derive(SECRET, [f"acct-{i}" for i in range(50)])
SCHEME = KGW(gamma=0.25, delta=2.0, context_width=1)
TEACHER = RandomLogitsTeacher(200, seed=5, scale=1.0)


def _endpoint(account: str | None, length: int = 60) -> tuple[ChatEndpoint, list[dict[str, object]]]:
    seen: list[dict[str, object]] = []
    calls = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        calls["n"] += 1
        prompt = np.array([[int(w) for w in body["messages"][0]["content"].split()]])
        key = SECRET.account_key(account) if account else None
        ans = TEACHER.generate(prompt, length, scheme=SCHEME if key else None, key=key, seed=calls["n"])[0]
        text = " ".join(map(str, ans.tokens.tolist()))
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": text}}]})

    ep = ChatEndpoint("http://127.0.0.1:9/v1", max_tokens=length, transport=httpx.MockTransport(handle))
    return ep, seen


PROMPTS = [" ".join(map(str, p)) for p in TEACHER.random_prompts(40, length=5, seed=11).tolist()]


def test_reseller_is_caught_early_and_named() -> None:
    ep, seen = _endpoint("acct-31")
    res = sequential_test(ep.ask, PROMPTS, IdsCodec(), SCHEME, RING, alpha=1e-3, budget=40)
    assert res.rejected and res.implicated == ["acct-31@0"]
    assert res.queries < 10  # stopped as soon as the evidence sufficed
    assert len(seen) == res.queries
    assert res.family_p_value <= 1e-3
    assert seen[0]["messages"] == [{"role": "user", "content": PROMPTS[0]}]


def test_clean_model_spends_the_budget_without_rejecting() -> None:
    ep, seen = _endpoint(None)
    res = sequential_test(ep.ask, PROMPTS, IdsCodec(), SCHEME, RING, alpha=1e-3, budget=25)
    assert not res.rejected and res.implicated == []
    assert res.queries == 25 and len(seen) == 25
    assert res.tokens_scored > 1000
    assert res.family_p_value > 1e-3


def test_mixture_e_process_is_anytime_valid_under_the_null() -> None:
    # 4,000 null streams of green flags, checked after every window: sup_t M_t >= 1/alpha must happen
    # in at most alpha of them (Ville); alpha = 0.05 so the check has power to fail
    rng = np.random.default_rng(0)
    runs, steps, alpha = 4000, 400, 0.05
    flags = rng.random((runs, steps)) < SCHEME.gamma
    counts = flags.cumsum(axis=1)
    ep = MixtureEProcess(SCHEME)
    log_e = np.stack([ep.log_e(float(t + 1), counts[:, t].astype(float)) for t in range(steps)], axis=1)
    rate = float((log_e.max(axis=1) >= np.log(1 / alpha)).mean())
    assert rate <= alpha
    # and it has power: a stream at 0.35 green is rejected in most runs
    marked = (rng.random((200, steps)) < 0.35).cumsum(axis=1)
    final = ep.log_e(float(steps), marked[:, -1].astype(float))
    assert (final >= np.log(1 / alpha)).mean() > 0.8


def test_endpoint_errors_name_the_query() -> None:
    def bad(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": "boom"})

    ep = ChatEndpoint("http://127.0.0.1:9", transport=httpx.MockTransport(bad))
    with pytest.raises(RemoteError, match=r"query 3: .* answered HTTP 500"):
        ep.ask("hello", 3)
    with pytest.raises(RemoteError, match="6 queries failed"):
        sequential_test(ep.ask, PROMPTS, IdsCodec(), SCHEME, RING, budget=20)
    with pytest.raises(RemoteError, match="http"):
        ChatEndpoint("ftp://x")


def test_run_closed_reports_controls(tmp_path: Path) -> None:
    ep, _ = _endpoint("acct-2")
    outcome, seq = run_closed(ep, PROMPTS, IdsCodec(), SCHEME, RING, control_ring(SECRET, 20), budget=30)
    assert outcome.implicated == ["acct-2@0"]
    assert outcome.test["details"]["stopped_early"] is True
    assert outcome.controls[0]["passed"] is True
    assert outcome.controls[0]["tokens_scored"] == seq.tokens_scored


def test_cli_closed_setting_against_a_local_server(tmp_path: Path) -> None:
    """`forensics test http://127.0.0.1:PORT` end to end, over a real socket (uvicorn in a thread)."""
    import socket
    import threading

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from typer.testing import CliRunner

    from distillguard.cli import app

    counter = {"n": 0}

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        counter["n"] += 1
        prompt = np.array([[int(w) for w in body["messages"][0]["content"].split()]])
        ans = TEACHER.generate(
            prompt, 60, scheme=SCHEME, key=SECRET.account_key("acct-9"), seed=counter["n"]
        )[0]
        text = " ".join(map(str, ans.tokens.tolist()))
        return JSONResponse({"choices": [{"message": {"role": "assistant", "content": text}}]})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])]), log_level="error"
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(200):  # bounded wait for startup
            if server.started:
                break
            threading.Event().wait(0.02)
        (tmp_path / "secret.hex").write_text(SECRET.to_hex())
        (tmp_path / "accounts.txt").write_text("\n".join(f"acct-{i}" for i in range(50)) + "\n")
        (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps({"prompt": p}) for p in PROMPTS) + "\n")
        res = CliRunner().invoke(
            app,
            ["forensics", "test", f"http://127.0.0.1:{port}/v1", "--prompts", str(tmp_path / "prompts.jsonl"),
             "--tokenizer", "ids", "--keys", str(tmp_path / "accounts.txt"), "--secret", str(tmp_path / "secret.hex"),
             "--budget", "30", "--out", str(tmp_path / "ev")],
        )  # fmt: skip
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "ev" / "evidence.json").read_text())
    assert ev["verdict"]["implicated"] == ["acct-9@0"]
    details = ev["tests"][0]["details"]
    assert details["stopped_early"] is True and details["queries"] == counter["n"] < 30
    assert ev["controls"][0]["passed"] is True
    assert "--budget 30" in ev["reproduce"][1]
