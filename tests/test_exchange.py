import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from distillguard.exchange import (
    ARROW_SCHEMA,
    Exchange,
    from_row,
    json_schema,
    rows_to_batch,
    to_row,
    tool_set_key,
    validate,
)

BASE = {"exchange_id": "e1", "ts": "2026-11-01T12:00:00", "account_id": "a1", "model": "m"}


def test_naive_timestamps_are_utc_and_fields_are_checked() -> None:
    ex = validate({**BASE, "client_ip": " 2001:db8::1 ", "country": "de"})
    assert ex.ts.utcoffset() is not None and ex.ts.hour == 12
    assert ex.client_ip == "2001:db8::1" and ex.country == "DE"
    with pytest.raises(ValidationError, match="client_ip"):
        validate({**BASE, "client_ip": "300.1.1.1"})
    with pytest.raises(ValidationError, match="temperature"):
        validate({**BASE, "temperature": "hot"})
    with pytest.raises(ValidationError, match="account_id"):
        validate({k: v for k, v in BASE.items() if k != "account_id"})


def test_row_round_trip_and_derived_columns() -> None:
    ex = validate(
        {
            **BASE,
            "messages": [
                {"role": "user", "content": "Name three rivers in France"},
                {"role": "assistant", "content": "The Seine, the Loire and the Rhone."},
                {"role": "user", "content": [{"type": "text", "text": "Which is longest: Seine or Loire?"}]},
            ],
            "attributes": {"k": "v"},
        }
    )
    row = to_row(ex)
    assert row["prompt"] == "Which is longest: Seine or Loire?"
    assert row["user_turns"] == 2
    assert row["history_overlap"] == pytest.approx(2 / 4)  # "seine", "loire" of 4 words longer than 3
    batch = rows_to_batch([row])
    assert batch.schema == ARROW_SCHEMA
    back = from_row(batch.to_pylist()[0])
    assert back == ex


def test_json_schema_in_docs_is_current() -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "exchange.schema.json"
    assert json.loads(doc.read_text()) == json.loads(json.dumps(json_schema())), (
        "docs/exchange.schema.json is stale: run `make schema`"
    )
    assert set(json_schema()["properties"]) == set(Exchange.model_fields)


def test_tool_set_key_names_the_set_not_its_order_or_text() -> None:
    """OpenAI tools (`function.name`), legacy functions and Anthropic / OpenTelemetry definitions (`name`)
    give one key per set of names, whatever the order, descriptions or parameters."""
    openai = [
        {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "fetch", "description": "GET a URL"}},
    ]
    anthropic = [{"name": "fetch", "input_schema": {}}, {"name": "search", "description": "web"}]
    k = tool_set_key(openai)
    assert k is not None and len(k) == 16
    assert tool_set_key(anthropic) == k == tool_set_key(list(reversed(openai)))
    assert tool_set_key([{"name": "fetch"}]) != k
    assert tool_set_key([]) is None and tool_set_key([{"type": "web_search"}]) is None
    assert tool_set_key("search") is None
