"""OpenAI Batch API files: the JSONL a customer uploads (input) and the JSONL OpenAI returns (output).

Input line (one request)::

    {"custom_id": "r-1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": ..., "messages": [...], "temperature": ..., "max_tokens" | "max_completion_tokens": ...,
              "n": ..., "logprobs": ..., "top_logprobs": ..., "tools": [...], "reasoning_effort": ..., "user": ...}}

Output line (one result; the error file has the same shape)::

    {"id": "batch_req_...", "custom_id": "r-1",
     "response": {"status_code": 200, "request_id": "...", "body": <chat.completion object>} | null,
     "error": null | {"code": ..., "message": ...}}

Joining. Input and output lines pair up by `custom_id`. Give `scan` the output file, or both files:

* An OUTPUT (or error) file is streamed line by line. Its paired input file is found next to it by name
  (`batch_x_output.jsonl` -> `batch_x_input.jsonl`, `output.jsonl` -> `input.jsonl`, the word `error(s)`
  likewise, any `.gz`/`.zst` suffix) or given as `OpenAIBatch(input_path=...)`. The input is indexed first
  as custom_id -> byte offset (offsets, not bodies, so memory stays bounded whatever the prompt sizes; a
  compressed input is first decompressed to a temporary file so that it can be seeked), then each output
  line seeks to its request. Without an input file the exchange carries what the output has (model,
  response, usage) and no request messages: still a valid exchange.
* An INPUT file yields request-only exchanges (no response), EXCEPT for the requests whose custom_id
  appears in a paired output or error file next to it: those are counted once, from the output side. So
  passing both files never double counts, and passing the input alone keeps only unanswered requests when
  the output sits beside it.

Field mapping (request side from the input body, response side from the output body):

  exchange_id   output line `id` (batch_req_...); input-only: "<batch>:<custom_id>"
  ts            output body `created` (epoch seconds); otherwise the file's modification time
                (attribute ts_source=file_mtime), since batch input files carry no time at all
  account_id    the constructor's `account_id` override, else body `user`, else the batch name (file stem
                without its input/output/error word) -- attribute account_source = override | user | file
  end_user      body `user`
  endpoint      input line `url` (else guessed from the response `object`)
  model         body `model` (the model asked for); the response's model snapshot -> attribute response_model
  messages      body `messages` (system and developer messages -> system_prompt), `prompt` for
                /v1/completions, `input`/`instructions` for /v1/embeddings and /v1/responses
  max_tokens    `max_tokens`, else `max_completion_tokens`, else `max_output_tokens`
  n_tools       len(`tools`) (+ legacy `functions`)
  tool_set      the offered tools' names, hashed (`exchange.tool_set_key`)
  response_text choices[0].message.content (choices[0].text for completions; output_text for responses)
  reasoning_*   message.reasoning_content (or .reasoning); usage.completion_tokens_details.reasoning_tokens
  status, error response.status_code; `error.code` (a failed line without a response gets status 500)

The request/response body helpers (`request_fields`, `response_fields`) are shared with the LiteLLM adapter,
whose logs carry the same OpenAI-shaped bodies.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar

import orjson

from distillguard.exchange import message_text, tool_set_key
from distillguard.ingest.base import GZIP_MAGIC, ZSTD_MAGIC, RawRecord, iter_json_lines, open_bytes, register

__all__ = ["MapError", "OpenAIBatch", "request_fields", "response_fields", "split_system"]


class MapError(ValueError):
    """A source record the adapter cannot map; the message names the source field."""


# -- OpenAI request and response bodies (shared with the LiteLLM adapter) ------------------------------------

_SYSTEM_ROLES = ("system", "developer")
_OBJECT_ENDPOINT = {
    "chat.completion": "/v1/chat/completions",
    "text_completion": "/v1/completions",
    "list": "/v1/embeddings",
    "response": "/v1/responses",
}


def split_system(msgs: Any, where: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(system prompt, other messages) of an OpenAI `messages` list: Exchange keeps system text apart."""
    if not isinstance(msgs, list):
        raise MapError(f"{where}: expected a list of messages, got {type(msgs).__name__}")
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise MapError(f"{where}[{i}]: expected a message object, got {type(m).__name__}")
        if m.get("role") in _SYSTEM_ROLES:
            system.append(message_text(m))
        elif "role" in m or "type" not in m:
            out.append(m)
        # else: a Responses API item without a role (function_call, reasoning...): not a message
    return ("\n".join(system) if system else None), out


