"""OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}` with the status the SDKs expect.

The official SDKs pick the exception class from the status alone (400 BadRequestError, 401
AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError, 413/422 as APIStatusError, 429
RateLimitError, >= 500 InternalServerError) and show `error.message`, so the message says which rule
refused the call.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson


class GatewayError(Exception):
    """A refusal or failure the client sees as an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        reason: str | None = None,
        record: Mapping[str, str | None] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        # Label for metrics and the audit record: stable, low cardinality (the code, else the type).
        self.reason = reason or code or type_
        # Audit-record fields the refusal knows although the request was not admitted (the key id and
        # account of a revoked key: who keeps trying it is evidence).
        self.record = dict(record or {})

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def bad_request(message: str, param: str | None = None, code: str | None = "invalid_request") -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", code, param)


def forbidden(message: str, code: str, param: str | None = None) -> GatewayError:
    return GatewayError(403, message, "permission_denied", code, param)


def unauthorized(message: str, code: str = "invalid_api_key") -> GatewayError:
    return GatewayError(401, message, "invalid_request_error", code)
