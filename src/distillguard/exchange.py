"""The one canonical record: `Exchange`, one call to an LLM API.

Adapters produce it, the gateway's audit log writes it, everything downstream reads it. Its columnar
form (`ARROW_SCHEMA`) is what the store keeps; the columns are the model's fields in the same order,
plus a few derived columns (`DERIVED_FIELDS`) that ingest computes once so that every engine can
aggregate them with plain SQL.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from datetime import UTC, datetime
from typing import Any, Required

import orjson
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from typing_extensions import TypedDict

SCHEMA_VERSION = "1"


class Message(TypedDict, total=False):
    """One chat message, as OpenAI-compatible APIs send it (system messages live in `system_prompt`)."""

    role: Required[str]
    content: str | list[Any] | None
    name: str
    tool_calls: list[Any]
    tool_call_id: str


class Exchange(BaseModel):
    """One API call: who made it, from where, what was asked, what came back, and when."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False, frozen=False)

    # identity
    exchange_id: str = Field(min_length=1, description="Unique id of this call (request id).")
    ts: datetime = Field(description="When the request arrived (UTC).")
    account_id: str = Field(min_length=1, description="The provider's customer account.")
    org_id: str | None = Field(None, description="Organisation the account belongs to.")
    api_key_id: str | None = Field(None, description="Id (never the secret) of the API key used.")
    end_user: str | None = Field(None, description="End-user id the customer passed (OpenAI `user`).")
    # network
    client_ip: str | None = Field(None, description="Client IP address (v4 or v6).")
    asn: int | None = Field(None, ge=0, description="Autonomous system number of the client IP.")
    country: str | None = Field(None, description="ISO 3166-1 alpha-2 country of the client IP.")
    user_agent: str | None = None
    payment_fp: str | None = Field(None, description="Payment-instrument fingerprint, when known.")
    device_fp: str | None = Field(None, description="Device or TLS fingerprint, when known.")
    # request
    endpoint: str = Field("/v1/chat/completions", description="API path called.")
    model: str = Field(min_length=1)
    system_prompt: str | None = None
    messages: list[Message] = Field(default_factory=list, description="Request messages, system excluded.")
    n: int = Field(1, ge=1, le=1024, description="Completions requested per prompt.")
    temperature: float | None = Field(None, ge=0.0, le=10.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=0)
    reasoning_effort: str | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0)
    tool_set: str | None = Field(
        None,
        description="Which tools were offered: a hash of their sorted names (`tool_set_key`), not their text.",
    )
    n_tools: int = Field(0, ge=0, description="Number of tools offered to the model.")
    # response
    response_text: str | None = None
    reasoning_text: str | None = None
    reasoning_tokens: int | None = Field(None, ge=0)
    finish_reason: str | None = None
    prompt_tokens: int | None = Field(None, ge=0)
    completion_tokens: int | None = Field(None, ge=0)
    # timing and status
    latency_ms: float | None = Field(None, ge=0.0)
    status: int = Field(200, ge=100, le=599, description="HTTP status returned to the client.")
    error: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict, description="Anything else the source had.")

    @field_validator("ts")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        # Logs without an offset are taken as UTC, the convention of every source we read.
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    @field_validator("client_ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        return _normalise_ip(v)

    @field_validator("country")
    @classmethod
    def _country(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if len(v) != 2 or not v.isalpha():
            raise ValueError("country must be an ISO 3166-1 alpha-2 code")
        return v.upper()

    # -- derived views --------------------------------------------------------------------------
    def prompt(self) -> str:
        """Text of the last user message: what this call asked."""
        for m in reversed(self.messages):
            if m.get("role") == "user":
                return message_text(m)
        return ""


@functools.lru_cache(maxsize=1 << 16)
def _normalise_ip(v: str) -> str:
    # Cached: logs repeat the same addresses, and parsing is the costliest check of a record.
    return str(ipaddress.ip_address(v.strip()))


def tool_set_key(tools: Any) -> str | None:
    """The key of a set of offered tools, from a request's tool list (OpenAI `tools` / `functions`,
    Anthropic or OpenTelemetry definitions: each a dict with a `name`, or a `function` holding one): a short
    hash of the sorted distinct names. An application offers its own set again and again; a synthetic
    tool-use harvest offers a new set with each task, whatever its size. None when no tool has a name."""
    if not isinstance(tools, list):
        return None
    names = set()
    for t in tools:
        if isinstance(t, dict):
            fn = t.get("function")
            name = fn.get("name") if isinstance(fn, dict) else t.get("name")
            if isinstance(name, str) and name:
                names.add(name)
    if not names:
        return None
    return hashlib.blake2b("\n".join(sorted(names)).encode(), digest_size=8).hexdigest()


def message_text(m: Message | dict[str, Any]) -> str:
    """Plain text of a message whose content may be a string or a list of typed parts."""
    c = m.get("content")
    if c is None:
        return ""
    if isinstance(c, str):
        return c
    parts = []
    for p in c:
        if isinstance(p, dict):
            t = p.get("text")
            if isinstance(t, str):
                parts.append(t)
        elif isinstance(p, str):
            parts.append(p)
    return "\n".join(parts)


# Columns computed at ingest from the record itself (one pass, so engines only aggregate).
DERIVED_FIELDS: dict[str, pa.DataType] = {
    "prompt": pa.large_string(),  # last user message
    "user_turns": pa.int32(),  # user messages in the request (1 = single-turn)
    "history_overlap": pa.float32(),  # share of the prompt's words found in the previous answer
}

_ARROW_TYPES: dict[str, pa.DataType] = {
    "exchange_id": pa.string(),
    "ts": pa.timestamp("us", tz="UTC"),
    "account_id": pa.string(),
    "org_id": pa.string(),
    "api_key_id": pa.string(),
    "end_user": pa.string(),
    "client_ip": pa.string(),
    "asn": pa.int64(),
    "country": pa.string(),
    "user_agent": pa.string(),
    "payment_fp": pa.string(),
    "device_fp": pa.string(),
    "endpoint": pa.string(),
    "model": pa.string(),
    "system_prompt": pa.large_string(),
    "messages": pa.large_string(),  # JSON array: nested data stays portable across engines
    "n": pa.int32(),
    "temperature": pa.float32(),
    "top_p": pa.float32(),
    "max_tokens": pa.int64(),
    "reasoning_effort": pa.string(),
    "logprobs": pa.bool_(),
    "top_logprobs": pa.int32(),
    "tool_set": pa.string(),
    "n_tools": pa.int32(),
    "response_text": pa.large_string(),
    "reasoning_text": pa.large_string(),
    "reasoning_tokens": pa.int64(),
    "finish_reason": pa.string(),
    "prompt_tokens": pa.int64(),
    "completion_tokens": pa.int64(),
    "latency_ms": pa.float64(),
    "status": pa.int32(),
    "error": pa.string(),
    "attributes": pa.string(),  # JSON object
}
assert list(_ARROW_TYPES) == list(Exchange.model_fields), "Arrow schema out of step with Exchange"

ARROW_SCHEMA = pa.schema(
    [pa.field(k, t) for k, t in _ARROW_TYPES.items()] + [pa.field(k, t) for k, t in DERIVED_FIELDS.items()]
)

_validator = Exchange.__pydantic_validator__


def validate(data: dict[str, Any]) -> Exchange:
    """Validate a mapping into an Exchange (raises pydantic.ValidationError naming the field)."""
    return _validator.validate_python(data)


_WORD = re.compile(r"\w{4,}")


def _words(s: str) -> set[str]:
    """Content-ish words (4+ word characters), lower-cased, punctuation dropped."""
    return set(_WORD.findall(s.lower()))


_FIELDS = list(Exchange.model_fields)
_MSG_I = _FIELDS.index("messages")
_ATTR_I = _FIELDS.index("attributes")


def to_values(ex: Exchange) -> list[Any]:
    """The record as one row of `ARROW_SCHEMA`, as a list of values in schema order (the fast path)."""
    # A validated model's __dict__ holds every field, in declaration order.
    vals = list(ex.__dict__.values())
    msgs = ex.messages
    vals[_MSG_I] = orjson.dumps(msgs).decode()
    vals[_ATTR_I] = orjson.dumps(ex.attributes).decode() if ex.attributes else None
    prompt = ""
    user_turns = 0
    prev_answer = ""
    last_user = -1
    for i, m in enumerate(msgs):
        if m.get("role") == "user":
            user_turns += 1
            last_user = i
    if last_user >= 0:
        prompt = message_text(msgs[last_user])
        for m in reversed(msgs[:last_user]):
            if m.get("role") == "assistant":
                prev_answer = message_text(m)
                break
    # Does this follow-up lean on the answer before it? A closed-loop conversation reuses its words.
    overlap = _overlap(prompt, prev_answer) if prev_answer else None
    vals += (prompt, user_turns, overlap)
    return vals


_FEW_WORDS = 32  # up to this many prompt words, find each in the answer instead of tokenising the answer


def _is_word_char(c: str) -> bool:
    # What `\w` matches in a str pattern (sre: alphanumeric in Unicode, or "_").
    return c.isalnum() or c == "_"


def _overlap(prompt: str, answer: str) -> float:
    """Share of the prompt's words (`_words`, first 4000 characters) found in the answer's first 8000.

    The same value as `len(_words(p) & _words(a)) / len(_words(p))`, computed faster: a follow-up has a
    handful of words, and a few C-speed substring searches with a word-boundary check cost much less
    than tokenising a long answer with a regular expression (the costliest step of ingest otherwise).
    """
    pw = _words(prompt[:4000])
    if not pw:
        return 0.0
    a = answer[:8000].lower()
    if len(pw) > _FEW_WORDS:
        return len(pw.intersection(_WORD.findall(a))) / len(pw)
    hits = 0
    n = len(a)
    for w in pw:
        i = a.find(w)
        while i >= 0:
            j = i + len(w)
            # a whole token: no word character on either side (w itself is all word characters)
            if (i == 0 or not _is_word_char(a[i - 1])) and (j == n or not _is_word_char(a[j])):
                hits += 1
                break
            # Any later match starting before j starts inside this run of word characters: skip it.
            i = a.find(w, j)
    return hits / len(pw)


def to_row(ex: Exchange) -> dict[str, Any]:
    """The record as one row of `ARROW_SCHEMA`, keyed by column name."""
    return dict(zip(ARROW_SCHEMA.names, to_values(ex), strict=True))


def values_to_batch(rows: list[list[Any]]) -> pa.RecordBatch:
    """Rows from `to_values` into one Arrow record batch (transposed in C, not per cell in Python)."""
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in ARROW_SCHEMA.names]
    return pa.RecordBatch.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(cols, ARROW_SCHEMA, strict=True)], schema=ARROW_SCHEMA
    )


def rows_to_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """Rows from `to_row` into one Arrow record batch."""
    names = ARROW_SCHEMA.names
    return values_to_batch([[r.get(k) for k in names] for r in rows])


def from_row(row: dict[str, Any]) -> Exchange:
    """Inverse of `to_row` for a row read back from the store."""
    d = {k: row[k] for k in Exchange.model_fields if k in row}
    if isinstance(d.get("messages"), str):
        d["messages"] = orjson.loads(d["messages"])
    if isinstance(d.get("attributes"), str):
        d["attributes"] = orjson.loads(d["attributes"])
    elif d.get("attributes") is None:
        d["attributes"] = {}
    return validate(d)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the Exchange record (written to docs/exchange.schema.json)."""
    s = Exchange.model_json_schema()
    s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    s["$id"] = f"https://distillguard.dev/schema/exchange/v{SCHEMA_VERSION}.json"
    return s


def now_utc() -> datetime:
    return datetime.now(UTC)
