"""LiteLLM proxy spend logs: rows of the `LiteLLM_SpendLogs` table, exported as JSONL, a JSON array or CSV.

Layouts (told apart by the first non-blank byte: `{` JSONL, `[` array, anything else CSV):

* JSONL, one row object per line.
* A JSON array of row objects (what `/spend/logs` and the UI export). It is streamed element by element
  with the standard library's C decoder over a sliding buffer, so memory is bounded by the largest row,
  not the file. One element may be at most 256 MiB. A corrupt element is quarantined and reading resumes
  at the next element that starts a line at the same indentation (one element per line, or pretty
  printed); in a single-line array nothing after a corrupt element can be recovered, and the quarantine
  says so. Row numbers are the file line where the element starts.
* CSV with a header row (database / UI exports), read with the stdlib `csv` module; JSON columns arrive as
  strings and are parsed, empty cells are nulls. The csv module's per-field limit is raised (never
  lowered) to 1 GiB for the process, since prompts and responses can be huge.

Field mapping (SpendLogs column -> Exchange):

  request_id                      exchange_id
  startTime                       ts; endTime - startTime -> latency_ms (else request_duration_ms)
  model_group, else proxy_server_request.model, else model
                                  model: the public model name the client asked for; the deployment
                                  (`model`) goes to attribute litellm_model when it differs
  user, metadata.user_api_key_user_id, team_id, metadata.user_api_key_team_id, api_key
                                  account_id, first non-empty in that order (attribute account_source
                                  names the column). `api_key` comes last so that proxies using bare
                                  virtual keys still get an account per key.
  organization_id, metadata.user_api_key_org_id, team_id, metadata.user_api_key_team_id
                                  org_id, first non-empty
  api_key                         api_key_id (LiteLLM stores the hashed token, never the key)
  end_user (else the request's `user`)
                                  end_user
  requester_ip_address (else metadata.requester_ip_address)
                                  client_ip
  metadata.headers user-agent     user_agent
  proxy_server_request            the request body: sampling parameters (temperature, top_p, max_tokens,
                                  n, logprobs, tools, reasoning_effort, ...) and messages
  messages                        request messages (a list, a JSON string, or `{}`/empty when prompt
                                  logging is off; then the body's messages are used, if any); system
                                  messages -> system_prompt
  response                        choices[0].message.content -> response_text, reasoning, finish_reason,
                                  usage.completion_tokens_details.reasoning_tokens
  prompt_tokens, completion_tokens
                                  the same, taking precedence over the response's usage
  status                          "success" -> 200; "failure" -> metadata.error_information.error_code when
                                  it is an HTTP code, else 500; error = error_class (or code, or message)
  call_type                       endpoint (acompletion -> /v1/chat/completions, aembedding ->
                                  /v1/embeddings, atext_completion -> /v1/completions, aresponses ->
                                  /v1/responses, anthropic_messages -> /v1/messages) and attribute call_type
  completionStartTime             attribute ttft_ms (time to first token)
  spend, cache_hit, session_id, request_tags, model_id, api_base, custom_llm_provider,
  metadata.user_api_key_alias     attributes
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Generator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, BinaryIO, ClassVar, cast

import orjson

from distillguard.ingest.base import RawRecord, iter_json_lines, open_bytes, register
from distillguard.ingest.openai_batch import MapError, request_fields, response_fields, split_system

__all__ = ["LiteLLMSpendLogs", "iter_csv_rows", "iter_json_array", "map_row"]

_JSON_COLUMNS = ("metadata", "messages", "response", "proxy_server_request", "request_tags")
_SURROGATE = re.compile("[\udc80-\udcff]")  # undecodable bytes, kept by errors="surrogateescape" (CSV)
_CSV_FIELD_LIMIT = 1 << 30
_CHUNK = 1 << 20
MAX_ELEMENT = 256 << 20  # largest JSON-array element read (the buffer never holds more than about this)
_NEAR_END = 64  # a decode error this close to the buffer's end may just be a cut-off token

_CALL_TYPE_ENDPOINT = (
    ("embedding", "/v1/embeddings"),
    ("text_completion", "/v1/completions"),
    ("responses", "/v1/responses"),
    ("anthropic_messages", "/v1/messages"),
    ("image_generation", "/v1/images/generations"),
    ("transcription", "/v1/audio/transcriptions"),
    ("speech", "/v1/audio/speech"),
    ("moderation", "/v1/moderations"),
    ("rerank", "/v1/rerank"),
)


@register
class LiteLLMSpendLogs:
    name: ClassVar[str] = "litellm"
    description: ClassVar[str] = (
        "LiteLLM proxy spend logs (LiteLLM_SpendLogs rows as JSONL, JSON array or CSV)"
    )

    def sniff(self, head: list[bytes]) -> bool:
        first = head[0].lstrip(b"\xef\xbb\xbf \t")
        if first.startswith(b"["):
            text = b"\n".join(head)
            return b'"request_id"' in text and any(k in text for k in (b'"call_type"', b'"startTime"'))
        if first.startswith(b"{"):
            try:
                d = orjson.loads(first)
            except orjson.JSONDecodeError:
                start = first[:4096]  # a head line is cut at 1 MiB: judge a huge row by its first keys
                return b'"request_id"' in start and (b'"call_type"' in start or b'"startTime"' in start)
            return _is_row(d)
        try:
            header = next(csv.reader([first.decode("utf-8", "replace")]))
        except (csv.Error, StopIteration):
            return False
        cols = {h.strip() for h in header}
        return "request_id" in cols and ("call_type" in cols or "startTime" in cols)

    def records(self, path: Path) -> Iterator[RawRecord]:
        layout = _layout(path)
        rows = (
            iter_json_lines(path)
            if layout == "jsonl"
            else iter_json_array(path)
            if layout == "array"
            else iter_csv_rows(path)
        )
        for lineno, obj, raw, err in rows:
            if err is not None:
                yield RawRecord(lineno, None, err, raw)
                continue
            try:
                yield RawRecord(lineno, map_row(obj))
            except MapError as e:
                yield RawRecord(
                    lineno, None, str(e), raw if raw is not None else orjson.dumps(obj, default=str)
                )


def _is_row(d: Any) -> bool:
    return (
        isinstance(d, dict)
        and "request_id" in d
        and ("call_type" in d or "startTime" in d)
        and not ("exchange_id" in d and "account_id" in d)
    )


def _layout(path: Path) -> str:
    with open_bytes(path) as f:
        while chunk := f.read(4096):
            s = chunk.lstrip(b"\xef\xbb\xbf \t\r\n")
            if s:
                return "array" if s[:1] == b"[" else "jsonl" if s[:1] == b"{" else "csv"
    return "jsonl"


# -- row mapping -----------------------------------------------------------------------------------------------


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _first(*pairs: tuple[str, Any]) -> tuple[str, Any] | None:
    for name, v in pairs:
        if not _blank(v):
            return name, v
    return None


def _json_col(row: dict[str, Any], col: str) -> Any:
    """A JSON column: already structured (JSON exports) or a JSON string (CSV and some DB dumps)."""
    v = row.get(col)
    if not isinstance(v, str):
        return v
    if not v.strip():
        return None
    try:
        return orjson.loads(v)
    except orjson.JSONDecodeError:
        if col == "messages":
            return v  # a bare prompt string (text completions)
        raise MapError(f"{col}: not valid JSON") from None


def _ts(v: Any, col: str) -> datetime:
    if isinstance(v, str):
        try:
            t = datetime.fromisoformat(v.strip())
        except ValueError:
            raise MapError(f"{col}: not an ISO 8601 timestamp: {v!r:.40}") from None
    elif isinstance(v, int | float) and not isinstance(v, bool):
        t = datetime.fromtimestamp(v / 1000 if v > 1e11 else v, UTC)  # epoch seconds or milliseconds
    else:
        raise MapError(f"{col}: expected a timestamp, got {type(v).__name__}")
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _endpoint(call_type: str) -> str:
    for key, ep in _CALL_TYPE_ENDPOINT:
        if key in call_type:
            return ep
    return "/v1/chat/completions"


def _user_agent(meta: dict[str, Any]) -> str | None:
    headers = meta.get("headers")
    if isinstance(headers, dict):
        for k, v in headers.items():
            if isinstance(k, str) and k.lower() == "user-agent" and isinstance(v, str):
                return v
    return None


def _status(row: dict[str, Any], meta: dict[str, Any]) -> tuple[int, str | None]:
    info = meta.get("error_information")
    info = info if isinstance(info, dict) else {}
    status_col = str(row.get("status") or "").strip().lower()
    if status_col:
        failed = status_col in ("failure", "failed", "error")
    else:  # older rows have no status column: an error record in the metadata says it failed
        failed = any(info.get(k) for k in ("error_code", "error_class", "error_message"))
    if not failed:
        return 200, None
    code = info.get("error_code")
    digits = str(code) if code is not None else ""
    status = int(digits) if digits.isdigit() and 100 <= int(digits) <= 599 else 500
    error = info.get("error_class") or code or info.get("error_message") or "failure"
    return status, str(error)[:500]


def map_row(row: Any) -> dict[str, Any]:
    """Exchange fields of one SpendLogs row (raises MapError naming the column it cannot map)."""
    if not isinstance(row, dict):
        raise MapError(f"expected a row object, got {type(row).__name__}")
    rid = row.get("request_id")
    if _blank(rid):
        raise MapError("request_id: missing")
    if _blank(row.get("startTime")):
        raise MapError("startTime: missing")
    start = _ts(row["startTime"], "startTime")
    meta = _json_col(row, "metadata") or {}
    if not isinstance(meta, dict):
        raise MapError(f"metadata: expected a JSON object, got {type(meta).__name__}")
    psr = _json_col(row, "proxy_server_request") or {}
    if not isinstance(psr, dict):
        raise MapError(f"proxy_server_request: expected a JSON object, got {type(psr).__name__}")
    call_type = str(row.get("call_type") or "")
    data = request_fields(psr, _endpoint(call_type), "proxy_server_request")
    attrs: dict[str, str] = data.pop("attributes", {})

    msgs = _json_col(row, "messages")
    if isinstance(msgs, list) and msgs:
        sp, data["messages"] = split_system(msgs, "messages")
        if sp is not None:
            data["system_prompt"] = sp
    elif isinstance(msgs, str) and msgs.strip():
        data["messages"] = [{"role": "user", "content": msgs}]
    # else: {} / [] / null -- prompt logging was off; the body's messages (if any) stand

    resp = _json_col(row, "response")
    if isinstance(resp, dict) and resp:
        fields, _meta = response_fields(resp, "response")
        data.update(fields)
    for col in ("prompt_tokens", "completion_tokens"):
        if not _blank(row.get(col)):
            data[col] = row[col]

    picked = _first(
        ("model_group", row.get("model_group")), ("model", psr.get("model")), ("model", row.get("model"))
    )
    if picked is None:
        raise MapError("model: model_group, model and proxy_server_request.model are all empty")
    data["model"] = picked[1]
    if not _blank(row.get("model")) and row["model"] != picked[1]:
        attrs["litellm_model"] = str(row["model"])

    acct = _first(
        ("user", row.get("user")),
        ("user_api_key_user_id", meta.get("user_api_key_user_id")),
        ("team_id", row.get("team_id")),
        ("user_api_key_team_id", meta.get("user_api_key_team_id")),
        ("api_key", row.get("api_key")),
    )
    if acct is None:
        raise MapError(
            "account: user, metadata.user_api_key_user_id, team_id, metadata.user_api_key_team_id "
            "and api_key are all empty"
        )
    attrs["account_source"], data["account_id"] = acct
    org = _first(
        ("", row.get("organization_id")),
        ("", meta.get("user_api_key_org_id")),
        ("", row.get("team_id")),
        ("", meta.get("user_api_key_team_id")),
    )
    if org is not None:
        data["org_id"] = org[1]
    key = _first(("", row.get("api_key")), ("", meta.get("user_api_key")))
    if key is not None:
        data["api_key_id"] = key[1]
    if not _blank(row.get("end_user")):
        data["end_user"] = row["end_user"]
    ip = _first(("", row.get("requester_ip_address")), ("", meta.get("requester_ip_address")))
    if ip is not None:
        data["client_ip"] = ip[1]
    if (ua := _user_agent(meta)) is not None:
        data["user_agent"] = ua

    data["exchange_id"] = rid
    data["ts"] = start
    if not _blank(row.get("endTime")):
        end = _ts(row["endTime"], "endTime")
        if end >= start:
            data["latency_ms"] = (end - start) / timedelta(milliseconds=1)
    elif not _blank(row.get("request_duration_ms")):
        data["latency_ms"] = row["request_duration_ms"]
    if not _blank(row.get("completionStartTime")):
        first_token = _ts(row["completionStartTime"], "completionStartTime")
        if first_token >= start:
            attrs["ttft_ms"] = f"{(first_token - start) / timedelta(milliseconds=1):g}"
    data["status"], data["error"] = _status(row, meta)

    attrs["call_type"] = call_type
    for col in ("spend", "cache_hit", "session_id", "model_id", "api_base", "custom_llm_provider"):
        if not _blank(row.get(col)):
            attrs[col] = str(row[col])
    tags = _json_col(row, "request_tags")
    if tags:
        attrs["request_tags"] = orjson.dumps(tags).decode()
    if isinstance(meta.get("user_api_key_alias"), str):
        attrs["key_alias"] = meta["user_api_key_alias"]
    data["attributes"] = attrs
    return data


# -- JSON array, streamed ---------------------------------------------------------------------------------------


class _ArrayReader:
    """A sliding text buffer over a byte stream, for `iter_json_array`."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.dec = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.buf = ""
        self.pos = 0  # next unread character of buf
        self.line = 1  # file line of buf[pos]
        self.eof = False

    def more(self) -> bool:
        """Read more text: as much again as the pending element, so a huge one is re-parsed a few times only."""
        if self.eof:
            return False
        if self.pos > len(self.buf) // 2:  # drop the consumed prefix only now and then: copies stay linear
            self.buf = self.buf[self.pos :]
            self.pos = 0
        b = self.f.read(max(_CHUNK, min(len(self.buf) - self.pos, 64 << 20)))
        if not b:
            self.eof = True
            self.buf += self.dec.decode(b"", final=True)
            return False
        self.buf += self.dec.decode(b)
        return True

    def skip_ws(self) -> str:
        """The next non-whitespace character ('' at the end of the file), not consumed."""
        while True:
            n = len(self.buf)
            i = self.pos
            while i < n and self.buf[i] in " \t\r\n\ufeff":
                i += 1
            self.line += self.buf.count("\n", self.pos, i)
            self.pos = i
            if i < n:
                return self.buf[i]
            if not self.more():
                return ""

    def advance(self, end: int) -> None:
        self.line += self.buf.count("\n", self.pos, end)
        self.pos = end


