"""MinHash sketches and LSH clustering of prompt skeletons, vectorised with numpy.

A sketch uses one-permutation hashing (Li, Owen & Zhang 2012) over character 5-grams: every 5-gram is
hashed once, its top bits pick one of `K` bins and the bin keeps its minimum, so a sketch costs one
hash per character instead of K. Empty bins are filled by rotation (Shrivastava & Li 2014) so that
equal-bin rate estimates Jaccard similarity. LSH bands the sketch (`BANDS` x `ROWS`); candidate pairs
are verified on the full sketch before they link, and a bucket links each member to its first member
only, so a huge bucket costs O(n), not O(n^2).

`key` makes the sketch keyed (a secret salt mixed into every shingle hash): intel sharing uses it so a
sketch cannot be matched against guessed prompts without the consortium key.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

K = 64
BANDS = 16
ROWS = K // BANDS
SHINGLE = 5
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)
_EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a fast, well-spread 64-bit hash of 64-bit integers."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M2
    x = x ^ (x >> np.uint64(27))
    x = x * _M3
    return x ^ (x >> np.uint64(31))


def sketch(texts: Sequence[str] | pa.Array, key: int = 0) -> np.ndarray:
    """(len(texts), K) uint64 MinHash sketches. Texts shorter than a shingle get one shingle."""
    arr = pa.array(texts, type=pa.large_string()) if not isinstance(texts, pa.Array) else texts
    arr = arr.cast(pa.large_string())
    n = len(arr)
    out = np.full((n, K), _EMPTY, dtype=np.uint64)
    if n == 0:
        return out
    arr = arr.fill_null("")
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = (
        np.frombuffer(arr.buffers()[2], dtype=np.uint8)
        if arr.buffers()[2] is not None
        else np.zeros(0, np.uint8)
    )
    total = len(data)
    data = np.concatenate([data, np.zeros(SHINGLE, np.uint8)])  # windows past the end read zeros
    lens = offsets[1:] - offsets[:-1]
    # Pack every 5-byte window of the whole buffer with contiguous slices (no gather), then keep the
    # windows that lie inside one text.
    v = data[:total].astype(np.uint64)
    for j in range(1, SHINGLE):
        v |= data[j : total + j].astype(np.uint64) << np.uint64(8 * j)
    long_ = lens >= SHINGLE
    marks = np.zeros(total + 1, dtype=np.int64)
    np.add.at(marks, offsets[:-1][long_], 1)
    np.add.at(marks, offsets[1:][long_] - SHINGLE + 1, -1)
    valid = np.cumsum(marks[:total]) > 0
    pos = np.flatnonzero(valid)
    doc = np.searchsorted(offsets, pos, side="right") - 1
    v = v[pos]
    short = np.flatnonzero(~long_)
    if len(short):
        # A text shorter than a shingle is one shingle of its bytes, zero-padded.
        sv = np.zeros(len(short), dtype=np.uint64)
        for j in range(SHINGLE):
            at = offsets[:-1][short] + j
            b = np.where(at < offsets[1:][short], data[np.minimum(at, total)], 0).astype(np.uint64)
            sv |= b << np.uint64(8 * j)
        v = np.concatenate([v, sv])
        doc = np.concatenate([doc, short])
    h = _mix((v ^ np.uint64(key & 0xFFFFFFFFFFFFFFFF)) * _M1)
    bins = (h >> np.uint64(58)).astype(np.int64)  # top 6 bits: K = 64 bins
    vals = h & np.uint64((1 << 58) - 1)
    flat = doc * K + bins
    res = np.full(n * K, _EMPTY, dtype=np.uint64)
    np.minimum.at(res, flat, vals)
    out = res.reshape(n, K)
    # Densify: an empty bin borrows the next non-empty bin to its right (circularly), salted by distance.
    empty = out == _EMPTY
    if empty.any():
        for shift in range(1, K):
            still = empty & (out == _EMPTY)
            if not still.any():
                break
            rolled = np.roll(out, -shift, axis=1)
            fill = still & (rolled != _EMPTY)
            out = np.where(fill, _mix(rolled + np.uint64(shift)) & np.uint64((1 << 58) - 1), out)
    return out


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of paired sketches (rows of a and b)."""
    return (a == b).mean(axis=-1)


def band_keys(sk: np.ndarray) -> np.ndarray:
    """(n, BANDS) uint64 bucket keys: one hash per band of ROWS sketch values."""
    n = sk.shape[0]
    b = sk.reshape(n, BANDS, ROWS)
    acc = np.zeros((n, BANDS), dtype=np.uint64)
    for r in range(ROWS):
        acc = _mix(acc ^ b[:, :, r])
    return acc ^ np.arange(BANDS, dtype=np.uint64)[None, :] * _M1  # keys of different bands never collide


def cluster(sk: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Cluster ids (0..) linking sketches whose estimated Jaccard similarity is at least `threshold`."""
    n = sk.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keys = band_keys(sk).ravel()
    idx = np.repeat(np.arange(n), BANDS)
    order = np.argsort(keys, kind="stable")
    ks, ids = keys[order], idx[order]
    first = np.r_[True, ks[1:] != ks[:-1]]
    head = ids[np.maximum.accumulate(np.where(first, np.arange(len(ks)), 0))]
    cand = ids != head
    a, b = head[cand], ids[cand]
    if len(a):
        pair = np.unique(np.stack([a, b], axis=1), axis=0)
        a, b = pair[:, 0], pair[:, 1]
        keep = similarity(sk[a], sk[b]) >= threshold
        a, b = a[keep], b[keep]
    g = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    return labels.astype(np.int64)
