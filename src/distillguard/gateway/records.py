"""Exchange records from OpenAI-shaped requests and responses (JSON bodies and SSE streams).

`request_record` maps a request body onto the `Exchange` fields (system prompt split from the messages,
sampling parameters); `ResponseAccumulator` folds a JSON response or a stream's events into the response
fields (text of the first choice, reasoning, finish reason, usage). Values the `Exchange` model would
reject are left to `audit.final_line`, which moves them into `attributes`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson

# the model's own (cached) normalisation, so both paths write the same address
from distillguard.exchange import _normalise_ip as normalise_ip
from distillguard.exchange import tool_set_key

_ZERO = timedelta(0)
_SYSTEM_ROLES = ("system", "developer")


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _text_of(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return None


def request_record(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """The request side of an Exchange (without identity, network and timing fields)."""
    rec: dict[str, Any] = {"endpoint": endpoint, "model": body.get("model") or "unknown"}
    system: list[str] = []
    messages: list[Any] = []
    if endpoint == "/v1/chat/completions":
        for m in body.get("messages") or []:
            if isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES:
                t = _text_of(m.get("content"))
                if t:
                    system.append(t)
            elif isinstance(m, dict):
                messages.append(m)
    elif endpoint in ("/v1/completions", "/v1/embeddings"):
        src = body.get("prompt" if endpoint == "/v1/completions" else "input")
        if isinstance(src, str):
            messages.append({"role": "user", "content": src})
        elif isinstance(src, list) and all(isinstance(s, str) for s in src):
            messages.append({"role": "user", "content": list(src)})
        elif src is not None:
            rec["attributes"] = {"input": "tokens"}  # token arrays: not text, not kept
    elif endpoint == "/v1/responses":
        if isinstance(body.get("instructions"), str):
            system.append(body["instructions"])
        src = body.get("input")
        if isinstance(src, str):
            messages.append({"role": "user", "content": src})
        elif isinstance(src, list):
            for item in src:
                if isinstance(item, dict) and isinstance(item.get("role"), str):
                    if item["role"] in _SYSTEM_ROLES:
                        t = _text_of(item.get("content"))
                        if t:
                            system.append(t)
                    else:
                        messages.append({"role": item["role"], "content": item.get("content")})
    rec["messages"] = messages
    if system:
        rec["system_prompt"] = "\n".join(system)
    if isinstance(body.get("n"), int):
        rec["n"] = body["n"]
    for k in ("temperature", "top_p"):
        v = _num(body.get(k))
        if v is not None:
            rec[k] = v
    mt = body.get("max_completion_tokens", body.get("max_tokens", body.get("max_output_tokens")))
    if isinstance(mt, int) and not isinstance(mt, bool):
        rec["max_tokens"] = mt
    effort = body.get("reasoning_effort")
    if effort is None and isinstance(body.get("reasoning"), dict):
        effort = body["reasoning"].get("effort")
    if isinstance(effort, str):
        rec["reasoning_effort"] = effort
    lp = body.get("logprobs")
    if lp is True or (isinstance(lp, int) and not isinstance(lp, bool) and lp > 0):
        rec["logprobs"] = True
    if isinstance(body.get("top_logprobs"), int):
        rec["top_logprobs"] = body["top_logprobs"]
    if isinstance(body.get("tools"), list):
        rec["n_tools"] = len(body["tools"])
        if (key := tool_set_key(body["tools"])) is not None:
            rec["tool_set"] = key
    if isinstance(body.get("user"), str):
        rec["end_user"] = body["user"]
    return rec


class ResponseAccumulator:
    """Response fields of an Exchange, from a JSON body (`feed_json`) or stream events (`feed_event`)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.reasoning_tokens: int | None = None
        self.choices = 0

    def _usage(self, u: Any) -> None:
        if not isinstance(u, dict):
            return
        pt = u.get("prompt_tokens", u.get("input_tokens"))
        ct = u.get("completion_tokens", u.get("output_tokens"))
        if isinstance(pt, int):
            self.prompt_tokens = pt
        if isinstance(ct, int):
            self.completion_tokens = ct
        det = u.get("completion_tokens_details") or u.get("output_tokens_details")
        if isinstance(det, dict) and isinstance(det.get("reasoning_tokens"), int):
            self.reasoning_tokens = det["reasoning_tokens"]

    def feed_json(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        self._usage(obj.get("usage"))
        if self.endpoint == "/v1/responses":
            self._responses_output(obj.get("output"))
            return
        choices = obj.get("choices")
        if not isinstance(choices, list):
            return
        self.choices = max(self.choices, len(choices))
        for ch in choices:
            if not isinstance(ch, dict) or ch.get("index", 0) != 0:
                continue  # the record keeps the first choice; n says how many there were
            msg = ch.get("message")
            if isinstance(msg, dict):
                t = _text_of(msg.get("content"))
                if t:
                    self.text.append(t)
                r = msg.get("reasoning_content", msg.get("reasoning"))
                if isinstance(r, str):
                    self.reasoning.append(r)
            elif isinstance(ch.get("text"), str):
                self.text.append(ch["text"])
            if ch.get("finish_reason"):
                self.finish_reason = ch["finish_reason"]

    def _responses_output(self, output: Any) -> None:
        if not isinstance(output, list):
            return
        for item in output:
            if not isinstance(item, dict):
                continue
            for part in item.get("content") or item.get("summary") or []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    (self.reasoning if item.get("type") == "reasoning" else self.text).append(part["text"])

    def feed_event(self, obj: Any) -> None:
        """One parsed `data:` event of a stream."""
        if not isinstance(obj, dict):
            return
        if self.endpoint == "/v1/responses":
            t = obj.get("type")
            if t == "response.output_text.delta" and isinstance(obj.get("delta"), str):
                self.text.append(obj["delta"])
            elif t in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
                if isinstance(obj.get("delta"), str):
                    self.reasoning.append(obj["delta"])
            elif t in ("response.completed", "response.incomplete") and isinstance(obj.get("response"), dict):
                r = obj["response"]
                self._usage(r.get("usage"))
                self.finish_reason = r.get("status")
            return
        self._usage(obj.get("usage"))
        for ch in obj.get("choices") or []:
            if not isinstance(ch, dict):
                continue
            self.choices = max(self.choices, int(ch.get("index", 0) or 0) + 1)
            if ch.get("index", 0) != 0:
                continue
            d = ch.get("delta")
            if isinstance(d, dict):
                if isinstance(d.get("content"), str):
                    self.text.append(d["content"])
                r = d.get("reasoning_content", d.get("reasoning"))
                if isinstance(r, str):
                    self.reasoning.append(r)
            elif isinstance(ch.get("text"), str):
                self.text.append(ch["text"])
            if ch.get("finish_reason"):
                self.finish_reason = ch["finish_reason"]

    def total_tokens(self) -> int | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.text:
            out["response_text"] = "".join(self.text)
        if self.reasoning:
            out["reasoning_text"] = "".join(self.reasoning)
        for k, v in (
            ("finish_reason", self.finish_reason),
            ("prompt_tokens", self.prompt_tokens),
            ("completion_tokens", self.completion_tokens),
            ("reasoning_tokens", self.reasoning_tokens),
        ):
            if v is not None:
                out[k] = v
        return out


# -- the audit line without pydantic ---------------------------------------------------------------------
#
# `audit.final_line` validates each record into an `Exchange` and dumps it (~40 us a record). The records
# the gateway builds are almost always valid as they are, so `fast_line` checks each field's type and
# constraint directly and dumps the dict with orjson, in the model's field order, defaults left out, as
# `Exchange.model_dump(mode="json", exclude_defaults=True)` does. Anything it is not sure of (a type it
# does not expect, an unknown key, a float outside the range where orjson and pydantic print the same
# digits) returns None, and the caller takes the pydantic path. tests/gateway/test_fast_line.py checks the
# two agree byte for byte.

_STR, _OPT_STR, _INT, _OPT_INT, _OPT_FLOAT, _BOOL, _TS, _MSGS, _ATTRS, _IP, _COUNTRY = range(11)

# field -> (kind, default (None: required), lower bound, upper bound), in `Exchange` field order
_SPEC: dict[str, tuple[int, Any, float | None, float | None]] = {
    "exchange_id": (_STR, None, None, None),
    "ts": (_TS, None, None, None),
    "account_id": (_STR, None, None, None),
    "org_id": (_OPT_STR, None, None, None),
    "api_key_id": (_OPT_STR, None, None, None),
    "end_user": (_OPT_STR, None, None, None),
    "client_ip": (_IP, None, None, None),
    "asn": (_OPT_INT, None, 0, None),
    "country": (_COUNTRY, None, None, None),
    "user_agent": (_OPT_STR, None, None, None),
    "payment_fp": (_OPT_STR, None, None, None),
    "device_fp": (_OPT_STR, None, None, None),
    "endpoint": (_STR, "/v1/chat/completions", None, None),
    "model": (_STR, None, None, None),
    "system_prompt": (_OPT_STR, None, None, None),
    "messages": (_MSGS, None, None, None),
    "n": (_INT, 1, 1, 1024),
    "temperature": (_OPT_FLOAT, None, 0.0, 10.0),
    "top_p": (_OPT_FLOAT, None, 0.0, 1.0),
    "max_tokens": (_OPT_INT, None, 0, None),
    "reasoning_effort": (_OPT_STR, None, None, None),
    "logprobs": (_BOOL, False, None, None),
    "top_logprobs": (_OPT_INT, None, 0, None),
    "tool_set": (_OPT_STR, None, None, None),
    "n_tools": (_INT, 0, 0, None),
    "response_text": (_OPT_STR, None, None, None),
    "reasoning_text": (_OPT_STR, None, None, None),
    "reasoning_tokens": (_OPT_INT, None, 0, None),
    "finish_reason": (_OPT_STR, None, None, None),
    "prompt_tokens": (_OPT_INT, None, 0, None),
    "completion_tokens": (_OPT_INT, None, 0, None),
    "latency_ms": (_OPT_FLOAT, None, 0.0, None),
    "status": (_INT, 200, 100, 599),
    "error": (_OPT_STR, None, None, None),
    "attributes": (_ATTRS, None, None, None),
}
_REQUIRED = ("exchange_id", "ts", "account_id", "model")
# the `Message` TypedDict's keys in declaration order: pydantic writes a message's keys in this order
_MSG_ORDER = ("role", "content", "name", "tool_calls", "tool_call_id")
_MSG_KEYS = frozenset(_MSG_ORDER)


def _plain_float(v: float) -> bool:
    # where orjson and pydantic (serde_json) print a float with the same digits: plain decimals
    return v == 0.0 or 1e-4 <= abs(v) < 1e15


def _message_ok(m: Any) -> bool:
    if type(m) is not dict or type(m.get("role")) is not str or not m.keys() <= _MSG_KEYS:
        return False
    c = m.get("content")
    if "content" in m and c is not None and type(c) is not str and type(c) is not list:
        return False
    for k in ("name", "tool_call_id"):
        if k in m and type(m[k]) is not str:
            return False
    return "tool_calls" not in m or type(m["tool_calls"]) is list


def _in_order(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in _MSG_ORDER if k in m}


def fast_line(record: dict[str, Any]) -> bytes | None:
    """The audit line of `record` without pydantic, or None when only the pydantic path can be sure."""
    if not record.keys() <= _SPEC.keys():
        return None
    for k in _REQUIRED:
        if k not in record:
            return None
    out: dict[str, Any] = {}
    for k, (kind, default, lo, hi) in _SPEC.items():
        if k not in record:
            continue
        v = record[k]
        t = type(v)
        if kind == _STR:
            if t is not str or (default is None and not v):
                return None
        elif kind == _OPT_STR:
            if v is not None and t is not str:
                return None
        elif kind in (_INT, _OPT_INT):
            if v is None and kind == _OPT_INT:
                continue
            if t is not int or (lo is not None and v < lo) or (hi is not None and v > hi):
                return None
        elif kind == _OPT_FLOAT:
            if v is None:
                continue
            if t is not float or not _plain_float(v) or v < lo or (hi is not None and v > hi):
                return None
        elif kind == _BOOL:
            if t is not bool:
                return None
        elif kind == _TS:
            # an aware UTC datetime (what the gateway stamps); anything else is pydantic's to convert
            if t is not datetime or v.utcoffset() != _ZERO:
                return None
        elif kind == _MSGS:
            if t is not list or not all(_message_ok(m) for m in v):
                return None
            if not v:
                continue
            v = [m if list(m) == [x for x in _MSG_ORDER if x in m] else _in_order(m) for m in v]
        elif kind == _ATTRS:
            if t is not dict:
                return None
            for ak, av in v.items():
                if type(ak) is not str or type(av) is not str:
                    return None
            if not v:
                continue
        elif kind == _IP:
            if v is None or v == "":
                continue
            if t is not str:
                return None
            try:
                v = normalise_ip(v)
            except ValueError:
                return None
        elif kind == _COUNTRY:
            if v is None or v == "":
                continue
            if t is not str or len(v) != 2 or not v.isalpha():
                return None
            v = v.upper()
        if v is None or (v == default and kind != _TS):
            continue  # exclude_defaults
        out[k] = v
    try:
        return orjson.dumps(out, option=orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:  # e.g. a lone surrogate, or nesting orjson refuses: pydantic decides
        return None
