"""The gateway's watermark hook: each account's outputs carry that account's mark (`[gateway.watermark]`).

Two ways, by upstream:

- `upstream` (a self-hosted model server running distillguard's vLLM logits processor,
  forensics/vllm.py): the forwarded body gets `vllm_xargs[dg_watermark] = "<scheme>:<epoch>:<account>"`
  (and, optionally, the same value in a request header). Only the account id and the key epoch travel:
  the model server derives the account key from the provider secret it holds, so no key material passes
  through the gateway or its logs. A client's own `vllm_xargs[dg_watermark]` is removed first: a client
  must never choose the key its outputs are marked with (it could mark them as another account's).
- `lexical` (black-box upstreams): the gateway applies the keyed synonym watermark
  (`forensics.lexical.LexicalWatermarker`) to the response text itself: whole JSON bodies, and SSE
  streams choice by choice through the watermarker's streamer (a few words held back, never the
  stream). The audit record is built from the marked text, i.e. what the client received. Token
  logprobs are withheld in this mode: they would spell out the unmarked text. JSON-mode and
  schema-bound output (`response_format`, Responses `text.format`) is left alone
  (`watermark.skipped=structured_output`): a swapped word could break the client's schema.

Every marked exchange records `watermark` (the mode), `watermark.key` (the key's label, `account@epoch`,
never the key) and `watermark.scheme` in its audit attributes; `watermark.client_arg=removed` records a
client that tried to set the argument itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from distillguard.gateway.config import WatermarkConfig

if TYPE_CHECKING:
    from distillguard.forensics.keys import ProviderSecret, WatermarkKey
    from distillguard.forensics.lexical import TextStreamer, TextWatermark

__all__ = ["LexicalMarker", "WatermarkHook", "WatermarkPlan"]

_CACHE = 4096  # accounts whose lexical watermarker is kept built
_CHUNK_KEYS: tuple[str, ...] = ("id", "object", "created", "model")


@dataclass(slots=True)
class WatermarkPlan:
    """What the hook decided for one request: extra upstream header bytes, a response marker."""

    body_changed: bool = False
    header: bytes = b""
    marker: LexicalMarker | None = None


@dataclass(slots=True)
class LexicalMarker:
    """Marks one response: a JSON body at once, or a stream's events with one streamer per text part."""

    endpoint: str
    wm: TextWatermark
    streams: dict[Hashable, TextStreamer] = field(default_factory=dict)
    done: set[Hashable] = field(default_factory=set)
    emitted: dict[Hashable, str] = field(default_factory=dict)  # Responses: marked text per (item, part)
    last: dict[str, Any] = field(default_factory=dict)  # the last chunk (its id, object, created, model)

    # -- JSON bodies --------------------------------------------------------------------------------
    def mark_json(self, obj: Any) -> bool:
        """Mark the text of every choice (or output message) in place; True when `obj` changed."""
        if not isinstance(obj, dict):
            return False
        if self.endpoint == "/v1/responses":
            return self._mark_output(obj.get("output"))
        changed = False
        for ch in obj.get("choices") or []:
            if not isinstance(ch, dict):
                continue
            msg = ch.get("message")
            if isinstance(msg, dict) and isinstance(msg.get("content"), str):
                msg["content"] = self.wm.apply(msg["content"])
                changed = True
            elif isinstance(ch.get("text"), str):
                ch["text"] = self.wm.apply(ch["text"])
                changed = True
            if ch.get("logprobs") is not None:
                ch["logprobs"] = None  # they would spell out the unmarked tokens
                changed = True
        return changed

    def _mark_output(self, output: Any) -> bool:
        """Responses `output` items: message text parts marked (with the streamed text when there was one)."""
        changed = False
        for item in output if isinstance(output, list) else []:
            if not isinstance(item, dict) or item.get("type") != "message":
                continue
            for j, part in enumerate(item.get("content") or []):
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    done = self.emitted.get((item.get("id"), j))
                    part["text"] = done if done is not None else self.wm.apply(part["text"])
                    part.pop("logprobs", None)
                    changed = True
        return changed

    # -- SSE events ---------------------------------------------------------------------------------
    def _stream(self, key: Hashable) -> TextStreamer:
        s = self.streams.get(key)
        if s is None:
            s = self.streams[key] = self.wm.streamer()
        return s

    def _rest(self, key: Hashable) -> str:
        self.done.add(key)
        s = self.streams.get(key)
        return s.flush() if s is not None else ""

    def mark_event(self, obj: Any) -> bool:
        """Mark one parsed stream event in place; True when it changed.

        Chat and completions: each choice's text delta goes through that choice's streamer, and the
        choice's last chunk (the one with its finish_reason) carries the streamer's held-back rest.
        Responses: `response.output_text.delta` per (item, part); the `.done` events and the final
        response carry the marked text.
        """
        if not isinstance(obj, dict):
            return False
        if self.endpoint == "/v1/responses":
            return self._mark_responses_event(obj)
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices:
            return False
        self.last = obj
        chat = self.endpoint == "/v1/chat/completions"
        changed = False
        for ch in choices:
            if not isinstance(ch, dict):
                continue
            if ch.get("logprobs") is not None:
                ch["logprobs"] = None
                changed = True
            idx = ch.get("index", 0)
            if not isinstance(idx, int) or idx in self.done:
                continue
            holder = ch.get("delta") if chat else ch
            if not isinstance(holder, dict):
                continue
            k = "content" if chat else "text"
            text = holder.get(k)
            out = self._stream(idx).feed(text) if isinstance(text, str) else None
            if ch.get("finish_reason"):
                rest = self._rest(idx)
                if rest:
                    out = (out or "") + rest
            if out is not None:
                holder[k] = out
                changed = True
        return changed

    def flush_events(self) -> list[dict[str, Any]]:
        """Chunks carrying the held-back text of choices whose stream ended without a finish_reason."""
        out: list[dict[str, Any]] = []
        if self.endpoint == "/v1/responses":
            return out
        for idx in [i for i in self.streams if i not in self.done]:
            rest = self._rest(idx)
            if not rest:
                continue
            if self.endpoint == "/v1/chat/completions":
                choice: dict[str, Any] = {"index": idx, "delta": {"content": rest}, "finish_reason": None}
            else:
                choice = {"index": idx, "text": rest, "finish_reason": None, "logprobs": None}
            base: dict[str, Any] = {k: self.last[k] for k in _CHUNK_KEYS if k in self.last}
            out.append({**base, "choices": [choice]})
        return out

    def _mark_responses_event(self, obj: dict[str, Any]) -> bool:
        t = obj.get("type")
        if t == "response.output_text.delta" and isinstance(obj.get("delta"), str):
            key = (obj.get("item_id"), obj.get("content_index", 0))
            obj["delta"] = self._stream(key).feed(obj["delta"])
            self.emitted[key] = self.emitted.get(key, "") + obj["delta"]
            obj.pop("logprobs", None)
            return True
        if t == "response.output_text.done" and isinstance(obj.get("text"), str):
            # the part's held-back rest reaches the client as part of the complete text here
            key = (obj.get("item_id"), obj.get("content_index", 0))
            if key in self.streams:
                self.emitted[key] = self.emitted.get(key, "") + self._rest(key)
            else:
                self.emitted[key] = self.wm.apply(obj["text"])
            obj["text"] = self.emitted[key]
            obj.pop("logprobs", None)
            return True
        if t == "response.content_part.done" and isinstance(obj.get("part"), dict):
            key = (obj.get("item_id"), obj.get("content_index", 0))
            part = obj["part"]
            if isinstance(part.get("text"), str):
                done = self.emitted.get(key)
                part["text"] = done if done is not None else self.wm.apply(part["text"])
                return True
            return False
        if t == "response.output_item.done" and isinstance(obj.get("item"), dict):
            return self._mark_output([obj["item"]])
        if isinstance(t, str) and t.startswith("response.") and isinstance(obj.get("response"), dict):
            return self._mark_output(obj["response"].get("output"))  # created, completed, incomplete
        return False


