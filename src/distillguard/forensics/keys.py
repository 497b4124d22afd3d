"""Watermark keys: one provider secret, a key per account derived with HKDF (RFC 5869), key epochs.

Each account's outputs carry a mark keyed by its own key, so a mark found in a suspect model's output
names the account that leaked it. The account key is HKDF-SHA256(secret, info = epoch + account id):
knowing one account's key reveals nothing about another's or about the secret. Rotation moves to a new
epoch (all account keys change); detection tests every epoch in the window as part of one family.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets as _secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SECRET_ENV = "DISTILLGUARD_WATERMARK_SECRET"
_SALT = b"distillguard/watermark/v1"
_MIN_SECRET_BYTES = 32


class WatermarkKeyError(ValueError):
    """A secret or key that cannot be used (too short, not hex, missing)."""


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869): extract with `salt`, expand to `length` bytes bound to `info`."""
    if length > 255 * 32:
        raise ValueError("HKDF-SHA256 output is at most 8160 bytes")
    prk = hmac.new(salt or b"\x00" * 32, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


@dataclass(frozen=True)
class WatermarkKey:
    """A 64-bit watermark key, with the account and epoch it belongs to (None: a provider-wide key)."""

    seed: int = field(repr=False)  # the secret part: never printed
    account_id: str | None = None
    epoch: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**64:
            raise WatermarkKeyError(f"watermark key seed must be a 64-bit unsigned integer, got {self.seed}")

    @property
    def label(self) -> str:
        """How reports name this key: the account and epoch, never the key itself."""
        return f"{self.account_id or '<provider>'}@{self.epoch}"


@dataclass(frozen=True)
class ProviderSecret:
    """The provider's master secret (>= 32 bytes). Its repr never shows the bytes."""

    value: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.value) < _MIN_SECRET_BYTES:
            raise WatermarkKeyError(f"the provider secret must be at least {_MIN_SECRET_BYTES} bytes")

    @classmethod
    def generate(cls) -> ProviderSecret:
        return cls(_secrets.token_bytes(32))

    @classmethod
    def from_hex(cls, text: str) -> ProviderSecret:
        try:
            return cls(bytes.fromhex(text.strip()))
        except ValueError as exc:
            raise WatermarkKeyError("the provider secret must be hex (64 hex digits or more)") from exc

    @classmethod
    def load(cls, path: Path | None = None) -> ProviderSecret:
        """From a file of hex (e.g. written by `generate().to_hex()`) or the env var named SECRET_ENV."""
        if path is not None:
            if not path.is_file():
                raise WatermarkKeyError(f"secret file not found: {path}")
            return cls.from_hex(path.read_text(encoding="utf-8"))
        env = os.environ.get(SECRET_ENV)
        if not env:
            raise WatermarkKeyError(f"no provider secret: pass a secret file or set {SECRET_ENV}")
        return cls.from_hex(env)

    def to_hex(self) -> str:
        return self.value.hex()

    def account_key(self, account_id: str, epoch: int = 0) -> WatermarkKey:
        """The account's key in `epoch`: HKDF-SHA256(secret, info = epoch | account id), 64 bits."""
        if epoch < 0:
            raise WatermarkKeyError(f"key epoch must be >= 0, got {epoch}")
        info = b"account\x00" + epoch.to_bytes(8, "big") + account_id.encode("utf-8")
        okm = hkdf_sha256(self.value, salt=_SALT, info=info, length=8)
        return WatermarkKey(int.from_bytes(okm, "big"), account_id, epoch)

    def provider_key(self, epoch: int = 0) -> WatermarkKey:
        """A provider-wide key (no account): for marking traffic not tied to one account."""
        okm = hkdf_sha256(self.value, salt=_SALT, info=b"provider\x00" + epoch.to_bytes(8, "big"), length=8)
        return WatermarkKey(int.from_bytes(okm, "big"), None, epoch)


@dataclass(frozen=True)
class KeyRing:
    """Keys of many accounts over one or more epochs: the family of hypotheses attribution tests."""

    keys: tuple[WatermarkKey, ...]

    @classmethod
    def derive(cls, secret: ProviderSecret, accounts: Iterable[str], epochs: Sequence[int] = (0,)) -> KeyRing:
        accts = list(dict.fromkeys(accounts))  # keep order, drop repeats
        return cls(tuple(secret.account_key(a, e) for e in epochs for a in accts))

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def seeds(self) -> np.ndarray:
        """The key seeds as a uint64 array, in ring order (for one vectorised pass over all keys)."""
        return np.fromiter((k.seed for k in self.keys), dtype=np.uint64, count=len(self.keys))

    @property
    def labels(self) -> list[str]:
        return [k.label for k in self.keys]


def current_epoch(now_s: float, *, period_s: float, start_s: float = 0.0) -> int:
    """The epoch of a fixed rotation period (e.g. 30 days) at time `now_s` (Unix seconds)."""
    if period_s <= 0:
        raise ValueError("rotation period must be positive")
    return max(0, int((now_s - start_s) // period_s))
