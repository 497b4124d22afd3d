"""KYC tier rules applied to a request body, the limiter's descriptors and the token reservation.

A rule a tier forbids is a 403 (`PermissionDeniedError` in the SDKs) whose code and param name the rule
(`model_not_allowed`, `feature_not_allowed` on `logprobs` ...); a value that is malformed whatever the
tier is a 400.
"""

from __future__ import annotations

import math
from typing import Any

from distillguard.gateway.config import GatewayConfig, TierConfig
from distillguard.gateway.errors import GatewayError, bad_request, forbidden
from distillguard.gateway.hooks import Descriptor
from distillguard.gateway.identity import ResolvedKey

# Rough prompt size in tokens: ~4 characters per token for English text. Admission only needs an
# upper-ish estimate; reconcile corrects it with the real usage.
CHARS_PER_TOKEN = 4


def _int(body: dict[str, Any], name: str, lo: int = 0) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad_request(f"'{name}' must be an integer, got {type(v).__name__}", name, "invalid_type")
    if v < lo:
        raise bad_request(f"'{name}' must be >= {lo}, got {v}", name, "invalid_value")
    return v


def requested_max_tokens(endpoint: str, body: dict[str, Any]) -> int | None:
    if endpoint == "/v1/responses":
        return _int(body, "max_output_tokens", 1)
    mct = _int(body, "max_completion_tokens", 1)
    return mct if mct is not None else _int(body, "max_tokens", 1)


def _wants_reasoning(endpoint: str, body: dict[str, Any]) -> bool:
    if body.get("reasoning_effort") not in (None, "none"):
        return True
    r = body.get("reasoning")
    if isinstance(r, dict):
        return r.get("effort") not in (None, "none") or r.get("summary") not in (None, "none")
    if endpoint == "/v1/responses":
        inc = body.get("include")
        return isinstance(inc, list) and any(isinstance(i, str) and i.startswith("reasoning") for i in inc)
    return False


def _wants_logprobs(endpoint: str, body: dict[str, Any]) -> bool:
    lp = body.get("logprobs")
    if endpoint == "/v1/completions":
        return lp is not None and lp is not False  # an int: how many alternatives
    # typed like max_tokens: a string here used to raise TypeError (a 500; found by tests/gateway/test_abuse.py)
    if lp is True or (_int(body, "top_logprobs") or 0) > 0:
        return True
    inc = body.get("include")
    return isinstance(inc, list) and any(isinstance(i, str) and "logprobs" in i for i in inc)


def enforce_tier(tier_name: str, tier: TierConfig, endpoint: str, body: dict[str, Any]) -> None:
    """Raise a GatewayError naming the first rule of `tier` that `body` breaks."""
    model = body["model"]
    if not tier.allows_model(model):
        raise forbidden(
            f"Your tier '{tier_name}' does not allow the model '{model}' "
            f"(allowed: {', '.join(tier.models)}). Verify your organisation to unlock more models.",
            "model_not_allowed",
            "model",
        )
    if endpoint == "/v1/embeddings":
        return
    n = _int(body, "n", 1) or 1
    if endpoint == "/v1/completions":
        n = max(n, _int(body, "best_of", 1) or 1)
    if n > tier.max_n:
        raise forbidden(
            f"Your tier '{tier_name}' allows at most n={tier.max_n} completions per request (asked {n}).",
            "feature_not_allowed",
            "n",
        )
    mt = requested_max_tokens(endpoint, body)
    if tier.max_tokens is not None and mt is not None and mt > tier.max_tokens:
        param = "max_output_tokens" if endpoint == "/v1/responses" else "max_tokens"
        raise forbidden(
            f"Your tier '{tier_name}' allows at most {tier.max_tokens} output tokens per request "
            f"(asked {mt}).",
            "max_tokens_exceeds_tier",
            param,
        )
    if not tier.logprobs and _wants_logprobs(endpoint, body):
        raise forbidden(
            f"Your tier '{tier_name}' does not allow logprobs.", "feature_not_allowed", "logprobs"
        )
    if not tier.reasoning and _wants_reasoning(endpoint, body):
        raise forbidden(
            f"Your tier '{tier_name}' does not allow reasoning output; verify your organisation to use it.",
            "feature_not_allowed",
            "reasoning_effort" if "reasoning_effort" in body else "reasoning",
        )


def estimate_tokens(
    endpoint: str, body: dict[str, Any], body_len: int, tier: TierConfig, cfg: GatewayConfig
) -> int:
    """Tokens to reserve: the prompt (from the body's size) plus every completion the request may produce."""
    prompt = body_len // CHARS_PER_TOKEN + 1
    if endpoint == "/v1/embeddings":
        return prompt
    n = body.get("n") if isinstance(body.get("n"), int) else 1
    mt = requested_max_tokens(endpoint, body) or tier.max_tokens or cfg.default_max_tokens
    return prompt + mt * max(1, int(n or 1))


def descriptors(key: ResolvedKey, tier: TierConfig, client_ip: str | None) -> list[Descriptor]:
    ids = {"key": key.key_id, "account": key.account_id, "org": key.org_id, "ip": client_ip}
    out = []
    for kind, q in tier.quotas.items():
        ident = ids.get(kind)
        if ident:
            out.append(Descriptor(kind, ident, q.rpm, q.tpm, q.tpd))
    return out


def check_shape(endpoint: str, body: dict[str, Any]) -> None:
    """The few fields every upstream needs, checked here so the error names them (400)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("you must provide a model parameter (a non-empty string)", "model", "missing_model")
    if endpoint == "/v1/chat/completions":
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise bad_request("'messages' must be a non-empty array of messages", "messages")
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in msgs):
            raise bad_request("each message must be an object with a string 'role'", "messages")
    elif endpoint == "/v1/completions" and "prompt" not in body:
        raise bad_request("you must provide a prompt parameter", "prompt")
    elif endpoint in ("/v1/embeddings", "/v1/responses") and "input" not in body:
        raise bad_request("you must provide an input parameter", "input")
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise bad_request("'stream_options' must be an object", "stream_options")


def refuse_limit(
    reason: str | None, retry_after: float | None, headers: dict[str, str], oversize: bool = False
) -> GatewayError:
    """The 429 for a limiter's refusal, with its x-ratelimit-* headers and Retry-After."""
    h = {k.lower(): v for k, v in headers.items()}
    if retry_after and "retry-after" not in h:
        # Whole seconds, rounded up (the header takes an integer); the SDKs also read retry-after-ms.
        h["retry-after"] = str(max(1, math.ceil(retry_after)))
        h["retry-after-ms"] = str(max(1, int(retry_after * 1000)))
    what = reason or "quota exhausted"
    if oversize:
        msg = (
            f"Request too large for your rate limit ({what}); retrying will not help, send a smaller request."
        )
    else:
        wait = f" Retry after {retry_after:.1f} s." if retry_after else ""
        msg = f"Rate limit reached ({what}).{wait}"
    family = "tokens" if reason and reason.rsplit(" ", 1)[-1] in ("tpm", "tpd") else "requests"
    return GatewayError(429, msg, family, "rate_limit_exceeded", headers=h, reason=f"rate_limit: {what}")