def _user_text(v: Any) -> str | None:
    """A `prompt`/`input` value as one user message's text (a list of strings is one batch of texts)."""
    if isinstance(v, str):
        return v
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return "\n".join(v)
    return None  # token arrays and the like: nothing readable


def request_fields(body: Any, endpoint: str | None, where: str = "body") -> dict[str, Any]:
    """Exchange fields of an OpenAI request body (chat, completions, embeddings or responses)."""
    if not isinstance(body, dict):
        raise MapError(f"{where}: expected a JSON object, got {type(body).__name__}")
    out: dict[str, Any] = {}
    if endpoint:
        out["endpoint"] = endpoint
    if body.get("model") is not None:
        out["model"] = body["model"]
    system: list[str] = []
    if isinstance(body.get("instructions"), str):  # Responses API system text
        system.append(body["instructions"])
    msgs: list[dict[str, Any]] = []
    if body.get("messages") is not None:
        sp, msgs = split_system(body["messages"], f"{where}.messages")
        if sp is not None:
            system.append(sp)
    else:
        src = "prompt" if "prompt" in body else "input"
        v = body.get(src)
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            sp, msgs = split_system(v, f"{where}.{src}")  # Responses API input items
            if sp is not None:
                system.append(sp)
        elif (text := _user_text(v)) is not None:
            msgs = [{"role": "user", "content": text}]
    if system:
        out["system_prompt"] = "\n".join(system)
    out["messages"] = msgs
    for k in ("temperature", "top_p", "n", "top_logprobs"):
        if body.get(k) is not None:
            out[k] = body[k]
    for k in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if body.get(k) is not None:
            out["max_tokens"] = body[k]
            break
    lp = body.get("logprobs")
    if isinstance(lp, int) and not isinstance(lp, bool):
        # /v1/completions: `logprobs` is the number of top tokens, not a flag
        out["logprobs"] = lp > 0
        out.setdefault("top_logprobs", lp)
    elif lp is not None:
        out["logprobs"] = lp
    effort = body.get("reasoning_effort")
    if effort is None and isinstance(body.get("reasoning"), dict):
        effort = body["reasoning"].get("effort")
    if effort is not None:
        out["reasoning_effort"] = effort
    n_tools = 0
    offered: list[Any] = []
    for k in ("tools", "functions"):
        v = body.get(k)
        if v is None:
            continue
        if not isinstance(v, list):
            raise MapError(f"{where}.{k}: expected a list, got {type(v).__name__}")
        n_tools += len(v)
        offered += v
    out["n_tools"] = n_tools
    if (key := tool_set_key(offered)) is not None:
        out["tool_set"] = key
    if body.get("user") is not None:
        out["end_user"] = body["user"]
    attrs: dict[str, str] = {}
    if body.get("seed") is not None:
        attrs["seed"] = str(body["seed"])
    rf = body.get("response_format")
    if isinstance(rf, dict) and isinstance(rf.get("type"), str):
        attrs["response_format"] = rf["type"]  # json_schema / json_object: structured-output harvesting
    if attrs:
        out["attributes"] = attrs
    return out


def _text_or_none(content: Any) -> str | None:
    if content is None:
        return None
    if isinstance(content, str):
        return content
    return message_text({"content": content}) if isinstance(content, list) else None


