"""Per-account watermarks through the gateway, with the official openai SDK as the client.

`upstream` mode: the forwarded body carries the account's `vllm_xargs[dg_watermark]` (and a header), a
client's own value is removed, and the model server's processor (forensics/vllm.py) derives that
account's key from it. `lexical` mode: the gateway marks response text (JSON, SSE, per choice), the
client and the audit log see the same marked text, and detection names the account.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from distillguard.forensics.keys import KeyRing, ProviderSecret
from distillguard.forensics.lexical import attribute_lexical
from distillguard.forensics.vllm import KeyResolver, WatermarkArg
from distillguard.gateway.app import Gateway
from distillguard.gateway.body import receive_body
from distillguard.gateway.config import GatewayConfig, WatermarkConfig
from distillguard.gateway.watermark import LexicalMarker, WatermarkHook

from .conftest import Env, ScriptedLimiter, gateway_config, make_store
from .mock_upstream import MockUpstream, serve_in_thread

SECRET = ProviderSecret(bytes(range(40, 72)))

# prose with many words of the synonym table, in varied contexts (about 70 substitution slots)
LONG = (
    "The big report was basically finished, and the team was certainly relieved. "
    "Frankly, the results were nearly perfect, although the method was somewhat tedious. "
    "Mainly, the cheap sensors behaved consistently, which was remarkably useful. "
    "However, the large dataset was hardly clean; several rows were obviously fake. "
    "Afterwards we quickly fixed the dirty records and carefully checked the rest. "
    "Accordingly, the final model is relatively reliable and roughly twice as fast. "
    "It is especially good at rare cases, which were previously a dreadful problem. "
    "Maybe the next version will be slightly bigger, but the gains seem entirely real. "
    "Evidently the users were amazed, and they happily accepted the tiny delay. "
    "Moreover, the huge archive is mostly understandable now, thus the audit was simple. "
    "Seriously, the lengthy review was needed; the experts were frankly exhausted. "
    "Apparently the precious logs were located underground, in a damp and dingy room. "
    "Usually the notable failures are immediately visible, yet some stay mysterious. "
    "Increasingly, the vast system works similarly well, and the outcome seems permanent."
)


class WatermarkUpstream(MockUpstream):
    """The gateway tests' mock, plus request headers and `mock-long` (long prose, streamed in small pieces)."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[dict[bytes, bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await super().__call__(scope, receive, send)
            return
        self.headers.append(dict(scope["headers"]))
        raw = await receive_body(receive, 1 << 40)  # any size: the gateway bounds bodies, a mock does not
        body = orjson.loads(raw)
        if body.get("model") != "mock-long":
            sent = False

            async def replay() -> dict[str, Any]:
                nonlocal sent
                if sent:
                    await asyncio.Event().wait()  # as a real receive: nothing more until disconnect
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}

            await super().__call__(scope, replay, send)
            return
        self.bodies.append(body)
        await _long(scope["path"], body, send)


def _pieces(text: str, size: int = 7) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]  # cuts words in the middle


