"""The OpenAPI 3.1 document of the gateway, served at `/openapi.json`.

Hand-written and small: it describes what the gateway itself checks (the fields `policy.check_shape` and
`policy.enforce_tier` read, with the types they enforce) and leaves every other field open
(`additionalProperties`), because the gateway forwards those to the upstream untouched. The admin
request bodies are generated from admin.py's pydantic models, so they cannot drift from the code. The
document is checked against the OpenAPI 3.1 meta-schema in the tests (openapi-spec-validator) and
exercised by schemathesis (tests/gateway/test_abuse.py).
"""

from __future__ import annotations

import copy
from typing import Any

from distillguard.gateway.admin import PREFIX, AccountIn, KeyIn, OrgIn, RotateIn, TierIn

_REF_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*codes: str) -> dict[str, Any]:
    why = {
        "400": "Malformed request (the error's `param` names the field).",
        "401": "Missing, wrong, revoked or expired credentials.",
        "403": "Refused by policy (tier, jurisdiction, intel, risk).",
        "404": "Unknown path, model or id.",
        "405": "Wrong method.",
        "408": "The request body did not arrive within `server.body_timeout_s`.",
        "409": "Duplicate id, or the key is revoked.",
        "413": "Request body over the configured limit.",
        "429": "Rate limited (`Retry-After`, `x-ratelimit-*`).",
        "4XX": "A client error the upstream explained, relayed as it is.",
        "502": "The upstream failed or answered badly.",
        "503": "Not ready, audit log or identity store unavailable, upstream unavailable.",
        "504": "The upstream timed out.",
    }
    return {c: {"description": why[c], "content": _json(_REF_ERROR)} for c in codes}


_PROXY_ERRORS = ("400", "401", "403", "404", "408", "413", "429", "4XX", "502", "503", "504")
_ADMIN_ERRORS = ("400", "401", "413", "503")

_MODEL = {"type": "string", "minLength": 1, "description": "Checked against the caller's tier."}
_POS_INT = {"type": "integer", "minimum": 1}
# Fields the tier rules read, in the types they enforce (anything else is forwarded untouched).
_COMMON: dict[str, Any] = {
    "model": _MODEL,
    "stream": {"description": "true: Server-Sent Events, relayed event by event."},
    "stream_options": {"type": "object", "description": "`include_usage` is added upstream when absent."},
    "n": {**_POS_INT, "description": "At most the tier's `max_n`."},
    "max_tokens": {**_POS_INT, "description": "At most the tier's `max_tokens`."},
    "max_completion_tokens": _POS_INT,
    "top_logprobs": {"type": "integer", "minimum": 0, "description": "> 0 needs a tier with logprobs."},
}


def _body(required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": True,
        "content": _json(
            {"type": "object", "required": required, "properties": props, "additionalProperties": True}
        ),
    }


