"""OpenTelemetry GenAI spans in OTLP JSON, as the OpenTelemetry Collector's file exporter writes them.

Each line is one `ExportTraceServiceRequest`::

    {"resourceSpans": [{"resource": {"attributes": [...]},
                        "scopeSpans": [{"scope": {...}, "spans": [{"traceId", "spanId", "name",
                                        "startTimeUnixNano", "endTimeUnixNano", "attributes", "status"}]}]}]}

Attribute values are OTLP `AnyValue`s (`stringValue`, `intValue` (a decimal string or a number),
`doubleValue`, `boolValue`, `arrayValue.values`, `kvlistValue.values`, `bytesValue`). Every span that
carries a `gen_ai.*` attribute becomes one Exchange, tagged with the line it is on (a line holds many
spans). Other spans are skipped, and so are agent and tool spans (`gen_ai.operation.name` execute_tool,
create_agent, invoke_agent): they are not model calls, and the model calls they make have spans of their
own. Lines holding logs or metrics (`resourceLogs`, `resourceMetrics`) are skipped.

Mapping (GenAI semantic conventions; older names as fallbacks; span attributes win over resource ones):

  gen_ai.response.id (else traceId:spanId)         exchange_id
  startTimeUnixNano; end - start                    ts; latency_ms
  user.id (else enduser.id)                         account_id; enduser.id -> end_user when user.id is set
  organization.id                                   org_id
  gen_ai.api_key.id (else api_key.id)               api_key_id
  client.address, user_agent.original              client_ip, user_agent
  geo.country.iso_code                              country
  gen_ai.operation.name                             endpoint: chat (and generate_content) ->
                                                    /v1/chat/completions, text_completion -> /v1/completions,
                                                    embeddings -> /v1/embeddings; url.path wins when present
  gen_ai.request.model (else gen_ai.response.model) model
  gen_ai.request.temperature / top_p / max_tokens   temperature / top_p / max_tokens
  gen_ai.request.choice.count                       n
  gen_ai.system_instructions                        system_prompt (text parts, joined by newlines)
  gen_ai.input.messages                             messages: text parts -> content (one part: a string;
                                                    several: a list of {"type": "text"} parts), tool_call
                                                    parts -> tool_calls, tool_call_response -> role "tool";
                                                    system-role messages -> system_prompt.
                                                    Fallback: the older gen_ai.prompt.{i}.role/content.
  gen_ai.output.messages (first message)            response_text (text parts), reasoning_text ("reasoning"
                                                    parts). Fallback: gen_ai.completion.0.content.
  gen_ai.response.finish_reasons[0]                 finish_reason (else the output message's finish_reason)
  gen_ai.usage.input_tokens / output_tokens         prompt_tokens / completion_tokens (fallback
                                                    gen_ai.usage.prompt_tokens / completion_tokens)
  http.response.status_code; span status ERROR      status (ERROR without an HTTP code -> 500)
  error.type                                        error
  gen_ai.tool.definitions                           n_tools (its length), tool_set (the names, hashed)
  gen_ai.request.seed, gen_ai.conversation.id,      attributes seed, conversation_id, server_address,
  server.address, gen_ai.provider.name (else          provider, response_model (when it differs from the
  gen_ai.system), gen_ai.response.model,            model), operation (when not a known one), plus
  traceId, spanId, resource service.name            trace_id, span_id and service_name

The content attributes (system instructions, input and output messages) may be structured AnyValues or a
JSON string (what SDKs that cannot record structured attributes write); both are read. Instrumentations
that record content on span events instead are read too, when the span's own attributes have none:

  event gen_ai.client.inference.operation.details   its gen_ai.system_instructions, gen_ai.input.messages
                                                    and gen_ai.output.messages, as above
  events gen_ai.content.prompt / .completion        their gen_ai.prompt / gen_ai.completion (the older
  (semantic conventions up to 1.27)                 conventions: a JSON string of OpenAI-shaped messages,
                                                    or a bare prompt; the first choice is the response)

Exchange fields that have no semantic convention travel as `distillguard.*` span attributes
(distillguard.asn, .payment_fp, .device_fp, .reasoning_effort, .logprobs, .top_logprobs, .n_tools, .tool_set,
.reasoning_tokens) and Exchange attributes as `distillguard.attr.<key>`; `to_otlp_line` writes them and the
reader reads them, so an Exchange survives the round trip (adding trace_id, span_id and service_name to
its attributes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import orjson
import xxhash

from distillguard.exchange import Exchange, Message, message_text, tool_set_key
from distillguard.ingest.base import RawRecord, iter_json_lines, register

__all__ = ["OtelGenAI", "decode_any_value", "encode_any_value", "to_otlp_line"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OP_ENDPOINT = {
    "chat": "/v1/chat/completions",
    "generate_content": "/v1/chat/completions",
    "text_completion": "/v1/completions",
    "embeddings": "/v1/embeddings",
}
_ENDPOINT_OP = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
}
_NOT_MODEL_CALLS = frozenset({"execute_tool", "create_agent", "invoke_agent"})
_STATUS_ERROR = (2, "2", "STATUS_CODE_ERROR")
_DG = "distillguard."
_DG_ATTR = "distillguard.attr."
# Exchange attributes that map to semantic-convention attributes (written there, not as distillguard.attr.*).
_SEMCONV_ATTRS = {
    "seed": "gen_ai.request.seed",
    "conversation_id": "gen_ai.conversation.id",
    "server_address": "server.address",
    "provider": "gen_ai.provider.name",
    "response_model": "gen_ai.response.model",
    "operation": "gen_ai.operation.name",
}
_DERIVED_ATTRS = frozenset({"trace_id", "span_id", "service_name"})
_SNIFF = re.compile(rb'^\s*\{\s*"resourceSpans"\s*:')
_HEX = re.compile(r"^[0-9a-fA-F]+$")


class _Unmappable(ValueError):
    """A GenAI span this adapter cannot map; the message names the attribute."""


# -- AnyValue ---------------------------------------------------------------------------------------------


def decode_any_value(v: Any) -> Any:
    """The Python value of an OTLP JSON AnyValue (`{"stringValue": "x"}` -> "x", arrays and kvlists nested)."""
    if not isinstance(v, dict):
        return v  # lenient: some writers put plain JSON values
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        iv = v["intValue"]
        if isinstance(iv, str):
            try:
                return int(iv)  # int64 is a decimal string in OTLP JSON
            except ValueError:
                return iv  # left for validation to name
        return iv
    if "doubleValue" in v:
        dv = v["doubleValue"]
        if isinstance(dv, str):
            try:
                return float(dv)  # "NaN", "Infinity" or a quoted number
            except ValueError:
                return dv
        return dv
    if "boolValue" in v:
        return v["boolValue"]
    if "arrayValue" in v:
        return [decode_any_value(x) for x in (v["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in v:
        return {
            kv.get("key"): decode_any_value(kv.get("value"))
            for kv in (v["kvlistValue"] or {}).get("values") or []
            if isinstance(kv, dict)
        }
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def encode_any_value(v: Any) -> dict[str, Any]:
    """The OTLP JSON AnyValue of a Python value (the inverse of `decode_any_value`)."""
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, str):
        return {"stringValue": v}
    if isinstance(v, list | tuple):
        return {"arrayValue": {"values": [encode_any_value(x) for x in v]}}
    if isinstance(v, dict):
        return {
            "kvlistValue": {"values": [{"key": str(k), "value": encode_any_value(x)} for k, x in v.items()]}
        }
    if v is None:
        return {}
    return {"stringValue": str(v)}


def _attributes(attrs: Any, where: str) -> dict[str, Any]:
    if attrs is None:
        return {}
    if not isinstance(attrs, list):
        raise _Unmappable(f"{where}: expected a list of key/value pairs, got {type(attrs).__name__}")
    out: dict[str, Any] = {}
    for kv in attrs:
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise _Unmappable(f"{where}: an entry is not a {{key, value}} pair")
        out[kv["key"]] = decode_any_value(kv.get("value"))
    return out


# -- content (messages) -----------------------------------------------------------------------------------


def _structured(v: Any, name: str) -> Any:
    """A content attribute: structured already, or a JSON string holding the structure."""
    if isinstance(v, str):
        s = v.lstrip()
        if s.startswith(("[", "{")):
            try:
                return orjson.loads(v)
            except orjson.JSONDecodeError:
                raise _Unmappable(f"{name}: a string that starts like JSON but is not valid JSON") from None
    return v


def _part_texts(parts: Any, kind: str = "text") -> list[str]:
    out: list[str] = []
    for p in parts if isinstance(parts, list) else [parts]:
        if isinstance(p, str) and kind == "text":
            out.append(p)
        elif isinstance(p, dict) and p.get("type", "text") == kind and isinstance(p.get("content"), str):
            out.append(p["content"])
    return out


def _json_text(v: Any) -> str:
    return v if isinstance(v, str) else orjson.dumps(v).decode()


def _input_messages(v: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, chat messages) of gen_ai.input.messages."""
    if isinstance(v, str):
        return [], [{"role": "user", "content": v}]  # a bare prompt string
    if not isinstance(v, list):
        raise _Unmappable(f"gen_ai.input.messages: expected a list of messages, got {type(v).__name__}")
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, m in enumerate(v):
        if not isinstance(m, dict):
            raise _Unmappable(f"gen_ai.input.messages[{i}]: expected a message object")
        role = m.get("role")
        parts = m.get("parts")
        if parts is None and "content" in m:  # OpenAI-shaped message, as some instrumentations write
            parts = [{"type": "text", "content": message_text(m)}]
        parts = parts if isinstance(parts, list) else []
        texts = _part_texts(parts)
        if role == "system":
            system.append("\n".join(texts))
            continue
        calls = [p for p in parts if isinstance(p, dict) and p.get("type") == "tool_call"]
        results = [p for p in parts if isinstance(p, dict) and p.get("type") == "tool_call_response"]
        for r in results:
            msg: dict[str, Any] = {"role": "tool", "content": _json_text(r.get("result", r.get("response")))}
            if isinstance(r.get("id"), str):
                msg["tool_call_id"] = r["id"]
            out.append(msg)
        if results and not texts and not calls:
            continue
        msg = {
            "role": role,
            "content": texts[0] if len(texts) == 1 else [{"type": "text", "text": t} for t in texts] or None,
        }
        if calls:
            msg["tool_calls"] = [
                {
                    "id": c.get("id"),
                    "type": "function",
                    "function": {"name": c.get("name"), "arguments": _json_text(c.get("arguments"))},
                }
                for c in calls
            ]
        if isinstance(m.get("name"), str):
            msg["name"] = m["name"]
        out.append(msg)
    return system, out


