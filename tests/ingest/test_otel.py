"""OpenTelemetry GenAI spans (OTLP JSON): reading the fixture, the writer's round trip, bad spans."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from distillguard.exchange import Exchange, tool_set_key
from distillguard.ingest import IngestStats, Quarantine, read_exchanges
from distillguard.ingest.otel import OtelGenAI, decode_any_value, encode_any_value, to_otlp_line

FIXTURE = Path(__file__).parent.parent / "fixtures" / "ingest" / "otel_genai.jsonl"


def read_all(path: Path, tmp_path: Path) -> tuple[list[tuple[int, Exchange]], list[dict[str, Any]]]:
    qpath = tmp_path / "q.jsonl"
    qpath.unlink(missing_ok=True)
    with Quarantine(qpath) as q:
        good = list(read_exchanges(path, OtelGenAI(), q, IngestStats()))
    bad = [orjson.loads(x) for x in qpath.read_bytes().splitlines()] if qpath.exists() else []
    return good, bad


def test_fixture_spans_map_to_exchanges(tmp_path: Path) -> None:
    good, bad = read_all(FIXTURE, tmp_path)
    assert bad == []
    # line 1: a chat span and an HTTP span (skipped); line 2: two chat spans; line 3: embeddings + a tool span
    assert [line for line, _ in good] == [1, 2, 2, 3]
    a, c, d, e = (ex for _, ex in good)

    assert a.exchange_id == "chatcmpl-AaB1"
    assert a.ts == datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert a.latency_ms == 1500.0
    assert a.account_id == "acct_123"
    assert a.org_id == "org_acme"  # from the resource
    assert a.client_ip == "203.0.113.7"
    assert a.user_agent == "OpenAI/Python 1.54.0"
    assert a.endpoint == "/v1/chat/completions"
    assert a.model == "gpt-4o"
    assert (a.temperature, a.top_p, a.max_tokens) == (0.2, 0.9, 512)
    assert a.system_prompt == "You are a concise assistant."
    assert a.messages == [{"role": "user", "content": "Explain TCP slow start in two sentences."}]
    assert a.response_text is not None and a.response_text.startswith("TCP slow start grows")
    assert a.finish_reason == "stop"
    assert (a.prompt_tokens, a.completion_tokens) == (31, 18)
    assert a.status == 200 and a.error is None
    assert a.attributes == {
        "trace_id": "5b8efff798038103d269b633813fc60c",
        "span_id": "eee19b7ec3c1b174",
        "service_name": "support-bot",
        "response_model": "gpt-4o-2024-08-06",
        "seed": "42",
        "conversation_id": "conv_9",
        "server_address": "api.openai.com",
        "provider": "openai",
    }

    # structured (kvlist) content, old usage names, account on the resource, no response id
    assert c.exchange_id == "0af7651916cd43dd8448eb211c80319c:b7ad6b7169203331"
    assert c.account_id == "acct_456"
    assert c.end_user == "customer-42"
    assert c.api_key_id == "key_77"
    assert c.model == "o3-mini"
    assert c.messages == [
        {"role": "user", "content": "What's the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_VSPygqKT",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "rainy, 57°F", "tool_call_id": "call_VSPygqKT"},
        {"role": "user", "content": "Should I take an umbrella?"},
    ]
    assert c.prompt() == "Should I take an umbrella?"
    assert c.response_text == "Yes, take an umbrella: it is raining in Paris."
    assert c.reasoning_text == "Rain is reported, so yes."
    assert c.finish_reason == "stop"  # from the output message: no finish_reasons attribute
    assert (c.prompt_tokens, c.completion_tokens) == (120, 300)
    assert c.n_tools == 1
    assert c.tool_set == tool_set_key([{"name": "get_weather"}])
    assert c.latency_ms == 4250.0
    assert c.attributes["provider"] == "openai"  # from the older gen_ai.system

    assert d.status == 429 and d.error == "RateLimitError"
    assert d.model == "gpt-4o-mini" and d.latency_ms == 80.0

    assert e.endpoint == "/v1/embeddings"
    assert e.model == "text-embedding-3-small"
    assert e.prompt_tokens == 8 and e.messages == []


def _exchanges() -> list[Exchange]:
    ts = datetime(2025, 3, 1, 8, 30, 15, 250001, tzinfo=UTC)
    full = Exchange(
        exchange_id="chatcmpl-xyz",
        ts=ts,
        account_id="acct_1",
        org_id="org_1",
        api_key_id="key_1",
        end_user="user-99",
        client_ip="2001:db8::1",
        asn=64500,
        country="DE",
        user_agent="curl/8.5",
        payment_fp="pm_fp_1",
        device_fp="ja3_abc",
        model="gpt-4o",
        system_prompt="Be terse.",
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "wx", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "content": "rainy", "tool_call_id": "c1"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Part one."}, {"type": "text", "text": "Two."}],
            },
            {"role": "user", "name": "bob", "content": "And tomorrow?"},
        ],
        n=3,
        temperature=1.3,
        top_p=0.95,
        max_tokens=1000,
        reasoning_effort="medium",
        logprobs=True,
        top_logprobs=5,
        tool_set=tool_set_key([{"name": "forecast"}, {"name": "geocode"}]),
        n_tools=2,
        response_text="Rain again.",
        reasoning_text="Checked the forecast.",
        reasoning_tokens=64,
        finish_reason="length",
        prompt_tokens=40,
        completion_tokens=1000,
        latency_ms=812.5,
        attributes={"seed": "7", "campaign": "c-1", "conversation_id": "conv-1", "provider": "openai"},
    )
    minimal = Exchange(exchange_id="e-2", ts=ts, account_id="acct_2", model="m")
    failed = Exchange(
        exchange_id="e-3",
        ts=ts,
        account_id="acct_2",
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        status=503,
        error="ServiceUnavailable",
        latency_ms=0.0,
    )
    odd_endpoint = Exchange(
        exchange_id="e-4",
        ts=ts,
        account_id="acct_3",
        endpoint="/v1/responses",
        model="o3",
        response_text="",
        attributes={"response_model": "o3-2025-04-16"},
    )
    embed = Exchange(
        exchange_id="e-5", ts=ts, account_id="acct_3", endpoint="/v1/embeddings", model="emb", prompt_tokens=3
    )
    return [full, minimal, failed, odd_endpoint, embed]


@pytest.mark.parametrize("structured", [False, True])
def test_writer_round_trips(tmp_path: Path, structured: bool) -> None:
    originals = _exchanges()
    path = tmp_path / "spans.jsonl"
    path.write_bytes(to_otlp_line(originals, service_name="sim", structured=structured))
    good, bad = read_all(path, tmp_path)
    assert bad == []
    assert [line for line, _ in good] == [1] * len(originals)
    back = [ex for _, ex in good]
    for orig, got in zip(originals, back, strict=True):
        extra = {k: got.attributes[k] for k in ("trace_id", "span_id", "service_name")}
        assert extra["service_name"] == "sim"
        assert len(extra["trace_id"]) == 32 and len(extra["span_id"]) == 16
        expected = orig.model_copy(update={"attributes": {**orig.attributes, **extra}})
        assert got.model_dump() == expected.model_dump()
    # writing what was read gives the same line again: ids and service come back from the attributes
    again = tmp_path / "again.jsonl"
    again.write_bytes(to_otlp_line(back, service_name="sim", structured=structured))
    assert [ex for _, ex in read_all(again, tmp_path)[0]] == back


def test_json_string_and_structured_content_read_the_same(tmp_path: Path) -> None:
    exs = _exchanges()
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(to_otlp_line(exs, structured=False))
    b.write_bytes(to_otlp_line(exs, structured=True))
    assert b'"gen_ai.input.messages","value":{"stringValue":"[' in a.read_bytes()
    assert b'"gen_ai.input.messages","value":{"arrayValue"' in b.read_bytes()
    assert read_all(a, tmp_path)[0] == read_all(b, tmp_path)[0]


def test_any_value_codec() -> None:
    v = {"a": [1, 2.5, True, "x", {"b": None}], "c": -3}
    assert decode_any_value(encode_any_value(v)) == v
    assert decode_any_value({"intValue": "9007199254740993"}) == 9007199254740993
    assert decode_any_value({"intValue": 12}) == 12
    assert decode_any_value({"doubleValue": "NaN"}) != decode_any_value({"doubleValue": "NaN"})  # nan
    assert decode_any_value({"arrayValue": {}}) == []
    assert decode_any_value({}) is None


def test_older_indexed_content_attributes(tmp_path: Path) -> None:
    span = {
        "traceId": "ab" * 16,
        "spanId": "cd" * 8,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000500000000",
        "attributes": [
            {"key": "gen_ai.system", "value": {"stringValue": "openai"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-3.5-turbo"}},
            {"key": "enduser.id", "value": {"stringValue": "acct_legacy"}},
            {"key": "gen_ai.prompt.0.role", "value": {"stringValue": "system"}},
            {"key": "gen_ai.prompt.0.content", "value": {"stringValue": "You are terse."}},
            {"key": "gen_ai.prompt.1.role", "value": {"stringValue": "user"}},
            {"key": "gen_ai.prompt.1.content", "value": {"stringValue": "2+2?"}},
            {"key": "gen_ai.completion.0.role", "value": {"stringValue": "assistant"}},
            {"key": "gen_ai.completion.0.content", "value": {"stringValue": "4"}},
            {"key": "gen_ai.response.finish_reasons", "value": {"stringValue": "stop"}},
        ],
    }
    path = tmp_path / "legacy.jsonl"
    path.write_bytes(orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}) + b"\n")
    [(_, ex)], bad = read_all(path, tmp_path)
    assert bad == []
    assert ex.account_id == "acct_legacy" and ex.end_user is None
    assert ex.system_prompt == "You are terse."
    assert ex.messages == [{"role": "user", "content": "2+2?"}]
    assert ex.response_text == "4" and ex.finish_reason == "stop"
    assert ex.latency_ms == 500.0


def test_non_trace_lines_and_non_genai_spans_yield_nothing(tmp_path: Path) -> None:
    http_only = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "ab" * 16,
                                "spanId": "cd" * 8,
                                "startTimeUnixNano": "1",
                                "attributes": [
                                    {"key": "http.request.method", "value": {"stringValue": "GET"}}
                                ],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    path = tmp_path / "other.jsonl"
    path.write_bytes(orjson.dumps(http_only) + b"\n" + orjson.dumps({"resourceLogs": []}) + b"\n")
    assert read_all(path, tmp_path) == ([], [])


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_compressed_fixture_reads_identically(tmp_path: Path, codec: str) -> None:
    raw = FIXTURE.read_bytes()
    path = tmp_path / f"otel.jsonl.{codec}"
    path.write_bytes(gzip.compress(raw) if codec == "gzip" else zstandard.ZstdCompressor().compress(raw))
    assert read_all(path, tmp_path)[0] == read_all(FIXTURE, tmp_path)[0]


def _span_line(ex: Exchange, edit: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> bytes:
    """One OTLP line for `ex`, with span attributes replaced (edit) or removed (drop)."""
    req = orjson.loads(to_otlp_line([ex]))
    span = req["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    attrs = [kv for kv in span["attributes"] if kv["key"] not in drop and kv["key"] not in (edit or {})]
    attrs += [{"key": k, "value": v} for k, v in (edit or {}).items()]
    span["attributes"] = attrs
    return orjson.dumps(req) + b"\n"


def test_bad_spans_are_quarantined_with_their_lines(tmp_path: Path) -> None:
    ts = datetime(2025, 1, 1, tzinfo=UTC)

    def ex(i: int, prompt: str = "hello") -> Exchange:
        return Exchange(
            exchange_id=f"e-{i}",
            ts=ts,
            account_id="acct",
            model="gpt-4o",
            messages=[{"role": "user", "content": prompt}],
        )

    big = "lorem " * (10 * 1024 * 1024 // 6)  # a 10 MB prompt is a good row
    lines = [
        _span_line(ex(1)),
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [\n',  # 2: corrupt JSON
        _span_line(ex(3)),
        _span_line(ex(4)).replace(b"hello", b"hel\xfflo"),  # 4: not UTF-8
        _span_line(ex(5), edit={"gen_ai.request.temperature": {"stringValue": "hot"}}),  # 5: wrong type
        _span_line(ex(6), drop=("gen_ai.request.model",)),  # 6: no model
        _span_line(ex(7), drop=("user.id",)),  # 7: no account
        _span_line(ex(8, big)),
        _span_line(ex(9), edit={"gen_ai.input.messages": {"stringValue": "[{not json"}}),  # 9: bad content
        b"\n",  # blank lines are not rows
        _span_line(ex(11)),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(lines))
    good, bad = read_all(path, tmp_path)
    assert [line for line, _ in good] == [1, 3, 8, 11]
    assert [e.exchange_id for _, e in good] == ["e-1", "e-3", "e-8", "e-11"]
    assert good[2][1].prompt() == big
    assert [b["line"] for b in bad] == [2, 4, 5, 6, 7, 9]
    reasons = [b["reason"] for b in bad]
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1] == "not valid UTF-8"
    assert reasons[2].startswith("temperature:")
    assert "gen_ai.request.model" in reasons[3]
    assert "user.id" in reasons[4]
    assert "gen_ai.input.messages" in reasons[5]
    assert all(b["file"] == str(path) for b in bad)


def _event_span(events: list[dict[str, Any]], extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "traceId": "ef" * 16,
        "spanId": "01" * 8,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000001000000000",
        "attributes": [
            _attr("gen_ai.operation.name", "chat"),
            _attr("gen_ai.request.model", "gpt-4o"),
            _attr("user.id", "acct_events"),
            *(extra or []),
        ],
        "events": events,
    }


def _attr(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def test_content_on_span_events_is_read(tmp_path: Path) -> None:
    """Instrumentations that put content on span events: the older conventions' gen_ai.content.prompt /
    .completion events (JSON strings of OpenAI-shaped messages), and the newer operation-details event.
    The span's own content attributes win over its events'."""
    old = _event_span(
        [
            {
                "name": "gen_ai.content.prompt",
                "timeUnixNano": "1700000000000000000",
                "attributes": [
                    _attr(
                        "gen_ai.prompt",
                        orjson.dumps(
                            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
                        ).decode(),
                    )
                ],
            },
            {
                "name": "gen_ai.content.completion",
                "attributes": [_attr("gen_ai.completion", '[{"role": "assistant", "content": "4"}]')],
            },
        ]
    )
    details = _event_span(
        [
            {"name": "exception", "attributes": [_attr("exception.message", "retry")]},
            {
                "name": "gen_ai.client.inference.operation.details",
                "attributes": [
                    _attr("gen_ai.system_instructions", '[{"type": "text", "content": "Be brief."}]'),
                    _attr(
                        "gen_ai.input.messages",
                        '[{"role": "user", "parts": [{"type": "text", "content": "2+2?"}]}]',
                    ),
                    _attr(
                        "gen_ai.output.messages",
                        '[{"role": "assistant", "parts": [{"type": "text", "content": "4"}], "finish_reason": "stop"}]',
                    ),
                ],
            },
        ]
    )
    own = _event_span(
        [{"name": "gen_ai.content.prompt", "attributes": [_attr("gen_ai.prompt", "from the event")]}],
        extra=[_attr("gen_ai.input.messages", "from the span")],
    )
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b"".join(
            orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [s]}]}]}) + b"\n"
            for s in (old, details, own)
        )
    )
    good, bad = read_all(path, tmp_path)
    assert bad == []
    (_, a), (_, b), (_, c) = good
    for ex in (a, b):
        assert ex.system_prompt == "Be brief."
        assert ex.messages == [{"role": "user", "content": "2+2?"}]
        assert ex.response_text == "4"
    assert b.finish_reason == "stop"
    assert c.messages == [{"role": "user", "content": "from the span"}] and c.response_text is None


def test_bad_span_events_are_quarantined_with_the_event_named(tmp_path: Path) -> None:
    spans = [
        _event_span("not a list"),  # type: ignore[arg-type]
        _event_span([{"name": "gen_ai.content.prompt", "attributes": {"gen_ai.prompt": "x"}}]),
        _event_span(
            [{"name": "gen_ai.content.completion", "attributes": [_attr("gen_ai.completion", "[{oops")]}]
        ),
    ]
    path = tmp_path / "bad_events.jsonl"
    path.write_bytes(
        b"".join(orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [s]}]}]}) + b"\n" for s in spans)
    )
    good, bad = read_all(path, tmp_path)
    assert good == []
    assert [b["line"] for b in bad] == [1, 2, 3]
    assert "events: expected a list" in bad[0]["reason"]
    assert "events[0] (gen_ai.content.prompt).attributes" in bad[1]["reason"]
    assert (
        "events[0] (gen_ai.content.completion).gen_ai.completion: a string that starts like JSON"
        in bad[2]["reason"]
    )


def test_events_of_spans_that_are_not_model_calls_are_not_read(tmp_path: Path) -> None:
    """An agent's tool span is skipped whatever its events hold: they are not read, so not quarantined."""
    tool = _event_span("not a list", extra=[_attr("gen_ai.operation.name", "execute_tool")])  # type: ignore[arg-type]
    tool["attributes"] = [a for a in tool["attributes"] if a["value"] != {"stringValue": "chat"}]
    path = tmp_path / "tool.jsonl"
    path.write_bytes(orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [tool]}]}]}) + b"\n")
    assert read_all(path, tmp_path) == ([], [])
