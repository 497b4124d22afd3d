"""Analyst passwords, signed session cookies and CSRF tokens.

Passwords are hashed with scrypt (memory-hard, in the standard library) and compared with
`hmac.compare_digest`, as the gateway compares key hashes, so a comparison's time says nothing about
how much of a guess was right. Sessions are signed, timestamped tokens (itsdangerous): the server keeps
no session table, and a token that was altered or has expired is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

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


class LoginThrottle:
    """Failed logins slow the next attempt down, per client address and per account name.

    After `free` failures within `window_s`, each further attempt from that address (or on that name) must
    wait `base_s * 2**(failures - free)` seconds, capped at `max_s`, counted from the last failure; a success
    clears the name and the address. Both keys count, so one address cannot guess many names fast, and many
    addresses cannot guess one name fast. State is in memory and bounded (least recently failed dropped):
    the console is one process, and a restart forgetting the counts only resets a delay.
    """

    def __init__(
        self,
        free: int = 5,
        window_s: float = 900.0,
        base_s: float = 1.0,
        max_s: float = 300.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free, self.window_s, self.base_s, self.max_s = free, window_s, base_s, max_s
        self._max_entries = max_entries
        self._clock = clock
        self._fails: OrderedDict[str, tuple[int, float]] = OrderedDict()  # key -> (failures, last failure)

    def _state(self, key: str, now: float) -> tuple[int, float]:
        n, last = self._fails.get(key, (0, -math.inf))
        return (0, -math.inf) if now - last > self.window_s else (n, last)

    def retry_after(self, address: str, name: str) -> float:
        """Seconds until an attempt from `address` on `name` is allowed (0: allowed now)."""
        now = self._clock()
        wait = 0.0
        for key in (f"a:{address}", f"n:{name}"):
            n, last = self._state(key, now)
            if n >= self.free:
                delay = min(self.max_s, self.base_s * 2.0 ** (n - self.free))
                wait = max(wait, last + delay - now)
        return max(0.0, wait)

    def failed(self, address: str, name: str) -> None:
        now = self._clock()
        for key in (f"a:{address}", f"n:{name}"):
            n, _ = self._state(key, now)
            self._fails[key] = (n + 1, now)
            self._fails.move_to_end(key)
        while len(self._fails) > self._max_entries:
            self._fails.popitem(last=False)

    def succeeded(self, address: str, name: str) -> None:
        self._fails.pop(f"a:{address}", None)
        self._fails.pop(f"n:{name}", None)