def _legacy_prompts(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """Older indexed content attributes: gen_ai.prompt.{i}.role / .content (and gen_ai.completion.*)."""
    by_index: dict[int, dict[str, Any]] = {}
    for k, v in attrs.items():
        if not k.startswith(prefix):
            continue
        idx, _, field = k[len(prefix) :].partition(".")
        if idx.isdigit() and field in ("role", "content"):
            by_index.setdefault(int(idx), {})[field] = v
    return [by_index[i] for i in sorted(by_index)]


def _output(attrs: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(response text, reasoning text, finish reason) of the first output message."""
    v = attrs.get("gen_ai.output.messages")
    if v is None:
        legacy = _legacy_prompts(attrs, "gen_ai.completion.")
        c = legacy[0].get("content") if legacy else None
        return (c if isinstance(c, str) else None), None, None
    v = _structured(v, "gen_ai.output.messages")
    if isinstance(v, str):
        return v, None, None
    if not isinstance(v, list):
        raise _Unmappable(f"gen_ai.output.messages: expected a list of messages, got {type(v).__name__}")
    if not v:
        return None, None, None
    m = v[0]  # several output messages are several choices (n > 1): the first stands for the call
    if not isinstance(m, dict):
        raise _Unmappable("gen_ai.output.messages[0]: expected a message object")
    if isinstance(m.get("message"), dict):  # an OpenAI-shaped choice: {"index", "message", "finish_reason"}
        m = {**m["message"], "finish_reason": m.get("finish_reason")}
    parts = m.get("parts")
    if parts is None and "content" in m:  # OpenAI-shaped message, as some instrumentations write
        parts = [{"type": "text", "content": message_text(m)}]
    texts = _part_texts(parts)
    reasoning = _part_texts(parts, "reasoning")
    fr = m.get("finish_reason")
    return (
        "\n".join(texts) if texts else None,
        "\n".join(reasoning) if reasoning else None,
        fr if isinstance(fr, str) else None,
    )


# Content carried on span events, and the span attribute each one stands for
_DETAILS_EVENT = "gen_ai.client.inference.operation.details"
_CONTENT_ATTRS = ("gen_ai.system_instructions", "gen_ai.input.messages", "gen_ai.output.messages")
_LEGACY_EVENTS = {
    "gen_ai.content.prompt": ("gen_ai.prompt", "gen_ai.input.messages"),
    "gen_ai.content.completion": ("gen_ai.completion", "gen_ai.output.messages"),
}


def _with_event_content(attrs: dict[str, Any], events: Any) -> dict[str, Any]:
    """The span's attributes, with the content its events carry where the attributes have none of it."""
    if not isinstance(events, list):
        raise _Unmappable("events: expected a list")
    has_prompt = "gen_ai.input.messages" in attrs or any(k.startswith("gen_ai.prompt.") for k in attrs)
    has_output = "gen_ai.output.messages" in attrs or any(k.startswith("gen_ai.completion.") for k in attrs)
    if has_prompt and has_output:
        return attrs
    found: dict[str, Any] = {}
    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise _Unmappable(f"events[{i}]: expected an event object")
        name = ev.get("name")
        if name == _DETAILS_EVENT:
            ea = _attributes(ev.get("attributes"), f"events[{i}] ({name}).attributes")
            for k in _CONTENT_ATTRS:
                if ea.get(k) is not None:
                    found.setdefault(k, _structured(ea[k], f"events[{i}] ({name}).{k}"))
        elif name in _LEGACY_EVENTS:
            src, dst = _LEGACY_EVENTS[name]
            ea = _attributes(ev.get("attributes"), f"events[{i}] ({name}).attributes")
            if ea.get(src) is not None:
                found.setdefault(dst, _structured(ea[src], f"events[{i}] ({name}).{src}"))
    if not found:
        return attrs
    out = dict(attrs)
    if not has_prompt:
        for k in ("gen_ai.system_instructions", "gen_ai.input.messages"):
            if k in found:
                out.setdefault(k, found[k])
    if not has_output and "gen_ai.output.messages" in found:
        out["gen_ai.output.messages"] = found["gen_ai.output.messages"]
    return out


# -- span -> Exchange fields ------------------------------------------------------------------------------


def _get(attrs: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        v = attrs.get(k)
        if v is not None and v != "":
            return v
    return None


def _nanos(v: Any, name: str) -> int | None:
    if v is None or v == "" or v == 0 or v == "0":
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        raise _Unmappable(f"{name}: expected integer nanoseconds, got {v!r:.40}") from None


def span_fields(span: dict[str, Any], attrs: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
    """Exchange fields of one GenAI span (`attrs` decoded span attributes, `res` resource attributes)."""
    both = {**res, **attrs}  # identity attributes may sit on the resource; the span's own win
    data: dict[str, Any] = {}
    out_attrs: dict[str, str] = {}
    trace_id, span_id = span.get("traceId"), span.get("spanId")
    if trace_id:
        out_attrs["trace_id"] = str(trace_id)
    if span_id:
        out_attrs["span_id"] = str(span_id)
    if isinstance(res.get("service.name"), str):
        out_attrs["service_name"] = res["service.name"]

    rid = _get(attrs, "gen_ai.response.id")
    if rid is None and not (trace_id and span_id):
        raise _Unmappable("no id: neither gen_ai.response.id nor traceId/spanId")
    data["exchange_id"] = str(rid) if rid is not None else f"{trace_id}:{span_id}"
    start = _nanos(span.get("startTimeUnixNano"), "startTimeUnixNano")
    if start is None:
        raise _Unmappable("startTimeUnixNano: missing")
    data["ts"] = _EPOCH + timedelta(microseconds=start // 1000)
    end = _nanos(span.get("endTimeUnixNano"), "endTimeUnixNano")
    if end is not None and end >= start:
        data["latency_ms"] = (end - start) / 1e6

    model = _get(attrs, "gen_ai.request.model", "gen_ai.response.model")
    if model is None:
        raise _Unmappable("model: neither gen_ai.request.model nor gen_ai.response.model is set")
    data["model"] = model
    served = _get(attrs, "gen_ai.response.model")
    if served is not None and served != model:
        out_attrs["response_model"] = str(served)
    account = _get(both, "user.id", "enduser.id")
    if account is None:
        raise _Unmappable("account: neither user.id nor enduser.id is set (on the span or its resource)")
    data["account_id"] = account
    if _get(both, "user.id") is not None and (eu := _get(both, "enduser.id")) is not None:
        data["end_user"] = eu
    for field, keys in (
        ("org_id", ("organization.id",)),
        ("api_key_id", ("gen_ai.api_key.id", "api_key.id")),
        ("client_ip", ("client.address",)),
        ("user_agent", ("user_agent.original",)),
        ("country", ("geo.country.iso_code",)),
    ):
        if (v := _get(both, *keys)) is not None:
            data[field] = v

    op = _get(attrs, "gen_ai.operation.name")
    path = _get(attrs, "url.path")
    data["endpoint"] = path if path is not None else OP_ENDPOINT.get(str(op), "/v1/chat/completions")
    if op is not None and op not in OP_ENDPOINT:
        out_attrs["operation"] = str(op)
    for field, key in (
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
        ("max_tokens", "gen_ai.request.max_tokens"),
        ("n", "gen_ai.request.choice.count"),
        ("prompt_tokens", "gen_ai.usage.input_tokens"),
        ("completion_tokens", "gen_ai.usage.output_tokens"),
        ("reasoning_tokens", _DG + "reasoning_tokens"),
        ("asn", _DG + "asn"),
        ("payment_fp", _DG + "payment_fp"),
        ("device_fp", _DG + "device_fp"),
        ("reasoning_effort", _DG + "reasoning_effort"),
        ("logprobs", _DG + "logprobs"),
        ("top_logprobs", _DG + "top_logprobs"),
    ):
        if (v := attrs.get(key)) is not None:
            data[field] = v
    data.setdefault("prompt_tokens", attrs.get("gen_ai.usage.prompt_tokens"))
    data.setdefault("completion_tokens", attrs.get("gen_ai.usage.completion_tokens"))
    if data.get("reasoning_tokens") is None:
        data["reasoning_tokens"] = attrs.get("gen_ai.usage.reasoning_tokens")
    if (nt := attrs.get(_DG + "n_tools")) is not None:
        data["n_tools"] = nt
    elif (defs := attrs.get("gen_ai.tool.definitions")) is not None:
        defs = _structured(defs, "gen_ai.tool.definitions")
        data["n_tools"] = len(defs) if isinstance(defs, list) else 0
        data["tool_set"] = tool_set_key(defs)
    if (ts := attrs.get(_DG + "tool_set")) is not None:
        data["tool_set"] = ts

    # content
    system: list[str] = []
    if (si := attrs.get("gen_ai.system_instructions")) is not None:
        system.append("\n".join(_part_texts(_structured(si, "gen_ai.system_instructions"))))
    if (im := attrs.get("gen_ai.input.messages")) is not None:
        sys_in, data["messages"] = _input_messages(_structured(im, "gen_ai.input.messages"))
        system.extend(sys_in)
    else:
        legacy = _legacy_prompts(attrs, "gen_ai.prompt.")
        for m in legacy:
            if m.get("role") == "system" and isinstance(m.get("content"), str):
                system.append(m["content"])
        data["messages"] = [m for m in legacy if m.get("role") != "system"]
    if system:
        data["system_prompt"] = "\n".join(system)
    text, reasoning, out_fr = _output(attrs)
    data["response_text"], data["reasoning_text"] = text, reasoning
    frs = attrs.get("gen_ai.response.finish_reasons")
    if isinstance(frs, str):
        frs = _structured(frs, "gen_ai.response.finish_reasons") if frs.startswith("[") else [frs]
    data["finish_reason"] = frs[0] if isinstance(frs, list) and frs else out_fr

    # status
    st = span.get("status")
    status: dict[str, Any] = st if isinstance(st, dict) else {}
    is_error = status.get("code") in _STATUS_ERROR
    http = attrs.get("http.response.status_code")
    data["status"] = http if http is not None else (500 if is_error else 200)
    err = _get(attrs, "error.type")
    if err is None and is_error and status.get("message"):
        err = status["message"]
    data["error"] = None if err is None else str(err)

    # attributes
    for key, src in _SEMCONV_ATTRS.items():
        if key in ("response_model", "operation"):
            continue  # set above, only when they say something the fields do not
        v = _get(both, src, "gen_ai.system") if key == "provider" else _get(both, src)
        if v is not None:
            out_attrs[key] = _json_text(v) if not isinstance(v, str | int | float) else str(v)
    for k, v in attrs.items():
        if k.startswith(_DG_ATTR):
            out_attrs[k[len(_DG_ATTR) :]] = v if isinstance(v, str) else _json_text(v)
    data["attributes"] = out_attrs
    return {k: v for k, v in data.items() if v is not None}


# -- the adapter ------------------------------------------------------------------------------------------


@register
class OtelGenAI:
    name: ClassVar[str] = "otel"
    description: ClassVar[str] = "OpenTelemetry GenAI spans, OTLP JSON lines (Collector file exporter)"

    def sniff(self, head: list[bytes]) -> bool:
        # The key test on raw bytes also holds for a huge first line cut short by head_lines.
        if _SNIFF.match(head[0]):
            return True
        try:
            d = orjson.loads(head[0])
        except orjson.JSONDecodeError:
            return False
        return isinstance(d, dict) and "resourceSpans" in d

    def records(self, path: Path) -> Iterator[RawRecord]:
        for lineno, obj, raw, err in iter_json_lines(path):
            if err is not None:
                yield RawRecord(lineno, None, err, raw)
                continue
            if not isinstance(obj, dict):
                yield RawRecord(
                    lineno, None, f"expected a JSON object, got {type(obj).__name__}", orjson.dumps(obj)
                )
                continue
            rs = obj.get("resourceSpans")
            if rs is None:
                if any(k in obj for k in ("resourceLogs", "resourceMetrics", "resourceProfiles")):
                    continue  # another signal in the same export: no spans here
                yield RawRecord(
                    lineno, None, "resourceSpans: missing (not an OTLP trace export)", orjson.dumps(obj)
                )
                continue
            if not isinstance(rs, list):
                yield RawRecord(lineno, None, "resourceSpans: expected a list", orjson.dumps(obj))
                continue
            for i, block in enumerate(rs):
                yield from self._resource_spans(lineno, i, block)

    def _resource_spans(self, lineno: int, i: int, block: Any) -> Iterator[RawRecord]:
        try:
            if not isinstance(block, dict):
                raise _Unmappable("expected an object")
            resource = block.get("resource") or {}
            res = _attributes(
                resource.get("attributes") if isinstance(resource, dict) else None, "resource.attributes"
            )
            scopes = block.get("scopeSpans", block.get("instrumentationLibrarySpans")) or []
            if not isinstance(scopes, list):
                raise _Unmappable("scopeSpans: expected a list")
        except _Unmappable as e:
            yield RawRecord(lineno, None, f"resourceSpans[{i}]: {e}", orjson.dumps(block))
            return
        for scope in scopes:
            spans = scope.get("spans") if isinstance(scope, dict) else None
            if not isinstance(spans, list):
                yield RawRecord(
                    lineno, None, f"resourceSpans[{i}].scopeSpans: spans is not a list", orjson.dumps(scope)
                )
                continue
            for span in spans:
                rec = self._span(lineno, span, res)
                if rec is not None:
                    yield rec

    def _span(self, lineno: int, span: Any, res: dict[str, Any]) -> RawRecord | None:
        sid = span.get("spanId", "?") if isinstance(span, dict) else "?"
        try:
            if not isinstance(span, dict):
                raise _Unmappable(f"expected a span object, got {type(span).__name__}")
            attrs = _attributes(span.get("attributes"), "attributes")
            if not any(k.startswith("gen_ai.") for k in attrs):
                return None  # not a GenAI span (HTTP, database...): not an exchange
            if attrs.get("gen_ai.operation.name") in _NOT_MODEL_CALLS:
                return None
            if span.get("events"):  # only for model calls: agent and tool spans are skipped unread
                attrs = _with_event_content(attrs, span["events"])
            return RawRecord(lineno, span_fields(span, attrs, res))
        except _Unmappable as e:
            return RawRecord(lineno, None, f"span {sid}: {e}", orjson.dumps(span))


# -- writer -----------------------------------------------------------------------------------------------


def _unix_nanos(ts: datetime) -> int:
    d = ts - _EPOCH
    return ((d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds) * 1000


def _hex_id(attr: str | None, seed: str, width: int) -> str:
    if attr is not None and len(attr) == width and _HEX.match(attr):
        return attr
    b = seed.encode()
    h = xxhash.xxh3_128_hexdigest(b) if width == 32 else xxhash.xxh3_64_hexdigest(b)
    return h[:width]


def _otel_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        content = m.get("content")
        parts: list[dict[str, Any]] = []
        if m.get("role") == "tool":
            parts.append({"type": "tool_call_response", "id": m.get("tool_call_id", ""), "result": content})
        else:
            if isinstance(content, str):
                parts.append({"type": "text", "content": content})
            elif isinstance(content, list):
                for p in content:
                    if isinstance(p, dict) and isinstance(p.get("text"), str):
                        parts.append({"type": "text", "content": p["text"]})
                    elif isinstance(p, str):
                        parts.append({"type": "text", "content": p})
            for tc in m.get("tool_calls") or []:
                if not isinstance(tc, dict):
                    continue
                fn = tc.get("function") or {}
                parts.append(
                    {
                        "type": "tool_call",
                        "id": tc.get("id"),
                        "name": fn.get("name"),
                        "arguments": fn.get("arguments"),
                    }
                )
        msg: dict[str, Any] = {"role": m.get("role"), "parts": parts}
        if "name" in m:
            msg["name"] = m["name"]
        out.append(msg)
    return out


def _span_of(ex: Exchange, structured: bool) -> dict[str, Any]:
    a: dict[str, Any] = {}
    op = ex.attributes.get("operation") or _ENDPOINT_OP.get(ex.endpoint, "chat")
    a["gen_ai.operation.name"] = op
    if ex.endpoint != OP_ENDPOINT.get(op):
        a["url.path"] = ex.endpoint
    a["gen_ai.request.model"] = ex.model
    a["gen_ai.response.id"] = ex.exchange_id
    a["user.id"] = ex.account_id
    for key, v in (
        ("enduser.id", ex.end_user),
        ("organization.id", ex.org_id),
        ("api_key.id", ex.api_key_id),
        ("client.address", ex.client_ip),
        ("user_agent.original", ex.user_agent),
        ("geo.country.iso_code", ex.country),
        ("gen_ai.request.temperature", ex.temperature),
        ("gen_ai.request.top_p", ex.top_p),
        ("gen_ai.request.max_tokens", ex.max_tokens),
        ("gen_ai.request.choice.count", ex.n if ex.n != 1 else None),
        ("gen_ai.usage.input_tokens", ex.prompt_tokens),
        ("gen_ai.usage.output_tokens", ex.completion_tokens),
        ("gen_ai.response.finish_reasons", [ex.finish_reason] if ex.finish_reason is not None else None),
        ("error.type", ex.error),
        (_DG + "reasoning_tokens", ex.reasoning_tokens),
        (_DG + "asn", ex.asn),
        (_DG + "payment_fp", ex.payment_fp),
        (_DG + "device_fp", ex.device_fp),
        (_DG + "reasoning_effort", ex.reasoning_effort),
        (_DG + "logprobs", True if ex.logprobs else None),
        (_DG + "top_logprobs", ex.top_logprobs),
        (_DG + "n_tools", ex.n_tools or None),
        (_DG + "tool_set", ex.tool_set),
    ):
        if v is not None:
            a[key] = v
    if ex.status != 200 or ex.error is not None:
        a["http.response.status_code"] = ex.status
    for k, v in ex.attributes.items():
        if k in _DERIVED_ATTRS or k == "operation":
            continue
        if k == "seed" and v.lstrip("-").isdigit() and str(int(v)) == v:
            a[_SEMCONV_ATTRS[k]] = int(v)  # the convention types the seed as an int
        elif k in _SEMCONV_ATTRS:
            a[_SEMCONV_ATTRS[k]] = v
        else:
            a[_DG_ATTR + k] = v

    def content(v: Any) -> Any:
        return v if structured else orjson.dumps(v).decode()

    if ex.system_prompt is not None:
        a["gen_ai.system_instructions"] = content([{"type": "text", "content": ex.system_prompt}])
    if ex.messages:
        a["gen_ai.input.messages"] = content(_otel_messages(ex.messages))
    if ex.response_text is not None or ex.reasoning_text is not None:
        parts = []
        if ex.reasoning_text is not None:
            parts.append({"type": "reasoning", "content": ex.reasoning_text})
        if ex.response_text is not None:
            parts.append({"type": "text", "content": ex.response_text})
        out: dict[str, Any] = {"role": "assistant", "parts": parts}
        if ex.finish_reason is not None:
            out["finish_reason"] = ex.finish_reason
        a["gen_ai.output.messages"] = content([out])

    start = _unix_nanos(ex.ts)
    span: dict[str, Any] = {
        "traceId": _hex_id(ex.attributes.get("trace_id"), ex.exchange_id, 32),
        "spanId": _hex_id(ex.attributes.get("span_id"), ex.exchange_id, 16),
        "name": f"{op} {ex.model}",
        "kind": 3,  # CLIENT
        "startTimeUnixNano": str(start),
    }
    if ex.latency_ms is not None:
        span["endTimeUnixNano"] = str(start + round(ex.latency_ms * 1e6))
    span["attributes"] = [{"key": k, "value": encode_any_value(v)} for k, v in a.items()]
    span["status"] = {"code": 2, "message": ex.error or ""} if ex.status >= 400 or ex.error else {}
    return span


def to_otlp_line(
    exchanges: Sequence[Exchange], service_name: str = "distillguard", *, structured: bool = False
) -> bytes:
    """One ExportTraceServiceRequest JSON line (newline included) with a GenAI span per exchange.

    Content attributes are JSON strings by default, as most SDKs record them; `structured=True` writes them
    as nested AnyValues instead. Reading the line back with this module gives the same exchanges (plus
    trace_id, span_id and service_name attributes).
    """
    req = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service_name}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "distillguard"},
                        "spans": [_span_of(ex, structured) for ex in exchanges],
                    }
                ],
            }
        ]
    }
    return orjson.dumps(req) + b"\n"
