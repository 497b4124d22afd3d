"""MinHash sketches and LSH clustering of prompt skeletons, vectorised with numpy.

A sketch uses one-permutation hashing (Li, Owen & Zhang 2012) over word-anchored 8-byte shingles:
every shingle is hashed once, its top bits pick one of `K` bins and the bin keeps its minimum, so a
sketch costs one hash per word instead of K. Empty bins are filled by rotation (Shrivastava & Li 2014) so that
equal-bin rate estimates Jaccard similarity. LSH bands the sketch (`BANDS` x `ROWS`); candidate pairs
are verified on the full sketch before they link, and a bucket links each member to its first member
only, so a huge bucket costs O(n), not O(n^2); clusters form around leaders (see `cluster`).

`key` makes the sketch keyed (a secret salt mixed into every shingle hash): intel sharing uses it so a
sketch cannot be matched against guessed prompts without the consortium key.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

K = 64
BANDS = 16
ROWS = K // BANDS
SHINGLE = 8  # bytes per shingle, anchored at word starts
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)
_EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)
_CHUNK = 1 << 18  # rows (or pairs) per step where a step makes temporaries proportional to its size


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a fast, well-spread 64-bit hash of 64-bit integers."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M2
    x = x ^ (x >> np.uint64(27))
    x = x * _M3
    return x ^ (x >> np.uint64(31))


def sketch(texts: Sequence[str] | pa.Array, key: int = 0, chunk_bytes: int = 8 << 20) -> np.ndarray:
    """(len(texts), K) uint64 MinHash sketches of word-anchored shingles.

    A shingle is the SHINGLE bytes starting at each word start (the first byte, and every byte after a
    space): the same text always yields the same shingles, near-identical texts share most of them, and
    there are about as many as words rather than characters. Texts are processed in chunks of about
    `chunk_bytes` so memory stays bounded whatever the input size.
    """
    arr = pa.array(texts, type=pa.large_string()) if not isinstance(texts, pa.Array) else texts
    arr = arr.cast(pa.large_string()).fill_null("")
    n = len(arr)
    out = np.full((n, K), _EMPTY, dtype=np.uint64)
    start = 0
    while start < n:
        # Grow the chunk until it holds about chunk_bytes of text (at least one text).
        offs = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
        stop = int(np.searchsorted(offs, offs[start] + chunk_bytes, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        out[start:stop] = _sketch_chunk(arr.slice(start, stop - start), key)
        start = stop
    return out


def _sketch_chunk(arr: pa.Array, key: int) -> np.ndarray:
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    buf = arr.buffers()[2]
    base = int(offsets[0])
    total = int(offsets[-1]) - base
    data = (
        np.frombuffer(buf, dtype=np.uint8)[base : base + total] if buf is not None else np.zeros(0, np.uint8)
    )
    offsets = offsets - base
    data = np.concatenate([data, np.zeros(SHINGLE, np.uint8)])
    # Word starts: position 0 of each text, and every non-space byte after a space.
    is_start = np.zeros(total, dtype=bool)
    if total:
        is_start[1:] = (data[: total - 1] == 32) & (data[1:total] != 32)
    starts_of_docs = offsets[:-1][offsets[:-1] < offsets[1:]]
    is_start[starts_of_docs] = True
    pos = np.flatnonzero(is_start)
    doc = np.searchsorted(offsets, pos, side="right") - 1
    end = offsets[1:][doc]
    v = np.zeros(len(pos), dtype=np.uint64)
    for j in range(SHINGLE):
        at = pos + j
        # Bytes past the text's end are zero, so a short final word hashes as itself.
        b = np.where(at < end, data[np.minimum(at, total)], 0).astype(np.uint64)
        v |= b << np.uint64(8 * j)
    # Empty texts get one shingle of zeros, so they compare equal to each other only.
    empty = np.flatnonzero(offsets[1:] == offsets[:-1])
    if len(empty):
        v = np.concatenate([v, np.zeros(len(empty), dtype=np.uint64)])
        doc = np.concatenate([doc, empty])
    h = _mix((v ^ np.uint64(key & 0xFFFFFFFFFFFFFFFF)) * _M1)
    bins = (h >> np.uint64(58)).astype(np.int64)  # top 6 bits: K = 64 bins
    vals = h & np.uint64((1 << 58) - 1)
    res = np.full(n * K, _EMPTY, dtype=np.uint64)
    np.minimum.at(res, doc * K + bins, vals)
    out = res.reshape(n, K)
    # Densify: an empty bin borrows the next non-empty bin to its right (circularly), salted by distance.
    for shift in range(1, K):
        still = out == _EMPTY
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


def cluster(sk: np.ndarray, threshold: float = 0.5, eligible: np.ndarray | None = None) -> np.ndarray:
    """Template ids (0..): sketches whose estimated Jaccard similarity with a leader is >= `threshold`.

    Leader clustering, not single linkage: each sketch joins the lowest-numbered verified neighbour
    that LSH proposes, then that neighbour's leader (two hops at most). Single linkage would chain
    short, loosely similar prompts into one giant "template" spanning unrelated accounts. Sketches not
    `eligible` (for example too short to carry a template) stay alone.
    """
    n = sk.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.arange(n) if eligible is None else np.flatnonzero(eligible)
    # Memory: about 6 x 8 bytes a band key at the peak, beside the sketches (K x 8 bytes a row), so
    # keys are made in chunks (no copy of the sketches) and each temporary is dropped once used.
    by_row = np.empty((len(rows), BANDS), dtype=np.uint64)
    for lo in range(0, len(rows), _CHUNK):
        by_row[lo : lo + _CHUNK] = band_keys(sk[rows[lo : lo + _CHUNK]])
    keys = by_row.ravel()
    del by_row
    order = np.argsort(keys, kind="stable")  # stable: within a bucket, ids stay ascending
    ks = keys[order]
    del keys
    ids = rows[order // BANDS]  # key j belongs to rows[j // BANDS]
    del order
    first = np.empty(len(ks), dtype=bool)
    first[:1] = True
    np.not_equal(ks[1:], ks[:-1], out=first[1:])
    del ks
    start = np.arange(len(first))
    start[~first] = 0
    np.maximum.accumulate(start, out=start)  # the position where each key's bucket starts
    head = ids[start]
    del start, first
    cand = ids != head
    a, b = head[cand], ids[cand]  # a < b: the bucket's lowest id leads it
    del head, ids, cand
    lead = np.arange(n)
    if len(a):
        # Pairs found in several bands are verified more than once: cheaper than deduplicating them.
        keep = np.zeros(len(a), dtype=bool)
        for lo in range(0, len(a), _CHUNK):  # bounded temporaries
            hi = lo + _CHUNK
            keep[lo:hi] = similarity(sk[a[lo:hi]], sk[b[lo:hi]]) >= threshold
        np.minimum.at(lead, b[keep], a[keep])
        lead = lead[lead]
    _, labels = np.unique(lead, return_inverse=True)
    return labels.astype(np.int64)
