"""Detector compatible with MarkLLM's KGW and lm-watermarking's `simple_1` seeding.

A provider who already watermarks with those toolkits can switch detection to distillguard without
re-marking anything. Both build the green list of a context from torch's CPU generator:
a seeded `randperm(vocab)[: int(vocab * gamma)]`, the seed being
- `markllm` (MarkLLM 0.1.5, `f_scheme = time`, `window_scheme = left`): the seed itself is reduced
  mod vocab: `manual_seed((hash_key * prf[prod(last h ids) % vocab]) % vocab)`, prf being
  `randperm(vocab)` drawn once from a generator seeded with `hash_key` (so at most `vocab` distinct
  green lists exist, and the cache below holds all of them once warm);
- `simple_1` (lm-watermarking, and MarkLLM before the `f_scheme` option): `hash_key * previous id`.

Reproducing the permutations exactly needs torch's generator (the optional `forensics` extra), so
torch is imported here only, on first use. The reference detectors rebuild a 49,152-entry permutation
for every token; here each distinct seed's green list is built once, kept as a packed bit mask in a
bounded cache, and all positions of all texts are looked up in one vectorised pass.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from distillguard.forensics.keyed_hash import U64
from distillguard.forensics.keys import WatermarkKey
from distillguard.forensics.kgw import binomial_tail, binomial_z, check_logits
from distillguard.forensics.scheme import (
    BatchScores,
    Exclude,
    FloatArray,
    IntArray,
    KeyScores,
    SchemeError,
    ScoreResult,
    Tokens,
    register_scheme,
    select_windows,
    token_windows,
)

MARKLLM_HASH_KEY = 15485863
Seeding = Literal["markllm", "simple_1"]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # the optional extra is not installed
        raise SchemeError(
            "the MarkLLM-compatible KGW mode needs torch's CPU generator: "
            "pip install 'distillguard[forensics]' (torch==2.13.0)"
        ) from exc
    return torch


class TorchGreenLists:
    """Green lists from torch's CPU generator, as packed bit masks, with a bounded LRU cache."""

    def __init__(self, vocab_size: int, gamma: float, max_cached: int = 65_536) -> None:
        self.vocab_size = vocab_size
        self.green_size = int(vocab_size * gamma)  # as the reference code: int(), not round()
        self.max_cached = max_cached
        self._cache: OrderedDict[int, npt.NDArray[np.uint8]] = OrderedDict()
        self._gen: Any = None
        self.built = 0  # green lists built (cache misses), for benchmarks

    def permutation(self, seed: int) -> npt.NDArray[np.int64]:
        """`torch.randperm(vocab)` after `manual_seed(seed)` on a CPU generator."""
        torch = _torch()
        if self._gen is None:
            self._gen = torch.Generator(device="cpu")
        self._gen.manual_seed(int(seed))
        perm: npt.NDArray[np.int64] = torch.randperm(self.vocab_size, generator=self._gen).numpy()
        return perm

    def build(self, seed: int) -> npt.NDArray[np.uint8]:
        """The packed green mask of one seed (not cached)."""
        mask = np.zeros(self.vocab_size, dtype=bool)
        mask[self.permutation(seed)[: self.green_size]] = True
        self.built += 1
        return np.packbits(mask)

    def masks(self, seeds: Iterable[int]) -> npt.NDArray[np.uint8]:
        """Packed green masks (len(seeds), ceil(vocab / 8)), building only the ones not cached."""
        rows = []
        for s in seeds:  # one iteration per distinct context seed, not per token
            m = self._cache.get(s)
            if m is None:
                m = self.build(s)
                self._cache[s] = m
                if len(self._cache) > self.max_cached:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(s)
            rows.append(m)
        if not rows:
            return np.zeros((0, (self.vocab_size + 7) // 8), dtype=np.uint8)
        return np.stack(rows)


class GreenListTable:
    """Every green list of one configuration, as a memory-mapped file of bits filled on first use.

    The compatible schemes have at most `vocab` distinct green lists (one per context row: the seed
    below vocab for `markllm`, the previous token for `simple_1`), 302 MB of bits for a 49,152-token
    vocabulary. A detector process that opens a filled table never calls torch: every lookup is warm.
    Writers are idempotent (the same row always gets the same bits), so processes may share a table.
    """

    def __init__(self, path: Path, vocab_size: int) -> None:
        width = (vocab_size + 7) // 8
        built_path = path.with_name(path.stem + ".built.npy")
        mode: Literal["r+", "w+"] = "r+" if path.exists() and built_path.exists() else "w+"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.bits = np.lib.format.open_memmap(path, mode=mode, dtype=np.uint8, shape=(vocab_size, width))
        self.built = np.lib.format.open_memmap(built_path, mode=mode, dtype=np.bool_, shape=(vocab_size,))
        if self.bits.shape != (vocab_size, width) or self.built.shape != (vocab_size,):
            raise SchemeError(f"green-list table {path} has the wrong shape for a vocabulary of {vocab_size}")

    def fill(self, rows: npt.NDArray[np.int64], build: Callable[[int], npt.NDArray[np.uint8]]) -> int:
        """Build the rows not yet in the table; returns how many were built."""
        missing = rows[~self.built[rows]]
        for r in missing:  # one torch permutation per missing row, never per token
            self.bits[r] = build(int(r))
        if missing.size:
            self.bits.flush()
            self.built[missing] = True
            self.built.flush()
        return int(missing.size)


@register_scheme("markllm-kgw")
class MarkLLMKGW:
    """KGW as MarkLLM 0.1.5 (seeding `markllm`) or lm-watermarking (`simple_1`) compute it.

    Detection scores every token after the first `prefix_length` (no dedup, no exclusion by default
    in the reference tools: pass `dedup=False` to reproduce their z-scores exactly).
    """

    name = "markllm-kgw"

    def __init__(
        self,
        vocab_size: int = 49_152,
        gamma: float = 0.25,
        delta: float = 2.0,
        hash_key: int = MARKLLM_HASH_KEY,
        prefix_length: int = 1,
        seeding: Seeding = "markllm",
        max_cached: int = 65_536,
        table_dir: str | Path | None = None,
    ) -> None:
        if not 0.0 < gamma < 1.0:
            raise SchemeError(f"markllm-kgw: gamma must lie in (0, 1), got {gamma}")
        if seeding not in ("markllm", "simple_1"):
            raise SchemeError(f"markllm-kgw: seeding must be 'markllm' or 'simple_1', got {seeding!r}")
        if seeding == "simple_1" and prefix_length != 1:
            raise SchemeError("markllm-kgw: simple_1 seeding uses exactly one previous token")
        if not 1 <= prefix_length <= 8:
            raise SchemeError(f"markllm-kgw: prefix_length must be 1..8, got {prefix_length}")
        if vocab_size < 2:
            raise SchemeError(f"markllm-kgw: vocab_size must be >= 2, got {vocab_size}")
        self.vocab_size = int(vocab_size)
        self.gamma = float(gamma)
        self.delta = float(delta)
        self.hash_key = int(hash_key)
        self.context_width = int(prefix_length)
        self.seeding: Seeding = seeding
        self.green_lists = TorchGreenLists(self.vocab_size, self.gamma, max_cached)
        self._prf: dict[int, npt.NDArray[np.int64]] = {}
        self.table_dir = None if table_dir is None else Path(table_dir).expanduser()
        self._tables: dict[int, GreenListTable] = {}

    def __repr__(self) -> str:
        return (
            f"MarkLLMKGW(seeding={self.seeding!r}, gamma={self.gamma}, hash_key={self.hash_key}, "
            f"prefix_length={self.context_width}, vocab_size={self.vocab_size})"
        )

    @property
    def null_mean(self) -> float:
        return self.green_lists.green_size / self.vocab_size

    def _hash_key(self, key: WatermarkKey | None) -> int:
        return self.hash_key if key is None else int(key.seed)

    def _prf_for(self, hash_key: int) -> npt.NDArray[np.int64]:
        prf = self._prf.get(hash_key)
        if prf is None:
            prf = self.green_lists.permutation(hash_key)
            self._prf[hash_key] = prf
        return prf

    def context_rows(self, contexts: U64, hash_key: int) -> IntArray:
        """Each context's green-list row in [0, vocab): the seed (`markllm`) or previous id (`simple_1`)."""
        ctx = np.asarray(contexts, dtype=np.int64)
        if self.seeding == "simple_1":
            return ctx[:, -1]
        prod = np.ones(ctx.shape[0], dtype=np.int64)
        for j in range(ctx.shape[1]):  # over the prefix width (1 to 8), not over tokens
            # the reference multiplies Python ints (no overflow) then reduces mod vocab; so do we
            prod = (prod * (ctx[:, j] % self.vocab_size)) % self.vocab_size
        return (hash_key * self._prf_for(hash_key)[prod]) % self.vocab_size

    def row_seed(self, row: int, hash_key: int) -> int:
        """The generator seed of a green-list row (as torch's manual_seed receives it)."""
        return hash_key * row if self.seeding == "simple_1" else row

    def context_seeds(self, contexts: U64, hash_key: int) -> IntArray:
        """The generator seed of each context (n, h), vectorised."""
        rows = self.context_rows(contexts, hash_key)
        return hash_key * rows if self.seeding == "simple_1" else rows

    def table(self, hash_key: int) -> GreenListTable | None:
        """The on-disk table of this configuration (None without `table_dir`)."""
        if self.table_dir is None:
            return None
        t = self._tables.get(hash_key)
        if t is None:
            name = f"{self.seeding}-{hash_key}-v{self.vocab_size}-g{self.green_lists.green_size}.npy"
            t = GreenListTable(self.table_dir / name, self.vocab_size)
            self._tables[hash_key] = t
        return t

    def build_table(self, hash_key: int | None = None) -> int:
        """Fill the whole on-disk table (every row); returns the rows built. Needs `table_dir`."""
        hk = self.hash_key if hash_key is None else hash_key
        t = self.table(hk)
        if t is None:
            raise SchemeError("markllm-kgw: building a green-list table needs table_dir")
        return t.fill(np.arange(self.vocab_size), lambda r: self.green_lists.build(self.row_seed(r, hk)))

    def green_flags(self, contexts: U64, tokens: U64, hash_key: int) -> npt.NDArray[np.bool_]:
        """Green flag of each window: one mask per distinct context row, then one vectorised bit lookup."""
        if not tokens.size:
            return np.zeros(0, dtype=bool)
        tok = np.asarray(tokens, dtype=np.int64)
        ctx = np.asarray(contexts, dtype=np.int64)
        for what, arr in (("token", tok), ("context", ctx)):
            if int(arr.max()) >= self.vocab_size:
                bad = int(np.flatnonzero(arr.reshape(arr.shape[0], -1).max(axis=1) >= self.vocab_size)[0])
                raise SchemeError(f"{what} id at window {bad} is outside the vocabulary ({self.vocab_size})")
        rows = self.context_rows(contexts, hash_key)
        t = self.table(hash_key)
        if t is not None:
            t.fill(np.unique(rows), lambda r: self.green_lists.build(self.row_seed(r, hash_key)))
            byte = t.bits[rows, tok >> 3]
        else:
            uniq, inv = np.unique(rows, return_inverse=True)
            masks = self.green_lists.masks(self.row_seed(int(r), hash_key) for r in uniq)
            byte = masks[inv, tok >> 3]
        return ((byte >> (7 - (tok & 7)).astype(np.uint8)) & 1).astype(bool)

    def score(
        self,
        tokens: Tokens,
        key: WatermarkKey | None = None,
        *,
        exclude: Exclude = None,
        dedup: bool = True,
    ) -> ScoreResult:
        win = token_windows(tokens, self.context_width)
        keep = select_windows(win, exclude=exclude, dedup=dedup)
        green = self.green_flags(win.contexts[keep], win.tokens[keep], self._hash_key(key))
        per_token = np.full(win.n_input, np.nan)
        per_token[win.positions[keep]] = green
        n = np.array([float(green.size)])
        stat = np.array([float(green.sum())])
        return ScoreResult(
            scheme=self.name,
            n_scored=int(green.size),
            statistic=float(stat[0]),
            p_value=float(binomial_tail(stat, n, self.gamma)[0]),
            z=float(binomial_z(stat, n, self.gamma)[0]),
            token_scores=per_token,
            null_mean=self.gamma,
        )

    def score_each(
        self,
        sequences: list[npt.ArrayLike],
        key: WatermarkKey | None = None,
        *,
        exclude: Exclude = None,
        dedup: bool = True,
    ) -> BatchScores:
        """Each sequence tested on its own, all in one vectorised pass (as `HashedScheme.score_each`)."""
        win = token_windows(list(sequences), self.context_width)
        keep = select_windows(win, exclude=exclude, dedup=dedup, per_segment=True)
        green = self.green_flags(win.contexts[keep], win.tokens[keep], self._hash_key(key))
        seg = win.segments[keep]
        n = np.bincount(seg, minlength=win.n_segments).astype(np.float64)
        stat = np.asarray(
            np.bincount(seg, weights=green.astype(np.float64), minlength=win.n_segments), dtype=np.float64
        )
        return BatchScores(
            self.name,
            n.astype(np.int64),
            stat,
            binomial_tail(stat, n, self.gamma),
            binomial_z(stat, n, self.gamma),
        )

    def score_keys(
        self, tokens: Tokens, seeds: npt.ArrayLike, *, exclude: Exclude = None, dedup: bool = True
    ) -> KeyScores:
        """Many hash keys (rarely more than a few here: each key's green lists are built with torch)."""
        keys = np.atleast_1d(np.asarray(seeds, dtype=np.int64))
        win = token_windows(tokens, self.context_width)
        keep = select_windows(win, exclude=exclude, dedup=dedup)
        ctx, tok = win.contexts[keep], win.tokens[keep]
        stat = np.array([float(self.green_flags(ctx, tok, int(k)).sum()) for k in keys])
        n = np.full(keys.size, float(tok.size))
        return KeyScores(
            self.name,
            int(tok.size),
            stat,
            binomial_tail(stat, n, self.gamma),
            binomial_z(stat, n, self.gamma),
        )

    def windows(self, tokens: Tokens) -> U64:
        return token_windows(tokens, self.context_width).fingerprints

    def bias(self, input_ids: npt.ArrayLike, logits: npt.ArrayLike, key: WatermarkKey | None) -> FloatArray:
        ids, lg = check_logits(input_ids, logits)
        if ids.shape[1] < self.context_width:
            return lg.copy()
        seeds = self.context_seeds(ids[:, -self.context_width :].astype(np.uint64), self._hash_key(key))
        masks = np.unpackbits(self.green_lists.masks(int(s) for s in seeds), axis=1)[:, : self.vocab_size]
        if lg.shape[1] < self.vocab_size:
            raise SchemeError(
                f"logits have {lg.shape[1]} columns, fewer than the vocabulary {self.vocab_size}"
            )
        out = lg.copy()
        out[:, : self.vocab_size] += self.delta * masks
        return out


@register_scheme("lm-watermarking-kgw")
def lm_watermarking_kgw(**params: Any) -> MarkLLMKGW:
    """lm-watermarking's KGW with `simple_1` seeding (hash key 15485863, one previous token)."""
    params.setdefault("seeding", "simple_1")
    return MarkLLMKGW(**params)
