"""Suspect models that can be read token by token: a count-based n-gram student, and the predictor protocol.

Reading mode (`reading.py`) only needs a model's top-1 next-token prediction at every position of a
text, so anything with `top1(sequences)` can be tested: a transformers model (`hf.HFPredictor`) or the
n-gram student here. The n-gram student is a real learner, not a stub: it counts (context -> next
token) over a training corpus and predicts the most frequent continuation, backing off to shorter
contexts. Trained on a corpus that is partly watermarked teacher output it inherits the teacher's
green-list bias the same way a neural student does (its counts are the empirical distribution the
neural student's cross-entropy loss fits), which is what the radioactivity tests need, in milliseconds.
Training and prediction are array passes (hash, sort, searchsorted): no Python loop per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from distillguard.forensics.keyed_hash import U64, context_hash
from distillguard.forensics.scheme import SchemeError, token_windows

IntArray = npt.NDArray[np.int64]


@runtime_checkable
class Predictor(Protocol):
    """A suspect model read in the open setting."""

    def top1(self, sequences: Sequence[npt.ArrayLike]) -> list[IntArray]:
        """For each sequence x, an array p of len(x) with p[i] = argmax P(token | x[:i]); p[0] = -1."""
        ...


@dataclass(frozen=True)
class _OrderTable:
    """Top-1 continuation of every context of one length: sorted context hashes and their best token."""

    contexts: U64  # sorted, unique
    best: IntArray


def _as_list(sequences: Sequence[npt.ArrayLike]) -> list[IntArray]:
    out = []
    for i, s in enumerate(sequences):
        arr = np.asarray(s)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise SchemeError(f"sequence {i}: expected a 1-D array of token ids, got shape {arr.shape}")
        out.append(arr.astype(np.int64, copy=False))
    return out


def _fit_tables(corpus: list[IntArray], order: int) -> list[_OrderTable]:
    """Top-1 continuation of every context of widths 1..order-1, ties broken by shorter contexts.

    For each position, the count of its window (context of width j + token) is computed for every j;
    a context's best token has the highest count at its own width, then at width w - 1, and so on down
    to the unigram count (then the smaller id). That is the argmax of a back-off model, where sparse
    long-context counts (often ties at 1) are decided by the better-estimated shorter contexts.
    """
    flat = np.concatenate(corpus)
    lengths = np.array([s.size for s in corpus], dtype=np.int64)
    offset = np.arange(flat.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    counts = np.full((order, flat.size), -1, dtype=np.int64)  # counts[j, p]: window of width j ending at p
    ctx_hash: list[U64] = []
    for j in range(order):  # over context widths (at most 9), never over tokens
        win = token_windows(corpus, j) if j else None
        pos = win.positions if win is not None else np.arange(flat.size)
        fp = win.fingerprints if win is not None else flat.astype(np.uint64)
        _, inverse, cnt = np.unique(fp, return_inverse=True, return_counts=True)
        counts[j, pos] = cnt[inverse]
        ctx_hash.append(context_hash(win.contexts) if win is not None else np.zeros(0, np.uint64))
    tables = []
    for w in range(1, order):
        pos = np.flatnonzero(offset >= w)
        ctx, tok = ctx_hash[w], flat[pos]
        keys = [tok] + [-counts[j, pos] for j in range(w + 1)] + [ctx]
        srt = np.lexsort(keys)  # last key (context) is primary, then count at width w, w - 1, ...
        c, t = ctx[srt], tok[srt]
        first = np.r_[True, c[1:] != c[:-1]] if c.size else np.zeros(0, bool)
        tables.append(_OrderTable(c[first], t[first]))
    return tables


class NGramStudent:
    """A count-based n-gram language model with back-off, predicting the most frequent continuation."""

    def __init__(self, tables: list[_OrderTable], unigram_best: int, order: int) -> None:
        self._tables = tables  # index w-1 holds contexts of width w
        self.unigram_best = unigram_best
        self.order = order

    @classmethod
    def fit(cls, corpus: Sequence[npt.ArrayLike], order: int = 3) -> NGramStudent:
        """Count a corpus of token sequences; `order` = context width + 1 (3: two tokens of context)."""
        if not 2 <= order <= 9:
            raise SchemeError(f"n-gram order must be 2..9, got {order}")
        seqs = _as_list(corpus)
        flat = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        if flat.size == 0:
            raise SchemeError("cannot train an n-gram student on an empty corpus")
        tables = _fit_tables(seqs, order)
        return cls(tables, int(np.bincount(flat).argmax()), order)

    def predict(self, contexts: npt.ArrayLike) -> IntArray:
        """Top-1 next token for each row of `contexts` (n, order - 1), oldest first: back off as needed."""
        ctx = np.asarray(contexts, dtype=np.int64)
        if ctx.ndim != 2 or ctx.shape[1] != self.order - 1:
            raise SchemeError(f"contexts must be (n, {self.order - 1}), got shape {ctx.shape}")
        out = np.full(ctx.shape[0], self.unigram_best, dtype=np.int64)
        todo = np.ones(ctx.shape[0], dtype=bool)
        for w in range(self.order - 1, 0, -1):  # longest context first: at most order - 1 passes
            if not todo.any():
                break
            table = self._tables[w - 1]
            if table.contexts.size == 0:
                continue
            idx = np.flatnonzero(todo)
            # a context of width w is the last w ids; ids < 0 mark "before the start" (not a full context)
            sub = ctx[idx, -w:]
            full = (sub >= 0).all(axis=1)
            idx, sub = idx[full], sub[full]
            h = context_hash(sub)
            pos = np.minimum(np.searchsorted(table.contexts, h), table.contexts.size - 1)
            hit = table.contexts[pos] == h
            out[idx[hit]] = table.best[pos[hit]]
            todo[idx[hit]] = False
        return out

    def top1(self, sequences: Sequence[npt.ArrayLike]) -> list[IntArray]:
        seqs = _as_list(sequences)
        if not seqs:
            return []
        width = self.order - 1
        lengths = np.array([s.size for s in seqs])
        # left-pad each sequence with -1 so position i's context is the `width` ids before it
        padded = [np.r_[np.full(width, -1, np.int64), s] for s in seqs]
        flat = np.concatenate(padded)
        starts = np.cumsum(lengths + width) - (lengths + width)
        pos = np.concatenate(
            [np.arange(st + width, st + width + n) for st, n in zip(starts, lengths, strict=True)]
        )
        ctx = np.stack([flat[pos - width + j] for j in range(width)], axis=1)
        preds = self.predict(ctx)
        preds[ctx[:, -1] < 0] = -1  # nothing before the first token: no prediction
        return list(np.split(preds, np.cumsum(lengths)[:-1]))

    def save(self, path: Path) -> None:
        """Write the tables to an .npz file (loadable as a suspect by `forensics test`)."""
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "meta": np.array([self.order, self.unigram_best], dtype=np.int64)
        }
        for w, t in enumerate(self._tables, start=1):
            arrays[f"ctx{w}"] = t.contexts
            arrays[f"best{w}"] = t.best
        with path.open("wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> NGramStudent:
        if not path.is_file():
            raise SchemeError(f"n-gram student file not found: {path}")
        with np.load(path) as z:
            if "meta" not in z:
                raise SchemeError(f"{path}: not an n-gram student (.npz written by NGramStudent.save)")
            order, uni = (int(v) for v in z["meta"])
            tables = [
                _OrderTable(z[f"ctx{w}"].astype(np.uint64), z[f"best{w}"].astype(np.int64))
                for w in range(1, order)
            ]
        return cls(tables, uni, order)