def _structured(body: dict[str, Any]) -> bool:
    """Whether the request asks for JSON output (chat/completions `response_format`, Responses `text.format`)."""
    fmt = body.get("response_format")
    text = body.get("text")
    if isinstance(text, dict) and fmt is None:
        fmt = text.get("format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


class WatermarkHook:
    """Per request: strip the client's watermark argument, add the account's, or set up a marker."""

    def __init__(
        self,
        cfg: WatermarkConfig,
        secret: ProviderSecret | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.mode = cfg.mode
        self.clock = clock
        self.routes = frozenset(cfg.routes)
        self._period_s = cfg.rotation_days * 86400.0 if cfg.rotation_days else None
        self._start_s = cfg.rotation_start.timestamp()
        self._lexical: Callable[[str, int], TextWatermark] | None = None
        self._secret: ProviderSecret | None = None
        if self.mode == "upstream":
            from distillguard.forensics.scheme import scheme_names

            if cfg.scheme not in scheme_names():
                raise ValueError(
                    f"[watermark] scheme {cfg.scheme!r} is not a watermark scheme; known: {scheme_names()}"
                )
        elif self.mode == "lexical":
            from distillguard.forensics.keys import ProviderSecret
            from distillguard.forensics.lexical import LexicalWatermarker

            self._secret = secret if secret is not None else ProviderSecret.load(cfg.secret_file)
            sec = self._secret

            @lru_cache(maxsize=_CACHE)
            def build(account_id: str, epoch: int) -> TextWatermark:
                w: TextWatermark = LexicalWatermarker(sec.account_key(account_id, epoch))
                return w

            self._lexical = build

    def epoch(self) -> int:
        """The key epoch now: fixed, or the rotation period's count since `rotation_start`."""
        if self._period_s is None:
            return self.cfg.epoch
        from distillguard.forensics.keys import current_epoch

        return current_epoch(self.clock(), period_s=self._period_s, start_s=self._start_s)

    def key(self, account_id: str) -> WatermarkKey:
        """The account's current key (lexical mode: the gateway holds the secret). For tests and tools."""
        if self._secret is None:
            raise ValueError("only lexical mode holds the provider secret in the gateway")
        return self._secret.account_key(account_id, self.epoch())

    def prepare(
        self, endpoint: str, account_id: str, body: dict[str, Any], rec: dict[str, Any]
    ) -> WatermarkPlan:
        """Change `body` for the upstream (in place) and say how to mark the response."""
        plan = WatermarkPlan()
        attrs = rec["attributes"]
        xargs = body.get("vllm_xargs")
        if isinstance(xargs, dict) and self.cfg.xargs_key in xargs:
            # the client may not choose (or forge) the key its outputs are marked with
            xargs.pop(self.cfg.xargs_key)
            if not xargs:
                del body["vllm_xargs"]
            attrs["watermark.client_arg"] = "removed"
            plan.body_changed = True
        if endpoint not in self.routes:
            return plan
        epoch = self.epoch()
        label = f"{account_id}@{epoch}"
        attrs["watermark"] = self.mode
        attrs["watermark.key"] = label
        if self.mode == "upstream":
            attrs["watermark.scheme"] = self.cfg.scheme
            value = f"{self.cfg.scheme}:{epoch}:{account_id}"
            xargs = body.get("vllm_xargs")
            # a non-object vllm_xargs from the client would be refused upstream anyway: ours replaces it
            body["vllm_xargs"] = {**(xargs if isinstance(xargs, dict) else {}), self.cfg.xargs_key: value}
            plan.body_changed = True
            if self.cfg.header:
                # percent-encoded: an account id can never add a header line
                plan.header = f"{self.cfg.header}: {quote(value, safe=':@')}\r\n".encode("ascii")
        elif self._lexical is not None:
            attrs["watermark.scheme"] = "lexical"
            if _structured(body):
                # JSON-mode or schema-bound output: a swapped word could break an enum or a schema
                attrs["watermark.skipped"] = "structured_output"
            else:
                plan.marker = LexicalMarker(endpoint, self._lexical(account_id, epoch))
        return plan