def _proxied(summary: str, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    ok: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if stream:
        # events are the upstream's chunks, relayed as they come (not described further)
        ok["text/event-stream"] = {"schema": {}}
    return {
        "post": {
            "summary": summary,
            "security": [{"apiKey": []}],
            "requestBody": body,
            "responses": {
                "200": {
                    "description": "The upstream's answer (JSON, or an SSE stream when `stream` is true).",
                    "headers": {"x-request-id": {"schema": {"type": "string"}}},
                    "content": ok,
                },
                **_errors(*_PROXY_ERRORS),
            },
        }
    }


def _model_schema(model: type[Any]) -> dict[str, Any]:
    s: dict[str, Any] = model.model_json_schema()
    s.pop("title", None)
    return s


def _admin_op(
    summary: str, action: str, ok: int, body: dict[str, Any] | None = None, path_id: str | None = None
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": action.replace(".", "_"),
        "security": [{"adminToken": []}],
        "responses": {
            str(ok): {"description": "Done.", "content": _json({"type": "object"})},
            **_errors(*_ADMIN_ERRORS),
        },
    }
    if path_id is not None:
        op["parameters"] = [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        ]
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    if path_id is not None or action in ("account.create", "key.create", "org.create"):
        op["responses"].update(_errors("404", "409"))
    return op


def _admin_paths() -> dict[str, Any]:
    p = PREFIX
    by_org = {"name": "org_id", "in": "query", "required": False, "schema": {"type": "string"}}
    by_acct = {"name": "account_id", "in": "query", "required": False, "schema": {"type": "string"}}
    list_orgs = _admin_op("List organisations", "org.list", 200)
    list_accounts = {**_admin_op("List accounts", "account.list", 200), "parameters": [by_org]}
    list_keys = {**_admin_op("List keys (ids and prefixes, never secrets)", "key.list", 200)}
    list_keys["parameters"] = [by_acct]
    rotate = _admin_op("Rotate a key (the old one works for grace_s)", "key.rotate", 201, None, "id")
    rotate["requestBody"] = {"required": False, "content": _json(_model_schema(RotateIn))}
    return {
        f"{p}/orgs": {
            "get": list_orgs,
            "post": _admin_op("Create an organisation", "org.create", 201, _model_schema(OrgIn)),
        },
        f"{p}/orgs/{{id}}/tier": {
            "put": _admin_op("Set an organisation's tier", "org.tier", 200, _model_schema(TierIn), "id")
        },
        f"{p}/accounts": {
            "get": list_accounts,
            "post": _admin_op("Create an account", "account.create", 201, _model_schema(AccountIn)),
        },
        f"{p}/accounts/{{id}}/tier": {
            "put": _admin_op("Set an account's tier", "account.tier", 200, _model_schema(TierIn), "id")
        },
        f"{p}/accounts/{{id}}/disable": {
            "post": _admin_op(
                "Disable an account (its keys stop working)", "account.disable", 200, None, "id"
            )
        },
        f"{p}/keys": {
            "get": list_keys,
            "post": _admin_op(
                "Create a key (the secret is in this response only)", "key.create", 201, _model_schema(KeyIn)
            ),
        },
        f"{p}/keys/{{id}}/rotate": {"post": rotate},
        f"{p}/keys/{{id}}/revoke": {
            "post": _admin_op("Revoke a key (refused everywhere within 1 s)", "key.revoke", 200, None, "id")
        },
        f"{p}/tiers": {"get": _admin_op("The configured KYC tiers", "tier.list", 200)},
    }


_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def _public_paths() -> dict[str, Any]:
    msg = {"type": "object", "required": ["role"], "properties": {"role": {"type": "string"}}}
    chat = _body(
        ["model", "messages"], {**_COMMON, "messages": {"type": "array", "minItems": 1, "items": msg}}
    )
    completions = _body(["model", "prompt"], {**_COMMON, "prompt": {}, "best_of": _POS_INT})
    embeddings = _body(["model", "input"], {"model": _MODEL, "input": {}})
    responses = _body(
        ["model", "input"],
        {**_COMMON, "input": {}, "max_output_tokens": _POS_INT, "reasoning": {}, "include": {}},
    )
    key: list[dict[str, list[str]]] = [{"apiKey": []}]
    text_ok = {"text/plain": {"schema": {"type": "string"}}}
    health = {
        "type": "object",
        "required": ["status", "ready"],
        "properties": {
            "status": {"enum": ["ok", "degraded"]},
            "ready": {"type": "boolean"},
            "key_revisions_fresh": {"type": "boolean"},
        },
    }
    return {
        "/v1/chat/completions": _proxied("Chat completion (JSON or SSE)", chat, True),
        "/v1/completions": _proxied("Text completion (JSON or SSE)", completions, True),
        "/v1/embeddings": _proxied("Embeddings", embeddings, False),
        "/v1/responses": _proxied("Responses API (JSON or SSE)", responses, True),
        "/v1/models": {
            "get": {
                "summary": "Models the caller's tier may use",
                "security": key,
                "responses": {
                    "200": {"description": "A model list.", "content": _json({"type": "object"})},
                    **_errors("401", "403", "502", "503", "504"),
                },
            }
        },
        "/v1/models/{model}": {
            "get": {
                "summary": "One model (404 when the tier may not use it)",
                "security": key,
                "parameters": [
                    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {"description": "The model.", "content": _json({"type": "object"})},
                    **_errors("401", "403", "404", "4XX", "502", "503", "504"),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness and readiness",
                "security": [],
                "responses": {
                    "200": {"description": "Ready.", "content": _json(health)},
                    "503": {"description": "Not ready or key revisions stale.", "content": _json(health)},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {"200": {"description": "Text exposition format.", "content": text_ok}},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1.", "content": _json({"type": "object"})}},
            }
        },
    }


def openapi_document(admin: bool) -> dict[str, Any]:
    """The document; the admin paths are in it only when the admin API is on (else they are 404s)."""
    schemes: dict[str, Any] = {
        "apiKey": {"type": "http", "scheme": "bearer", "description": "A gateway key, `dg-...`."}
    }
    paths = _public_paths()
    if admin:
        schemes["adminToken"] = {"type": "http", "scheme": "bearer", "description": "The admin token."}
        paths.update(_admin_paths())
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "distillguard gateway",
            "version": "1",
            "description": "OpenAI-compatible proxy with identity, KYC tiers, rate limits and audit.",
        },
        "paths": paths,
        "components": {"schemas": {"Error": _ERROR_SCHEMA}, "securitySchemes": schemes},
    }
    return copy.deepcopy(doc)
