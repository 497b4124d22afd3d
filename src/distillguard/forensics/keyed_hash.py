"""Keyed 64-bit hashing of token windows as numpy array arithmetic.

Every watermark decision is a function of (key, context token ids, token id). Computing it as uint64
array arithmetic (a SplitMix64 finaliser, a bijective mixer with full avalanche) lets detection test
every position of every text, under every account key, in a handful of vectorised passes: no Python
loop per token and no vocabulary permutation per token. This is a PRF-like mixer, not a cryptographic
one: the watermark's secrecy rests on the 64-bit key, as it does in the Kirchenbauer and Aaronson schemes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# separates the roles of the inputs, so (context=a, token=b) never collides with (context=b, token=a)
_TOKEN_SALT = np.uint64(0xD6E8FEB86659FD93)
# the keyless fingerprint of a window (dedup, prompt exclusion) uses its own constant seed
_FINGERPRINT_SEED = np.uint64(0x243F6A8885A308D3)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_INV_2_53 = 1.0 / float(1 << 53)


def mix64(z: U64) -> U64:
    """SplitMix64's finaliser: a bijection on uint64 with full avalanche (wrapping arithmetic)."""
    z = z ^ (z >> _S30)
    z = z * _M1
    z = z ^ (z >> _S27)
    z = z * _M2
    return z ^ (z >> _S31)


def as_u64(ids: npt.ArrayLike) -> U64:
    """Token ids (any integer dtype, non-negative) as uint64."""
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"token ids must be integers, got dtype {arr.dtype}")
    return arr.astype(np.uint64, copy=False)


def context_hash(windows: npt.ArrayLike, seed: int | np.uint64 = _FINGERPRINT_SEED) -> U64:
    """Hash each row of `windows` (n, w) of token ids into one uint64, seeded by `seed`.

    The loop runs over the window's columns (w is the context width, 1 to 4), never over tokens.
    """
    win = as_u64(windows)
    if win.ndim != 2:
        raise ValueError(f"windows must be 2-D (n, width), got shape {win.shape}")
    h = np.full(win.shape[0], np.uint64(seed), dtype=np.uint64)
    for j in range(win.shape[1]):
        h = mix64(h ^ ((win[:, j] + np.uint64(1)) * _GOLDEN))
    return h


def fingerprints(windows: npt.ArrayLike) -> U64:
    """Keyless 64-bit fingerprints of windows (n, w): equal windows give equal fingerprints."""
    return context_hash(windows, _FINGERPRINT_SEED)


def keyed_values(seeds: U64, contexts: U64, tokens: U64) -> U64:
    """uint64 hash of (seed, context fingerprint, token), broadcasting the three arrays.

    Detection passes seeds (k, 1) and contexts, tokens (1, n) for every key at every position;
    generation passes one seed, contexts (batch, 1) and the vocabulary (1, vocab).
    """
    base = mix64(seeds ^ contexts)
    return mix64(base ^ ((tokens + np.uint64(1)) * _TOKEN_SALT))


def to_unit(values: U64) -> npt.NDArray[np.float64]:
    """Map uint64 hashes to floats strictly inside (0, 1): (top 53 bits + 0.5) / 2^53."""
    return ((values >> np.uint64(11)).astype(np.float64) + 0.5) * _INV_2_53


def threshold(gamma: float) -> np.uint64:
    """The uint64 below which a hash falls with probability `gamma` (up to 2^-64)."""
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"gamma must lie in (0, 1), got {gamma}")
    return np.uint64(min(int(gamma * 2.0**64), 2**64 - 1))