async def _long(path: str, body: dict[str, Any], send: Any) -> None:
    n = body.get("n") or 1
    texts = [LONG if i == 0 else LONG.replace("report", "memo") for i in range(n)]
    usage = {"prompt_tokens": 10, "completion_tokens": 200, "total_tokens": 210}
    if not body.get("stream"):
        if path == "/v1/responses":
            obj: dict[str, Any] = {
                "id": "resp_l",
                "object": "response",
                "created_at": 0,
                "status": "completed",
                "model": "mock-long",
                "output": [_msg_item(LONG)],
                "usage": {"input_tokens": 10, "output_tokens": 200, "total_tokens": 210},
            }
        elif path == "/v1/completions":
            obj = {
                "id": "cmpl-l",
                "object": "text_completion",
                "created": 0,
                "model": "mock-long",
                "choices": [
                    {"index": i, "text": t, "finish_reason": "stop", "logprobs": None}
                    for i, t in enumerate(texts)
                ],
                "usage": usage,
            }
        else:
            obj = {
                "id": "chatcmpl-l",
                "object": "chat.completion",
                "created": 0,
                "model": "mock-long",
                "choices": [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": t},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                    for i, t in enumerate(texts)
                ],
                "usage": usage,
            }
        data = orjson.dumps(obj)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
    )

    async def ev(obj: Any) -> None:
        await send(
            {"type": "http.response.body", "body": b"data: " + orjson.dumps(obj) + b"\n\n", "more_body": True}
        )

    if path == "/v1/responses":
        seq = iter(range(10_000))
        await ev(
            {"type": "response.created", "sequence_number": next(seq), "response": _resp([], "in_progress")}
        )
        item = _msg_item("")
        await ev(
            {
                "type": "response.output_item.added",
                "sequence_number": next(seq),
                "output_index": 0,
                "item": item,
            }
        )
        for p in _pieces(LONG):
            await ev(
                {
                    "type": "response.output_text.delta",
                    "sequence_number": next(seq),
                    "item_id": "msg_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": p,
                    "logprobs": [],
                }
            )
        base = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
        await ev(
            {
                "type": "response.output_text.done",
                "sequence_number": next(seq),
                **base,
                "text": LONG,
                "logprobs": [],
            }
        )
        part = {"type": "output_text", "text": LONG, "annotations": []}
        await ev({"type": "response.content_part.done", "sequence_number": next(seq), **base, "part": part})
        await ev(
            {
                "type": "response.output_item.done",
                "sequence_number": next(seq),
                "output_index": 0,
                "item": _msg_item(LONG),
            }
        )
        await ev(
            {
                "type": "response.completed",
                "sequence_number": next(seq),
                "response": _resp([_msg_item(LONG)], "completed"),
            }
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    chat = path == "/v1/chat/completions"
    base = {
        "id": "chatcmpl-ls",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": 0,
        "model": "mock-long",
    }
    pieces = [_pieces(t) for t in texts]
    for j in range(max(len(p) for p in pieces)):  # the choices' pieces interleaved, as a server sends them
        for i, p in enumerate(pieces):
            if j < len(p):
                ch = {"index": i, "delta": {"content": p[j]}} if chat else {"index": i, "text": p[j]}
                await ev({**base, "choices": [{**ch, "finish_reason": None}]})
    for i in range(n):
        ch = {"index": i, "delta": {}} if chat else {"index": i, "text": ""}
        await ev({**base, "choices": [{**ch, "finish_reason": "stop"}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        await ev({**base, "choices": [], "usage": usage})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def _msg_item(text: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if text else []
    return {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed", "content": content}


def _resp(output: list[Any], status: str) -> dict[str, Any]:
    return {
        "id": "resp_ls",
        "object": "response",
        "created_at": 0,
        "status": status,
        "model": "mock-long",
        "output": output,
        "usage": {"input_tokens": 10, "output_tokens": 200, "total_tokens": 210}
        if status == "completed"
        else None,
    }


@pytest.fixture(scope="module")
def wm_upstream() -> Iterator[tuple[WatermarkUpstream, str]]:
    mock = WatermarkUpstream()
    with serve_in_thread(mock) as url:
        yield mock, url


def make_env(tmp: Path, up: tuple[WatermarkUpstream, str], **wm: Any) -> Iterator[Env]:
    mock, url = up
    base = gateway_config(tmp, url)
    secret_file = tmp / "wm.secret"
    secret_file.write_text(SECRET.to_hex())
    cfg = base.model_copy(
        update={"watermark": WatermarkConfig.model_validate({"secret_file": secret_file, **wm})}
    )
    store, secrets_, ids = make_store(tmp, cfg)
    limiter = ScriptedLimiter()
    app = Gateway(cfg, limiter=limiter, store=store)
    with serve_in_thread(app) as gw:
        yield Env(gw, mock, store, limiter, app, cfg, secrets_, ids)


@pytest.fixture
def upstream_env(tmp_path: Path, wm_upstream: tuple[WatermarkUpstream, str]) -> Iterator[Env]:
    yield from make_env(tmp_path, wm_upstream, mode="upstream", header="x-dg-watermark")


@pytest.fixture
def lexical_env(tmp_path: Path, wm_upstream: tuple[WatermarkUpstream, str]) -> Iterator[Env]:
    yield from make_env(tmp_path, wm_upstream, mode="lexical")


@pytest.fixture
def off_env(tmp_path: Path, wm_upstream: tuple[WatermarkUpstream, str]) -> Iterator[Env]:
    yield from make_env(tmp_path, wm_upstream)


def audit_of(env: Env, xid: str) -> dict[str, Any]:
    return next(r for r in env.audit_rows() if r["exchange_id"] == xid)


# -- upstream mode ----------------------------------------------------------------------------------------
def test_upstream_mode_sends_each_accounts_arg_and_the_model_server_derives_its_key(
    upstream_env: Env,
) -> None:
    env = upstream_env
    forwarded: dict[str, str] = {}
    for tier, acct in (("verified", "acct_v"), ("unverified", "acct_u")):
        r = env.client(tier).chat.completions.with_raw_response.create(
            model="mock-mini", messages=[{"role": "user", "content": f"hi from {acct}"}]
        )
        body = env.upstream.bodies[-1]
        arg = body["vllm_xargs"]["dg_watermark"]
        assert arg == f"kgw:0:{acct}"
        assert env.upstream.headers[-1][b"x-dg-watermark"] == arg.encode()  # the optional header form
        forwarded[acct] = arg
        rec = audit_of(env, r.headers["x-request-id"])
        a = rec["attributes"]
        assert (a["watermark"], a["watermark.key"], a["watermark.scheme"]) == ("upstream", f"{acct}@0", "kgw")
        # the record names the key; it never holds key material
        key = SECRET.account_key(acct)
        line = orjson.dumps(rec).decode()
        assert str(key.seed) not in line and f"{key.seed:x}" not in line and SECRET.to_hex() not in line
    # the model server's processor (forensics/vllm.py) turns each argument into that account's key
    server = KeyResolver(SECRET)
    keys = {acct: server.resolve(WatermarkArg.parse(arg))[1] for acct, arg in forwarded.items()}
    assert keys["acct_v"] == SECRET.account_key("acct_v") and keys["acct_u"] == SECRET.account_key("acct_u")
    assert keys["acct_v"].seed != keys["acct_u"].seed


def test_a_client_cannot_set_or_override_the_watermark_arg(upstream_env: Env) -> None:
    env = upstream_env
    c = env.client()
    r = c.chat.completions.with_raw_response.create(
        model="mock-mini",
        messages=[{"role": "user", "content": "forge"}],
        extra_body={"vllm_xargs": {"dg_watermark": "kgw:0:acct_u", "top_n_sigma": 2}},
    )
    body = env.upstream.bodies[-1]
    # ours replaced the client's (it named another account); the client's other custom args are kept
    assert body["vllm_xargs"] == {"dg_watermark": "kgw:0:acct_v", "top_n_sigma": 2}
    assert audit_of(env, r.headers["x-request-id"])["attributes"]["watermark.client_arg"] == "removed"
    # a stream too (its body is re-serialised to ask for usage); and a non-object vllm_xargs is replaced
    list(
        c.chat.completions.create(
            model="mock-mini",
            messages=[{"role": "user", "content": "forge stream"}],
            stream=True,
            extra_body={"vllm_xargs": "dg_watermark=kgw:0:acct_u"},
        )
    )
    assert env.upstream.bodies[-1]["vllm_xargs"] == {"dg_watermark": "kgw:0:acct_v"}
    # a route that is not marked (embeddings) still loses the client's argument, and gets none of ours
    c.embeddings.create(
        model="text-embedding-3-small", input="x", extra_body={"vllm_xargs": {"dg_watermark": "kgw:0:acct_u"}}
    )
    assert "vllm_xargs" not in env.upstream.bodies[-1]
    assert b"x-dg-watermark" not in env.upstream.headers[-1]


def test_off_mode_forwards_the_body_untouched(off_env: Env) -> None:
    env = off_env
    assert env.app.watermark is None
    sent = {"model": "mock-mini", "messages": [{"role": "user", "content": "off"}]}
    xargs = {"dg_watermark": "kgw:0:acct_u", "k": 1}
    r = env.client().chat.completions.with_raw_response.create(**sent, extra_body={"vllm_xargs": xargs})  # type: ignore[arg-type]
    assert env.upstream.bodies[-1] == {**sent, "vllm_xargs": xargs}
    assert not any(k.startswith("watermark") for k in audit_of(env, r.headers["x-request-id"])["attributes"])


# -- lexical mode -----------------------------------------------------------------------------------------
def _chat(env: Env, tier: str = "verified", **kw: Any) -> Any:
    return env.client(tier).chat.completions.with_raw_response.create(
        model="mock-long", messages=[{"role": "user", "content": "write"}], **kw
    )


def test_lexical_json_is_marked_per_account_deterministically_and_detected(lexical_env: Env) -> None:
    env = lexical_env
    r1, r2, ru = _chat(env), _chat(env), _chat(env, "unverified")
    v1, v2 = r1.parse().choices[0].message.content, r2.parse().choices[0].message.content
    u = ru.parse().choices[0].message.content
    assert v1 == v2  # deterministic for an account
    assert v1 != LONG and u != LONG and v1 != u  # marked, and differently per account
    assert v1.split()[0] == "The" and len(v1.split()) == len(LONG.split())  # words swapped, nothing else
    # the audit holds what the client received, with the key's label
    rec = audit_of(env, r1.headers["x-request-id"])
    assert rec["response_text"] == v1
    assert (rec["attributes"]["watermark"], rec["attributes"]["watermark.key"]) == ("lexical", "acct_v@0")
    # detection among many accounts names the right one for each text
    ring = KeyRing.derive(SECRET, ["acct_v", "acct_u", *(f"decoy{i}" for i in range(50))])
    assert attribute_lexical(v1, ring).implicated == ["acct_v@0"]
    assert attribute_lexical(u, ring).implicated == ["acct_u@0"]
    assert attribute_lexical(LONG, ring).implicated == []


def test_lexical_streams_equal_json_per_choice_and_are_audited_as_sent(lexical_env: Env) -> None:
    env = lexical_env
    c = env.client()
    whole = _chat(env, n=2).parse()
    stream = c.chat.completions.create(
        model="mock-long", messages=[{"role": "user", "content": "write"}], n=2, stream=True
    )
    got = ["", ""]
    for chunk in stream:
        for ch in chunk.choices:
            got[ch.index] += ch.delta.content or ""
    assert got == [whole.choices[0].message.content, whole.choices[1].message.content]
    assert got[0] != got[1] and got[0] != LONG
    rec = audit_of(env, stream.response.headers["x-request-id"])
    assert rec["response_text"] == got[0] and rec["attributes"]["watermark.key"] == "acct_v@0"
    # completions, streamed and not
    comp = c.completions.create(model="mock-long", prompt="write").choices[0].text
    streamed = "".join(
        ch.choices[0].text
        for ch in c.completions.create(model="mock-long", prompt="w", stream=True)
        if ch.choices
    )
    assert streamed == comp == whole.choices[0].message.content


def test_lexical_responses_api_json_and_stream(lexical_env: Env) -> None:
    env = lexical_env
    c = env.client()
    marked = c.responses.create(model="mock-long", input="write").output_text
    assert marked != LONG and marked == _chat(env).parse().choices[0].message.content
    events = list(c.responses.create(model="mock-long", input="write", stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    final = next(e for e in events if e.type == "response.completed").response
    assert done.text == marked and final.output_text == marked
    assert marked.startswith(deltas) and len(deltas) > len(marked) - 80  # only a short tail held back
    item = next(e for e in events if e.type == "response.output_item.done").item
    assert item.content[0].text == marked
    rec = env.audit_rows()[-1]
    assert rec["endpoint"] == "/v1/responses" and rec["response_text"] == deltas


def test_lexical_leaves_json_mode_output_alone(lexical_env: Env) -> None:
    r = _chat(lexical_env, response_format={"type": "json_object"})
    assert r.parse().choices[0].message.content == LONG  # a swapped word could break the client's schema
    a = audit_of(lexical_env, r.headers["x-request-id"])["attributes"]
    assert a["watermark.skipped"] == "structured_output" and a["watermark.key"] == "acct_v@0"


def test_marker_withholds_logprobs_and_flushes_a_stream_cut_before_its_finish() -> None:
    from distillguard.forensics.lexical import LexicalWatermarker

    wm = LexicalWatermarker(SECRET.account_key("m"))
    m = LexicalMarker("/v1/chat/completions", wm)
    obj = {
        "choices": [{"index": 0, "message": {"content": LONG}, "logprobs": {"content": [{"token": "The"}]}}]
    }
    assert m.mark_json(obj) and obj["choices"][0]["logprobs"] is None
    s = LexicalMarker("/v1/chat/completions", wm)
    sent = ""
    for p in _pieces(LONG):
        ev = {
            "id": "x",
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": p}, "logprobs": {"content": []}}],
        }
        s.mark_event(ev)
        assert ev["choices"][0]["logprobs"] is None  # type: ignore[index]
        sent += ev["choices"][0]["delta"]["content"]  # type: ignore[index]
    tail = s.flush_events()  # [DONE] came with no finish_reason: the held-back words still go out
    assert len(tail) == 1 and tail[0]["id"] == "x"
    assert sent + tail[0]["choices"][0]["delta"]["content"] == wm.apply(LONG)
    assert s.flush_events() == []


# -- keys, epochs, configuration ---------------------------------------------------------------------------
def test_rotation_moves_the_epoch_and_the_key(tmp_path: Path) -> None:
    now = [86400.0 * 45]
    cfg = WatermarkConfig(mode="lexical", rotation_days=30)
    hook = WatermarkHook(cfg, secret=SECRET, clock=lambda: now[0])
    assert hook.epoch() == 1 and hook.key("a") == SECRET.account_key("a", 1)
    rec: dict[str, Any] = {"attributes": {}}
    hook.prepare("/v1/chat/completions", "a", {}, rec)
    assert rec["attributes"]["watermark.key"] == "a@1"
    now[0] = 86400.0 * 61
    assert hook.epoch() == 2 and hook.key("a") != SECRET.account_key("a", 1)
    assert WatermarkHook(WatermarkConfig(mode="lexical", epoch=7), secret=SECRET).epoch() == 7


def test_config_is_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ({"mode": "sometimes"}, {"header": "x-a: b"}, {"routes": ["/v1/embeddings"]}, {"epoch": -1}):
        with pytest.raises(ValueError):
            WatermarkConfig.model_validate(bad)
    with pytest.raises(ValueError, match="scheme"):
        WatermarkHook(WatermarkConfig(mode="upstream", scheme="nope"))
    # lexical mode needs the secret in the gateway: a missing one fails at construction, not per request
    monkeypatch.delenv("DISTILLGUARD_WATERMARK_SECRET", raising=False)
    with pytest.raises(ValueError, match="secret"):
        WatermarkHook(WatermarkConfig(mode="lexical"))
    cfg = GatewayConfig.model_validate({"watermark": {"mode": "upstream", "rotation_days": 30}})
    assert cfg.watermark.mode == "upstream" and cfg.watermark.rotation_days == 30
