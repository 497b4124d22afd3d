"""A toy language model for watermark tests: fixed random logits per previous token (a bigram table).

Small enough to generate thousands of tokens in milliseconds, with enough entropy for a watermark to
show, so the tests exercise the real `bias` -> sampling -> `score` loop without a neural network.
"""

from __future__ import annotations

import numpy as np

from distillguard.forensics.keys import WatermarkKey
from distillguard.forensics.scheme import WatermarkScheme


def bigram_logits(vocab: int, seed: int = 0, scale: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(vocab, vocab)) * scale


def generate(
    scheme: WatermarkScheme | None,
    key: WatermarkKey | None,
    table: np.ndarray,
    *,
    batch: int,
    length: int,
    prompt_len: int = 4,
    seed: int = 1,
) -> np.ndarray:
    """Sample `batch` sequences of `length` new tokens (after a random prompt); returns only the new ids."""
    rng = np.random.default_rng(seed)
    vocab = table.shape[0]
    ids = rng.integers(0, vocab, size=(batch, prompt_len))
    for _ in range(length):  # bounded by `length`
        logits = table[ids[:, -1]]
        if scheme is not None and key is not None:
            logits = scheme.bias(ids, logits, key)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        u = rng.random((batch, 1))
        nxt = np.minimum((p.cumsum(axis=1) < u).sum(axis=1), vocab - 1)  # inverse-CDF sampling, vectorised
        ids = np.concatenate([ids, nxt[:, None]], axis=1)
    return ids[:, prompt_len:]
