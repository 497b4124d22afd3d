"""Exchange records from OpenAI-shaped requests and responses (JSON bodies and SSE streams).

`request_record` maps a request body onto the `Exchange` fields (system prompt split from the messages,
sampling parameters); `ResponseAccumulator` folds a JSON response or a stream's events into the response
fields (text of the first choice, reasoning, finish reason, usage). Values the `Exchange` model would
reject are left to `audit.final_line`, which moves them into `attributes`.
"""

from __future__ import annotations

from typing import Any

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