def response_fields(body: Any, where: str = "response.body") -> tuple[dict[str, Any], dict[str, Any]]:
    """(Exchange fields, metadata) of an OpenAI response body.

    Metadata holds what is not an Exchange field as such: `model` (the served snapshot), `id`, `created`
    (epoch seconds), `object`, `system_fingerprint`.
    """
    if not isinstance(body, dict):
        raise MapError(f"{where}: expected a JSON object, got {type(body).__name__}")
    out: dict[str, Any] = {}
    meta = {k: body[k] for k in ("model", "id", "created", "object", "system_fingerprint") if body.get(k)}
    choices = body.get("choices")
    if choices is not None:
        if not isinstance(choices, list):
            raise MapError(f"{where}.choices: expected a list, got {type(choices).__name__}")
        if choices:
            c0 = choices[0]  # n > 1: the first choice stands for the call
            if not isinstance(c0, dict):
                raise MapError(f"{where}.choices[0]: expected an object, got {type(c0).__name__}")
            msg = c0.get("message")
            if isinstance(msg, dict):
                out["response_text"] = _text_or_none(msg.get("content"))
                r = msg.get("reasoning_content", msg.get("reasoning"))
                if isinstance(r, str):
                    out["reasoning_text"] = r
            elif isinstance(c0.get("text"), str):
                out["response_text"] = c0["text"]
            out["finish_reason"] = c0.get("finish_reason")
    elif isinstance(body.get("output"), list):
        _responses_output(body, out)
    usage = body.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise MapError(f"{where}.usage: expected an object, got {type(usage).__name__}")
        out["prompt_tokens"] = usage.get("prompt_tokens", usage.get("input_tokens"))
        out["completion_tokens"] = usage.get("completion_tokens", usage.get("output_tokens"))
        details = usage.get("completion_tokens_details") or usage.get("output_tokens_details")
        if isinstance(details, dict):
            out["reasoning_tokens"] = details.get("reasoning_tokens")
    return {k: v for k, v in out.items() if v is not None}, meta


def _responses_output(body: dict[str, Any], out: dict[str, Any]) -> None:
    """Responses API `output` items: message text and reasoning summaries."""
    texts: list[str] = []
    reasoning: list[str] = []
    for item in body["output"]:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            for p in item.get("content") or []:
                if isinstance(p, dict) and isinstance(p.get("text"), str):
                    texts.append(p["text"])
        elif item.get("type") == "reasoning":
            for p in item.get("summary") or []:
                if isinstance(p, dict) and isinstance(p.get("text"), str):
                    reasoning.append(p["text"])
    if texts:
        out["response_text"] = "\n".join(texts)
    if reasoning:
        out["reasoning_text"] = "\n".join(reasoning)
    status = body.get("status")
    if status == "completed":
        out["finish_reason"] = "stop"
    elif isinstance(body.get("incomplete_details"), dict):
        out["finish_reason"] = body["incomplete_details"].get("reason")


def epoch_seconds(v: Any, where: str) -> datetime:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise MapError(f"{where}: expected epoch seconds, got {v!r:.40}")
    return datetime.fromtimestamp(v, UTC)


# -- pairing input and output files ------------------------------------------------------------------------

_ROLE_WORD = re.compile(r"(?<![A-Za-z])(input|output|errors|error)(?![A-Za-z])", re.IGNORECASE)
_COMPRESSED = (".gz", ".zst", ".zstd")


def _strip_compression(name: str) -> str:
    for s in _COMPRESSED:
        if name.endswith(s):
            return name[: -len(s)]
    return name


def batch_name(path: Path) -> str:
    """The batch's name: the file stem without its input/output/error word (so both files agree)."""
    stem = _strip_compression(path.name)
    stem = stem[: -len(".jsonl")] if stem.endswith(".jsonl") else Path(stem).stem
    base = _ROLE_WORD.sub("", stem).strip("._- ")
    return base or path.resolve().parent.name or "batch"


def _paired(path: Path, words: tuple[str, ...]) -> list[Path]:
    """Existing files next to `path` whose name swaps its last input/output/error word for one of `words`."""
    name = path.name
    hits = list(_ROLE_WORD.finditer(name))
    if not hits:
        return []
    m = hits[-1]
    found: list[Path] = []
    for w in words:
        cand = _strip_compression(name[: m.start()] + w + name[m.end() :])
        for suffix in ("", *_COMPRESSED):
            p = path.with_name(cand + suffix)
            if p != path and p.is_file():
                found.append(p)
                break
    return found