def iter_json_array(path: Path) -> Iterator[tuple[int, Any, bytes | None, str | None]]:
    """(line, element or None, raw bytes when bad, error) for each element of a top-level JSON array."""
    decoder = json.JSONDecoder()
    with open_bytes(path) as f:
        r = _ArrayReader(f)
        if r.skip_ws() != "[":
            yield (
                r.line,
                None,
                r.buf[r.pos : r.pos + 200].encode("utf-8", "surrogateescape"),
                "not a JSON array",
            )
            return
        r.advance(r.pos + 1)
        index = 0
        expect_comma = False
        while True:
            c = r.skip_ws()
            if c == "":
                yield r.line, None, None, f"truncated JSON array: no closing ']' after element {index}"
                return
            if c == "]":
                return
            if expect_comma:
                expect_comma = False
                if c != ",":
                    if not (yield from _corrupt(r, f"expected ',' or ']' after element {index}")):
                        return
                    continue
                r.advance(r.pos + 1)
                if r.skip_ws() == "":
                    continue  # reported as truncated at the top of the loop
            index += 1
            line = r.line
            msg = None
            while True:
                try:
                    # The C decoder finds where the element ends; more text is read while it may be cut off.
                    _, end = decoder.raw_decode(r.buf, r.pos)
                    break
                except json.JSONDecodeError as e:
                    maybe_cut = e.msg.startswith("Unterminated string") or e.pos >= len(r.buf) - _NEAR_END
                    if maybe_cut and len(r.buf) - r.pos <= MAX_ELEMENT and r.more():
                        continue
                    if len(r.buf) - r.pos > MAX_ELEMENT:
                        msg = f"element {index} is larger than {MAX_ELEMENT >> 20} MiB"
                    elif r.eof and maybe_cut:
                        msg = f"truncated JSON array: element {index} is cut off ({e.msg})"
                    else:
                        msg = f"invalid JSON in element {index}: {e.msg}"
                    break
            if msg is not None:
                if not (yield from _corrupt(r, msg)):
                    return
                continue
            expect_comma = True
            text = r.buf[r.pos : end]
            r.advance(end)
            try:
                # Parsed again by orjson: the same strictness as JSONL (no lone surrogates, valid UTF-8).
                obj = orjson.loads(text)
            except orjson.JSONDecodeError as e:
                reason = "not valid UTF-8" if "utf-8" in str(e).lower() else f"invalid JSON: {e}"
                yield line, None, text.encode("utf-8", "surrogateescape"), f"element {index}: {reason}"
                continue
            if not isinstance(obj, dict):
                yield (
                    line,
                    None,
                    text.encode(),
                    f"element {index}: expected an object, got {type(obj).__name__}",
                )
                continue
            yield line, obj, None, None


