"""The watermark scheme protocol, the scoring every scheme shares, and the registry that finds schemes.

A scheme does two things with a key:
- `bias(input_ids, logits, key)`: at generation, turn the next-token logits (batch, vocab) into
  watermarked logits, given the ids so far (batch, t). numpy in, numpy out, so the transformers
  `LogitsProcessor` and the vLLM adapter are thin wrappers and this module never imports torch.
- `score(tokens, key, exclude=..., dedup=...)`: at detection, test a token sequence (or several,
  scored as one pooled sample) for the mark and return a `ScoreResult` with an exact p-value.

Scoring follows Sander et al. (2024): each scored unit is a (context, token) window of width h + 1;
repeated windows are scored once (`dedup`), because a repeated window repeats the same keyed coin and
would inflate the evidence; windows that occur in the prompt are dropped (`exclude`), because an
answer that copies its prompt copies text the watermark did not choose.

Schemes register under a name (`register_scheme`) and are built with `get_scheme(name, **params)`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from distillguard.forensics.keyed_hash import U64, as_u64, fingerprints, mix64
from distillguard.forensics.keys import WatermarkKey

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# one token sequence, or several scored as one pooled sample (windows never cross two sequences)
Tokens = npt.ArrayLike | Sequence[npt.ArrayLike]
# windows to leave out: their keyless fingerprints (`scheme.windows(prompt_ids)`), or the windows as tuples
Exclude = npt.NDArray[np.uint64] | AbstractSet[tuple[int, ...]] | None

# keys x positions per vectorised block when scoring many keys: bounds memory to ~32 MB per array
_BLOCK_ELEMENTS = 4_000_000


class SchemeError(ValueError):
    """A scheme that cannot be built or used as asked (unknown name, bad parameter, bad input)."""


@dataclass(frozen=True)
class ScoreResult:
    """One test of token sequence(s) against one key.

    `token_scores` has one entry per input token (concatenated when several sequences were scored):
    the token's contribution to the statistic (KGW: 1.0 green / 0.0 red; Gumbel: -log(1 - r)), NaN
    where the token was not scored (no full context, a repeated window, or a prompt window).
    """

    scheme: str
    n_scored: int
    statistic: float
    p_value: float
    z: float
    token_scores: FloatArray
    null_mean: float

    @property
    def scored(self) -> BoolArray:
        return ~np.isnan(self.token_scores)

    @property
    def green(self) -> BoolArray:
        """Per-token flags: scored and above the null mean (KGW: in the green list)."""
        with np.errstate(invalid="ignore"):
            return np.asarray(self.token_scores > self.null_mean)


@dataclass(frozen=True)
class BatchScores:
    """Per-sequence results of `score_each`: arrays of one entry per sequence."""

    scheme: str
    n_scored: IntArray
    statistic: FloatArray
    p_value: FloatArray
    z: FloatArray


@dataclass(frozen=True)
class KeyScores:
    """One (pooled) sample tested against many keys: arrays of one entry per key (attribution)."""

    scheme: str
    n_scored: int
    statistic: FloatArray
    p_value: FloatArray
    z: FloatArray


@runtime_checkable
class WatermarkScheme(Protocol):
    """What generation and detection need from a watermark scheme."""

    name: str
    context_width: int

    def bias(self, input_ids: npt.ArrayLike, logits: npt.ArrayLike, key: WatermarkKey) -> FloatArray:
        """Watermarked next-token logits (batch, vocab) given the ids so far (batch, t)."""
        ...

    def score(
        self, tokens: Tokens, key: WatermarkKey, *, exclude: Exclude = None, dedup: bool = True
    ) -> ScoreResult:
        """Test token sequence(s) for this key's mark."""
        ...


@dataclass(frozen=True)
class TokenWindows:
    """Every scorable (context, token) window of one or more sequences, as flat arrays."""

    contexts: U64  # (n, h) context token ids, oldest first
    tokens: U64  # (n,) the token scored
    positions: IntArray  # (n,) index of the token in the concatenated input
    segments: IntArray  # (n,) which input sequence it came from
    n_input: int  # tokens in the concatenated input
    n_segments: int

    @property
    def fingerprints(self) -> U64:
        """Keyless fingerprint of each full window (context + token): equal windows, equal values."""
        return fingerprints(np.concatenate([self.contexts, self.tokens[:, None]], axis=1))


def _as_segments(tokens: Tokens) -> list[npt.NDArray[Any]]:
    if isinstance(tokens, list | tuple):
        if not tokens:
            return []
        if np.ndim(tokens[0]) == 0:  # a flat list of ints: one sequence
            return [np.asarray(tokens)]
        return [np.asarray(t) for t in tokens]
    one = np.asarray(tokens)
    if one.ndim == 1:
        return [one]
    if one.ndim == 2:  # a (batch, t) array: each row a sequence
        return list(one)
    raise SchemeError(f"tokens must be 1-D, 2-D or a list of 1-D arrays, got shape {one.shape}")


