"""Privacy-preserving indicator values: keyed digests of identifiers, keyed sketches of prompt skeletons.

A consortium shares a secret key per *epoch*. Identifiers (account, organisation, payment and device
fingerprints, campaign ids) leave a provider only as HMAC-SHA256 digests under the current epoch's key;
prompt skeletons only as MinHash signatures whose shingle hashes are salted with a key derived from the
same secret. Without the key, a digest cannot be tested against guessed values (unlike a plain hash of
an IPv4 address, which anyone can brute-force over 2^32 values); with it, members can match.

Rotation: `Keyring.rotate()` adds a new epoch and makes it current. Indicators keep the epoch they were
made under; matching recomputes the local side under every epoch still held, so indicators from the
previous epoch keep matching until the consortium drops that key (`Keyring.retire`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import orjson

from distillguard.detect import minhash
from distillguard.intel.indicator import DIGEST_TYPES, IndicatorType

_DOMAIN = b"distillguard/intel/v1/"
KEY_BYTES = 32


class KeyringError(ValueError):
    pass


class Keyring:
    """The consortium secrets, one per epoch; `current` is the epoch new indicators are made under."""

    def __init__(self, keys: dict[int, bytes], current: int | None = None) -> None:
        if not keys:
            raise KeyringError("a keyring needs at least one key")
        for epoch, key in keys.items():
            if len(key) < 16:
                raise KeyringError(f"key of epoch {epoch} is {len(key)} bytes; at least 16 are needed")
        self.keys = dict(keys)
        self.current = max(keys) if current is None else current
        if self.current not in self.keys:
            raise KeyringError(f"current epoch {self.current} has no key")

    # -- making and keeping keys ---------------------------------------------------------------------
    @classmethod
    def generate(cls, epoch: int = 1) -> Keyring:
        return cls({epoch: secrets.token_bytes(KEY_BYTES)})

    def rotate(self) -> int:
        """Add a fresh key as the next epoch and make it current; returns the new epoch."""
        epoch = max(self.keys) + 1
        self.keys[epoch] = secrets.token_bytes(KEY_BYTES)
        self.current = epoch
        return epoch

    def retire(self, epoch: int) -> None:
        if epoch == self.current:
            raise KeyringError("the current epoch cannot be retired; rotate first")
        self.keys.pop(epoch, None)

    def dumps(self) -> bytes:
        doc = {
            "current": self.current,
            "keys": {str(e): base64.b64encode(k).decode() for e, k in sorted(self.keys.items())},
        }
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2)

    @classmethod
    def loads(cls, data: bytes, source: str = "keyring") -> Keyring:
        try:
            doc = orjson.loads(data)
            keys = {int(e): base64.b64decode(k, validate=True) for e, k in doc["keys"].items()}
            return cls(keys, int(doc["current"]))
        except KeyringError:
            raise
        except Exception as exc:  # any shape error: say which file, not a traceback
            raise KeyringError(f"{source}: not a distillguard keyring ({exc})") from exc

    def save(self, path: Path) -> None:
        # The file is a secret: create it readable by its owner only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.dumps())

    @classmethod
    def load(cls, path: Path) -> Keyring:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise KeyringError(f"cannot read keyring {path}: {exc.strerror}") from exc
        return cls.loads(data, str(path))

    # -- keyed values ----------------------------------------------------------------------------------
    def _key(self, epoch: int | None) -> tuple[int, bytes]:
        e = self.current if epoch is None else epoch
        try:
            return e, self.keys[e]
        except KeyError:
            raise KeyringError(f"no key for epoch {e} (held: {sorted(self.keys)})") from None

    def digest(self, kind: IndicatorType | str, value: str, epoch: int | None = None) -> str:
        """HMAC-SHA256 (hex) of one identifier, domain-separated by type so that an account id and a
        device fingerprint with the same text do not collide."""
        kind = IndicatorType(kind)
        if kind not in DIGEST_TYPES:
            raise KeyringError(f"{kind} values are not digested")
        _, key = self._key(epoch)
        msg = _DOMAIN + kind.value.encode() + b"\x00" + value.strip().encode()
        return hmac.new(key, msg, hashlib.sha256).hexdigest()

    def digests(
        self, kind: IndicatorType | str, values: Iterable[str], epoch: int | None = None
    ) -> list[str]:
        kind = IndicatorType(kind)
        if kind not in DIGEST_TYPES:
            raise KeyringError(f"{kind} values are not digested")
        _, key = self._key(epoch)
        prefix = _DOMAIN + kind.value.encode() + b"\x00"
        base = hmac.new(key, digestmod=hashlib.sha256)  # copy() skips re-keying per value
        out = []
        for v in values:
            h = base.copy()
            h.update(prefix + v.strip().encode())
            out.append(h.hexdigest())
        return out

    def sketch_salt(self, epoch: int | None = None) -> int:
        """The 64-bit salt that keys MinHash shingle hashes for this epoch."""
        _, key = self._key(epoch)
        return int.from_bytes(hmac.new(key, _DOMAIN + b"skeleton", hashlib.sha256).digest()[:8], "little")

    def sketch(self, texts: list[str], epoch: int | None = None) -> np.ndarray:
        """(n, minhash.K) keyed MinHash signatures of prompt skeletons (or any texts)."""
        return minhash.sketch(texts, key=self.sketch_salt(epoch))


def encode_sketch(sig: np.ndarray) -> str:
    """A signature as text (base64 of little-endian uint64), the `value` of a skeleton indicator."""
    return base64.b64encode(np.ascontiguousarray(sig, dtype="<u8").tobytes()).decode()


def decode_sketch(value: str) -> np.ndarray:
    raw = base64.b64decode(value, validate=True)
    if len(raw) != 8 * minhash.K:
        raise ValueError(f"a skeleton sketch has {minhash.K} 64-bit values; this one has {len(raw) / 8:g}")
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)