def _corrupt(r: _ArrayReader, msg: str) -> Generator[tuple[int, Any, bytes | None, str | None], None, bool]:
    """Report a bad element, then resume at the next line that starts an element at the same indentation.

    Returns False when there is no such line (the rest of the file is then consumed and reported).
    """
    line = r.line
    nl = r.buf.rfind("\n", 0, r.pos)
    prefix = r.buf[nl + 1 : r.pos]
    # Elements that start their own line (pretty printed, or one per line) can be found again; the first
    # element may share its line with the opening bracket.
    indent = prefix.replace("[", "") if not prefix.strip(" \t[") else None
    nxt = -1
    if indent is not None:
        marker = "\n" + indent + "{"
        while (nxt := r.buf.find(marker, r.pos)) < 0 and len(r.buf) - r.pos <= MAX_ELEMENT and r.more():
            pass
    stop = nxt if nxt >= 0 else len(r.buf)
    raw = r.buf[r.pos : min(stop, r.pos + (1 << 20))].encode("utf-8", "surrogateescape")
    if nxt < 0:
        yield line, None, raw, f"{msg}; the rest of the array cannot be recovered"
        r.advance(len(r.buf))
        while r.more():  # consume (not keep) the rest, so that line counts stay right
            r.advance(len(r.buf))
        return False
    yield line, None, raw, msg
    r.advance(nxt + 1 + len(indent or ""))
    return True


# -- CSV ------------------------------------------------------------------------------------------------------------


def iter_csv_rows(path: Path) -> Iterator[tuple[int, Any, bytes | None, str | None]]:
    """(line, row dict or None, raw bytes when bad, error) for each CSV record; empty cells become None."""
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    with open_bytes(path) as fb:
        text = io.TextIOWrapper(
            cast(BinaryIO, fb), encoding="utf-8-sig", errors="surrogateescape", newline=""
        )
        reader = csv.reader(text)
        try:
            header = next(reader)
        except StopIteration:
            return
        header = [h.strip() for h in header]
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield start, None, None, f"unreadable CSV record: {e}"
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                yield (
                    start,
                    None,
                    _csv_raw(row),
                    f"CSV record has {len(row)} fields, the header has {len(header)}",
                )
                continue
            if any(_SURROGATE.search(v) for v in row):
                yield start, None, _csv_raw(row), "not valid UTF-8"
                continue
            yield start, {k: (v if v != "" else None) for k, v in zip(header, row, strict=True)}, None, None


def _csv_raw(row: list[str]) -> bytes:
    s = io.StringIO()
    csv.writer(s).writerow(row)
    return s.getvalue().encode("utf-8", "surrogateescape")