def token_windows(tokens: Tokens, width: int) -> TokenWindows:
    """Windows of `width` context ids + the token, for every position with a full context.

    Works on the concatenation of all sequences at once: a position is scorable when it is at least
    `width` tokens into its own sequence, and its context is gathered by index arithmetic, so the
    cost is a few array passes whatever the number of sequences.
    """
    segs = _as_segments(tokens)
    lengths = np.fromiter((s.size for s in segs), dtype=np.int64, count=len(segs))
    n_input = int(lengths.sum())
    flat = np.concatenate(segs) if n_input else np.zeros(0, dtype=np.int64)
    if flat.ndim != 1 or (n_input and flat.dtype.kind not in "iu"):
        bad = next(i for i, s in enumerate(segs) if s.ndim != 1 or (s.size and s.dtype.kind not in "iu"))
        raise SchemeError(
            f"sequence {bad}: token ids must be a 1-D integer array, got shape {segs[bad].shape}, "
            f"dtype {segs[bad].dtype}"
        )
    if n_input and flat.dtype.kind == "i" and int(flat.min()) < 0:
        at = int(np.argmin(flat))
        seg = int(np.searchsorted(np.cumsum(lengths), at, side="right"))
        raise SchemeError(f"sequence {seg}: negative token id {int(flat[at])}")
    flat = as_u64(flat)
    starts = np.cumsum(lengths) - lengths
    seg_of = np.repeat(np.arange(len(segs), dtype=np.int64), lengths)
    offset = np.arange(n_input, dtype=np.int64) - np.repeat(starts, lengths)
    pos = np.flatnonzero(offset >= width)
    ctx = np.empty((pos.size, width), dtype=np.uint64)
    for j in range(width):  # over the context width (1 to 8), not over tokens
        ctx[:, j] = flat[pos - width + j]
    return TokenWindows(ctx, flat[pos], pos, seg_of[pos], n_input, len(segs))


def _exclude_fingerprints(exclude: Exclude, width: int) -> U64 | None:
    if exclude is None:
        return None
    if isinstance(exclude, np.ndarray):
        return as_u64(exclude).ravel()
    rows = [tuple(w) for w in exclude]
    if not rows:
        return None
    bad = next((w for w in rows if len(w) != width + 1), None)
    if bad is not None:
        raise SchemeError(f"excluded window {bad} has {len(bad)} ids; this scheme's windows have {width + 1}")
    return fingerprints(np.asarray(rows, dtype=np.int64))


def select_windows(
    win: TokenWindows, *, exclude: Exclude, dedup: bool, per_segment: bool = False
) -> BoolArray:
    """Which windows to score: drop prompt windows, then keep the first of each repeated window.

    `per_segment`: dedup within each sequence (independent per-text tests) instead of across all.
    """
    keep = np.ones(win.tokens.size, dtype=bool)
    if not win.tokens.size or (exclude is None and not dedup):
        return keep
    fp = win.fingerprints
    ex = _exclude_fingerprints(exclude, win.contexts.shape[1])
    if ex is not None and ex.size:
        keep &= ~np.isin(fp, ex)
    if dedup:
        key = mix64(fp ^ win.segments.astype(np.uint64)) if per_segment else fp
        idx = np.flatnonzero(keep)
        if not idx.size:  # every window excluded: nothing left to dedup
            return keep
        # equal windows score equally, so which copy is kept only moves a NaN in `token_scores`;
        # keep the first, via an unstable (fast) sort and the smallest index of each run of equals
        order = np.argsort(key[idx])
        sk = key[idx][order]
        run_start = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
        first = np.minimum.reduceat(idx[order], run_start) if run_start.size else run_start
        keep = np.zeros_like(keep)
        keep[first] = True
    return keep


def _seed_of(scheme: str, key: WatermarkKey | None) -> U64:
    if not isinstance(key, WatermarkKey):
        raise SchemeError(f"scheme {scheme} is keyed: pass a WatermarkKey (an account's or the provider's)")
    return np.array([key.seed], dtype=np.uint64)


