"""The audit's pydantic-free serializer writes exactly the bytes the Exchange model would, or steps aside."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.exchange import validate
from distillguard.gateway.audit import final_line
from distillguard.gateway.records import ResponseAccumulator, fast_line, request_record
from distillguard.ingest.native import dump_line


def _slow(rec: dict[str, Any]) -> bytes | None:
    try:
        return dump_line(validate(rec))
    except Exception:
        return None


def _gateway_record(body: dict[str, Any], endpoint: str = "/v1/chat/completions") -> dict[str, Any]:
    rec: dict[str, Any] = {
        "exchange_id": "req_0123",
        "ts": datetime.now(UTC),
        "account_id": "acct_1",
        "endpoint": endpoint,
        "model": "unknown",
        "client_ip": "127.0.0.1",
        "user_agent": "bench/1",
        "attributes": {"tier": "verified", "geo.as_org": "Loopback"},
    }
    rec.update(request_record(endpoint, body))
    acc = ResponseAccumulator(endpoint)
    acc.feed_json(
        {
            "choices": [{"index": 0, "message": {"content": "hi there"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        }
    )
    rec.update(acc.fields())
    rec["status"] = 200
    rec["latency_ms"] = 1.2345
    return rec


def test_gateway_records_take_the_fast_path_and_match() -> None:
    bodies = [
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]},
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}]},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "t", "type": "function"}]},
                {"role": "tool", "content": "42", "tool_call_id": "t"},
            ],
            "temperature": 0.7,
            "top_p": 0.9,
            "n": 2,
            "max_tokens": 64,
            "logprobs": True,
            "top_logprobs": 3,
            "tools": [{}, {}],
            "user": "end-user-7",
            "reasoning_effort": "high",
        },
    ]
    for body in bodies:
        rec = _gateway_record(body)
        line = fast_line(rec)
        assert line is not None, body
        assert line == _slow(rec)
    emb = _gateway_record({"model": "text-embedding-3-small", "input": ["a", "b"]}, "/v1/embeddings")
    assert fast_line(emb) == _slow(emb) is not None


def test_records_it_is_not_sure_of_go_to_pydantic() -> None:
    base = _gateway_record({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    odd = [
        {"temperature": 1},  # an int where the model holds a float: pydantic converts it
        {"temperature": 1e-9},  # printed differently by orjson and serde_json
        {"n": True},
        {"status": 700},
        {"asn": -1},
        {"country": "usa"},
        {"client_ip": "not-an-ip"},
        {"messages": [{"role": "user", "content": "x", "audio": {}}]},  # dropped by the TypedDict
        {"ts": datetime(2026, 1, 1)},  # naive: pydantic makes it UTC
        {"ts": datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))},
        {"attributes": {"k": 1}},
        {"unknown_field": "x"},
        {"account_id": ""},
        {"response_text": "\ud800"},  # a lone surrogate
    ]
    for extra in odd:
        rec = {**base, **extra}
        assert fast_line(rec) is None, extra
        # and the audit still writes a line for it (the pydantic path, invalid fields to attributes),
        # except for what the model cannot take at all (non-string attributes, a lone surrogate)
        if not extra.keys() & {"response_text", "attributes", "account_id"}:
            assert final_line(rec) == _slow(rec) or b"invalid." in final_line(rec)


_text = st.text(max_size=12)
_opt_text = st.none() | _text
_num = st.none() | st.integers(-5, 2000) | st.floats(allow_nan=True, allow_infinity=True) | st.booleans()
_field = st.sampled_from(
    [
        "org_id",
        "api_key_id",
        "end_user",
        "user_agent",
        "system_prompt",
        "reasoning_effort",
        "tool_set",
        "response_text",
    ]
)


@settings(max_examples=500, deadline=None)
@given(
    strs=st.dictionaries(_field, _opt_text | st.integers()),
    nums=st.dictionaries(
        st.sampled_from(
            [
                "asn",
                "n",
                "temperature",
                "top_p",
                "max_tokens",
                "top_logprobs",
                "n_tools",
                "latency_ms",
                "status",
            ]
        ),
        _num,
    ),
    logprobs=st.none() | st.booleans() | st.integers(0, 2),
    ip=st.none() | st.sampled_from(["127.0.0.1", "::1", "2001:DB8::1", " 10.0.0.1", "x", ""]),
    country=st.none() | st.sampled_from(["XL", "gb", "U1", "USA", ""]),
    attrs=st.dictionaries(_text, _text | st.integers(), max_size=3),
    msgs=st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant"])},
            optional={"content": _opt_text | st.lists(_text, max_size=2), "name": _text | st.integers()},
        ),
        max_size=3,
    ),
)
def test_fast_line_never_disagrees_with_pydantic(
    strs: dict[str, Any],
    nums: dict[str, Any],
    logprobs: Any,
    ip: Any,
    country: Any,
    attrs: dict[str, Any],
    msgs: list[Any],
) -> None:
    rec: dict[str, Any] = {
        "exchange_id": "req_1",
        "ts": datetime(2026, 11, 29, 6, 0, 0, 1234, tzinfo=UTC),
        "account_id": "a",
        "model": "m",
        "messages": msgs,
        "attributes": attrs,
        **strs,
        **nums,
    }
    for k, v in (("logprobs", logprobs), ("client_ip", ip), ("country", country)):
        if v is not None:
            rec[k] = v
    fast = fast_line(rec)
    if fast is not None:
        assert fast == _slow(rec)


def test_message_keys_in_any_order_come_out_as_pydantic_orders_them() -> None:
    rec = _gateway_record({"model": "m", "messages": [{"content": "x", "name": "n", "role": "user"}]})
    assert rec["messages"][0] == {"content": "x", "name": "n", "role": "user"}
    line = fast_line(rec)
    assert line is not None and line == _slow(rec)
    assert b'[{"role":"user","content":"x","name":"n"}]' in line