class _InputIndex:
    """custom_id -> byte offset of the input line: the join's lookup, holding offsets rather than bodies."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as probe:
            magic = probe.read(4)
        self._f: IO[bytes]
        if magic.startswith(GZIP_MAGIC) or magic == ZSTD_MAGIC:
            # Compressed streams cannot seek backwards cheaply: decompress once to a temporary file on disk.
            self._f = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
            with open_bytes(path) as src:
                shutil.copyfileobj(src, self._f, 1 << 20)
        else:
            self._f = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.offsets: dict[str, int] = {}
        self._f.seek(0)
        off = 0
        for line in self._f:
            if line.strip():
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    obj = None  # the input file's own scan quarantines it; here it just has no request
                cid = obj.get("custom_id") if isinstance(obj, dict) else None
                if isinstance(cid, str):
                    self.offsets.setdefault(cid, off)
            off += len(line)

    def get(self, custom_id: str) -> dict[str, Any] | None:
        off = self.offsets.get(custom_id)
        if off is None:
            return None
        self._f.seek(off)
        obj = orjson.loads(self._f.readline())
        return obj if isinstance(obj, dict) else None

    def close(self) -> None:
        self._f.close()


# -- the adapter ----------------------------------------------------------------------------------------------


@register
class OpenAIBatch:
    name: ClassVar[str] = "openai_batch"
    description: ClassVar[str] = "OpenAI Batch API input and/or output JSONL (joined by custom_id)"

    def __init__(self, account_id: str | None = None, input_path: Path | None = None) -> None:
        self.account_id = account_id  # batch files carry no account: set it when you know whose batch it is
        self.input_path = input_path

    def sniff(self, head: list[bytes]) -> bool:
        for line in head:
            try:
                d = orjson.loads(line)
            except orjson.JSONDecodeError:
                # A head line is cut at 1 MiB: a huge request may not parse, so look at its keys' bytes.
                start = line[:4096]
                return b'"custom_id"' in start and (b'"body"' in start or b'"response"' in start)
            return isinstance(d, dict) and _kind(d) is not None
        return False

    def records(self, path: Path) -> Iterator[RawRecord]:
        if self._file_kind(path) == "output":
            yield from self._output_records(path)
        else:
            yield from self._input_records(path)

    # -- which side of the batch a file is
    def _file_kind(self, path: Path) -> str:
        with open_bytes(path) as f:
            for i, line in enumerate(f):
                if i >= 5:
                    break
                try:
                    d = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(d, dict) and (k := _kind(d)) is not None:
                    return k
        m = list(_ROLE_WORD.finditer(path.name))
        return "output" if m and m[-1].group(1).lower() != "input" else "input"

    def _account(self, data: dict[str, Any], attrs: dict[str, str], batch: str) -> None:
        user = data.get("end_user")
        if self.account_id:
            data["account_id"], attrs["account_source"] = self.account_id, "override"
        elif isinstance(user, str) and user:
            data["account_id"], attrs["account_source"] = user, "user"
        else:
            data["account_id"], attrs["account_source"] = batch, "file"

    # -- output (and error) files: the join
    def _output_records(self, path: Path) -> Iterator[RawRecord]:
        batch = batch_name(path)
        mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        inp = self.input_path
        if inp is None:
            pairs = _paired(path, ("input",))
            inp = pairs[0] if pairs else None
        index = _InputIndex(inp) if inp is not None else None
        try:
            for lineno, obj, raw, err in iter_json_lines(path):
                if err is not None:
                    yield RawRecord(lineno, None, err, raw)
                    continue
                try:
                    yield RawRecord(lineno, self._map_output(obj, index, batch, mtime))
                except MapError as e:
                    yield RawRecord(lineno, None, str(e), orjson.dumps(obj))
        finally:
            if index is not None:
                index.close()

    def _map_output(self, obj: Any, index: _InputIndex | None, batch: str, mtime: datetime) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise MapError(f"expected a JSON object, got {type(obj).__name__}")
        cid = obj.get("custom_id")
        if not isinstance(cid, str) or not cid:
            raise MapError("custom_id: missing or not a string")
        data: dict[str, Any] = {}
        attrs: dict[str, str] = {"batch": batch, "custom_id": cid}
        req = index.get(cid) if index is not None else None
        if req is not None:
            url = req.get("url")
            data.update(request_fields(req.get("body"), url if isinstance(url, str) else None, "input body"))
            attrs.update(data.pop("attributes", {}))
        else:
            attrs["request"] = "missing"  # no input file, or the id is not in it: response-side fields only
        meta: dict[str, Any] = {}
        resp = obj.get("response")
        if resp is not None:
            if not isinstance(resp, dict):
                raise MapError(f"response: expected an object or null, got {type(resp).__name__}")
            data["status"] = resp.get("status_code") or 200
            if isinstance(resp.get("request_id"), str):
                attrs["request_id"] = resp["request_id"]
            rbody = resp.get("body")
            if isinstance(rbody, dict) and isinstance(rbody.get("error"), dict):
                e = rbody["error"]  # a 4xx/5xx body: {"error": {"message", "type", "code"}}
                data["error"] = str(e.get("code") or e.get("type") or e.get("message") or "error")
            elif rbody is not None:
                fields, meta = response_fields(rbody)
                data.update(fields)
        err = obj.get("error")
        if err is not None:
            code = err.get("code") or err.get("message") if isinstance(err, dict) else err
            data["error"] = str(code or "error")
            if resp is None:
                data["status"] = 500  # failed before any HTTP answer (e.g. batch_expired)
        served = meta.get("model")
        if not data.get("model"):
            data["model"] = served
        elif isinstance(served, str) and served != data["model"]:
            attrs["response_model"] = served
        if not data.get("model"):
            raise MapError("model: neither the input body nor the response body names a model")
        if "endpoint" not in data:
            data["endpoint"] = _OBJECT_ENDPOINT.get(str(meta.get("object")), "/v1/chat/completions")
        if isinstance(meta.get("system_fingerprint"), str):
            attrs["system_fingerprint"] = meta["system_fingerprint"]
        if isinstance(meta.get("id"), str):
            attrs["response_id"] = meta["id"]
        oid = obj.get("id")
        data["exchange_id"] = oid if isinstance(oid, str) and oid else f"{batch}:{cid}"
        if "created" in meta:
            data["ts"] = epoch_seconds(meta["created"], "response.body.created")
        else:
            data["ts"], attrs["ts_source"] = mtime, "file_mtime"
        self._account(data, attrs, batch)
        data["attributes"] = attrs
        return data

    # -- input files: request-only exchanges for the requests no output file answers
    def _input_records(self, path: Path) -> Iterator[RawRecord]:
        batch = batch_name(path)
        mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        answered: set[str] = set()
        for out in _paired(path, ("output", "errors", "error")):
            for _lineno, obj, _raw, _err in iter_json_lines(out):
                cid = obj.get("custom_id") if isinstance(obj, dict) else None
                if isinstance(cid, str):
                    answered.add(cid)
        for lineno, obj, raw, err in iter_json_lines(path):
            if err is not None:
                yield RawRecord(lineno, None, err, raw)
                continue
            try:
                data = self._map_input(obj, batch, mtime, answered)
            except MapError as e:
                yield RawRecord(lineno, None, str(e), orjson.dumps(obj))
                continue
            if data is not None:
                yield RawRecord(lineno, data)

    def _map_input(self, obj: Any, batch: str, mtime: datetime, answered: set[str]) -> dict[str, Any] | None:
        if not isinstance(obj, dict):
            raise MapError(f"expected a JSON object, got {type(obj).__name__}")
        cid = obj.get("custom_id")
        if not isinstance(cid, str) or not cid:
            raise MapError("custom_id: missing or not a string")
        if cid in answered:
            return None  # the output (or error) file next to this one carries this request, joined
        url = obj.get("url")
        data = request_fields(obj.get("body"), url if isinstance(url, str) else None)
        if not data.get("model"):
            raise MapError("body.model: missing")
        attrs: dict[str, str] = {"batch": batch, "custom_id": cid, "ts_source": "file_mtime"}
        attrs.update(data.pop("attributes", {}))
        data["exchange_id"] = f"{batch}:{cid}"
        data["ts"] = mtime
        self._account(data, attrs, batch)
        data["attributes"] = attrs
        return data


def _kind(d: dict[str, Any]) -> str | None:
    """'input', 'output' or None for one parsed batch line."""
    if "custom_id" not in d or ("exchange_id" in d and "account_id" in d):
        return None
    if {"method", "url", "body"} <= d.keys():
        return "input"
    if "response" in d or "error" in d:
        return "output"
    return None