class HashedScheme(ABC):
    """Shared machinery of schemes whose per-token score is a function of a keyed window hash.

    Subclasses give the per-token score for many keys at once (`_token_scores`), its null mean, and the
    exact tail of the summed statistic (`_p_values`); this class handles windows, dedup, exclusion,
    pooling, per-sequence scoring and many-key scoring, all vectorised.
    """

    name: str = ""
    context_width: int = 1

    # -- what a scheme defines ------------------------------------------------------------------------
    @abstractmethod
    def _token_scores(self, seeds: U64, contexts: U64, tokens: U64) -> FloatArray:
        """Per-token scores (k, n) for seeds (k,), context ids (n, h) and tokens (n,)."""

    @abstractmethod
    def _p_values(self, statistic: FloatArray, n: FloatArray) -> FloatArray:
        """Exact upper-tail p-values of the summed statistic over n scored tokens."""

    @abstractmethod
    def _z(self, statistic: FloatArray, n: FloatArray) -> FloatArray:
        """Standardised statistic (for display and for comparison with z-score tools)."""

    @property
    @abstractmethod
    def null_mean(self) -> float:
        """Mean per-token score of text not marked with the key."""

    @abstractmethod
    def bias(self, input_ids: npt.ArrayLike, logits: npt.ArrayLike, key: WatermarkKey) -> FloatArray: ...

    # -- shared ---------------------------------------------------------------------------------------
    def windows(self, tokens: Tokens) -> U64:
        """Fingerprints of this scheme's windows in `tokens` (e.g. the prompt): pass as `exclude`."""
        return token_windows(tokens, self.context_width).fingerprints

    def score(
        self, tokens: Tokens, key: WatermarkKey, *, exclude: Exclude = None, dedup: bool = True
    ) -> ScoreResult:
        win = token_windows(tokens, self.context_width)
        keep = select_windows(win, exclude=exclude, dedup=dedup)
        seeds = _seed_of(self.name, key)
        vals = self._token_scores(seeds, win.contexts[keep], win.tokens[keep])[0]
        per_token = np.full(win.n_input, np.nan)
        per_token[win.positions[keep]] = vals
        n = np.array([float(vals.size)])
        stat = np.array([float(vals.sum())])
        return ScoreResult(
            scheme=self.name,
            n_scored=int(vals.size),
            statistic=float(stat[0]),
            p_value=float(self._p_values(stat, n)[0]),
            z=float(self._z(stat, n)[0]),
            token_scores=per_token,
            null_mean=self.null_mean,
        )

    def score_each(
        self,
        sequences: Sequence[npt.ArrayLike],
        key: WatermarkKey,
        *,
        exclude: Exclude = None,
        dedup: bool = True,
    ) -> BatchScores:
        """Test each sequence on its own (dedup within each): one vectorised pass over all of them."""
        win = token_windows(list(sequences), self.context_width)
        keep = select_windows(win, exclude=exclude, dedup=dedup, per_segment=True)
        seeds = _seed_of(self.name, key)
        vals = self._token_scores(seeds, win.contexts[keep], win.tokens[keep])[0]
        seg = win.segments[keep]
        n = np.bincount(seg, minlength=win.n_segments).astype(np.float64)
        stat = np.asarray(np.bincount(seg, weights=vals, minlength=win.n_segments), dtype=np.float64)
        return BatchScores(self.name, n.astype(np.int64), stat, self._p_values(stat, n), self._z(stat, n))

    def score_keys(
        self, tokens: Tokens, seeds: npt.ArrayLike, *, exclude: Exclude = None, dedup: bool = True
    ) -> KeyScores:
        """Test one (pooled) sample against many keys (attribution): blocks of keys x all positions."""
        keys = as_u64(np.atleast_1d(np.asarray(seeds)))
        win = token_windows(tokens, self.context_width)
        keep = select_windows(win, exclude=exclude, dedup=dedup)
        ctx, tok = win.contexts[keep], win.tokens[keep]
        stat = np.zeros(keys.size)
        block = max(1, _BLOCK_ELEMENTS // max(1, tok.size))
        for lo in range(0, keys.size, block):  # bounded: ceil(keys / block) iterations
            stat[lo : lo + block] = self._token_scores(keys[lo : lo + block], ctx, tok).sum(axis=1)
        n = np.full(keys.size, float(tok.size))
        return KeyScores(self.name, int(tok.size), stat, self._p_values(stat, n), self._z(stat, n))


# -- registry ---------------------------------------------------------------------------------------
S = TypeVar("S")
_REGISTRY: dict[str, Callable[..., WatermarkScheme]] = {}
# built-in schemes, imported on first use so that `scheme` imports nothing heavy
_BUILTIN = {
    "kgw": "distillguard.forensics.kgw",
    "gumbel": "distillguard.forensics.gumbel",
    "markllm-kgw": "distillguard.forensics.markllm",
    "lm-watermarking-kgw": "distillguard.forensics.markllm",
}


def register_scheme(name: str) -> Callable[[S], S]:
    """Class decorator: make a scheme buildable as `get_scheme(name, **params)`."""

    def deco(factory: S) -> S:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise SchemeError(f"watermark scheme {name!r} is already registered")
        _REGISTRY[name] = factory  # type: ignore[assignment]
        return factory

    return deco


def scheme_names() -> list[str]:
    """Every scheme `get_scheme` can build."""
    return sorted(set(_REGISTRY) | set(_BUILTIN))


def get_scheme(name: str, **params: Any) -> WatermarkScheme:
    """Build the scheme registered as `name` with `params` (e.g. `get_scheme("kgw", gamma=0.25)`)."""
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    factory = _REGISTRY.get(name)
    if factory is None:
        raise SchemeError(f"unknown watermark scheme {name!r}; known: {', '.join(scheme_names())}")
    try:
        return factory(**params)
    except TypeError as exc:
        raise SchemeError(f"scheme {name!r}: bad parameters {sorted(params)}: {exc}") from exc
