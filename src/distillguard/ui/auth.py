"""Analyst passwords, signed session cookies and CSRF tokens.

Passwords are hashed with scrypt (memory-hard, in the standard library) and compared with
`hmac.compare_digest`, as the gateway compares key hashes, so a comparison's time says nothing about
how much of a guess was right. Sessions are signed, timestamped tokens (itsdangerous): the server keeps
no session table, and a token that was altered or has expired is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

# scrypt cost: n=2**14, r=8 needs 16 MiB and ~50 ms per login, which is fine for a console
_N, _R, _P = 2**14, 8, 1
SESSION_COOKIE = "dg_session"


def new_password() -> str:
    """A one-time password printed to the administrator (about 128 bits)."""
    return secrets.token_urlsafe(16)


def hash_password(password: str, salt: bytes | None = None) -> tuple[str, str]:
    """(salt hex, scrypt hash hex) of `password`."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    h = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return salt.hex(), h.hex()


def check_password(password: str, salt_hex: str, hash_hex: str) -> bool:
    _, h = hash_password(password, bytes.fromhex(salt_hex))
    return hmac.compare_digest(h, hash_hex)


class Sessions:
    """Signed session tokens carrying the user name and that session's CSRF token."""

    def __init__(self, secret: str, max_age_s: int = 8 * 3600) -> None:
        self._s = URLSafeTimedSerializer(secret, salt="distillguard-ui-session")
        self.max_age_s = max_age_s

    def issue(self, user: str) -> tuple[str, str]:
        """(cookie value, CSRF token) for a fresh login."""
        csrf = secrets.token_urlsafe(24)
        return self._s.dumps({"u": user, "c": csrf}), csrf

    def read(self, token: str | None) -> tuple[str, str] | None:
        """(user, CSRF token) of a valid cookie, or None."""
        if not token:
            return None
        try:
            data = self._s.loads(token, max_age=self.max_age_s)
        except (BadSignature, SignatureExpired):
            return None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("u"), str)
            or not isinstance(data.get("c"), str)
        ):
            return None
        return data["u"], data["c"]


def csrf_ok(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
