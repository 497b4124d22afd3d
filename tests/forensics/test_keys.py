from __future__ import annotations

import numpy as np
import pytest

from distillguard.forensics.keys import (
    KeyRing,
    ProviderSecret,
    WatermarkKey,
    WatermarkKeyError,
    current_epoch,
    hkdf_sha256,
)


def test_hkdf_matches_rfc5869_test_case_1() -> None:
    okm = hkdf_sha256(
        bytes.fromhex("0b" * 22),
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        length=42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_account_keys_are_deterministic_distinct_and_rotate() -> None:
    secret = ProviderSecret(bytes(range(32)))
    a0 = secret.account_key("acct-a")
    assert a0 == ProviderSecret(bytes(range(32))).account_key("acct-a")
    assert a0.seed != secret.account_key("acct-b").seed
    assert a0.seed != secret.account_key("acct-a", epoch=1).seed
    assert a0.seed != ProviderSecret(bytes(range(1, 33))).account_key("acct-a").seed
    assert a0.label == "acct-a@0"


def test_secret_never_in_repr_and_validated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    secret = ProviderSecret.generate()
    key = secret.account_key("acct")
    assert secret.to_hex() not in repr(secret)
    assert str(key.seed) not in repr(key)
    with pytest.raises(WatermarkKeyError, match="at least 32 bytes"):
        ProviderSecret(b"short")
    with pytest.raises(WatermarkKeyError, match="hex"):
        ProviderSecret.from_hex("zz" * 32)
    path = tmp_path / "secret.hex"
    path.write_text(secret.to_hex())
    assert ProviderSecret.load(path) == secret
    with pytest.raises(WatermarkKeyError):
        WatermarkKey(2**64)


def test_keyring_orders_epochs_and_accounts() -> None:
    secret = ProviderSecret(bytes(32))
    ring = KeyRing.derive(secret, ["a", "b", "a"], epochs=(0, 1))
    assert ring.labels == ["a@0", "b@0", "a@1", "b@1"]
    assert ring.seeds.dtype == np.uint64
    assert len(set(ring.seeds.tolist())) == 4
    assert current_epoch(100.0, period_s=30.0) == 3
