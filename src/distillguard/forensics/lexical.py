"""Post-hoc lexical watermark for black-box upstreams: keyed synonym substitution (CATER-style).

When the upstream model is someone else's API, the gateway never sees logits, so it marks the text
itself: every word that belongs to a synonym set (`distillguard/data/synonyms.tsv`, from WordNet) is
replaced by the member that a keyed hash picks. As in CATER (He et al., AAAI 2022), the choice is
*conditional*: it is keyed on the previous word as well as the set, so the same word maps to
different members in different contexts and an adversary cannot learn "the account's mapping" from a
word-frequency table; only someone with the key knows which member each (context, set) pair prefers.

Detection re-reads the text with the same scanner: each slot (a lexicon word with its previous word)
carries the keyed choice with probability 1/|set| when the text was not marked with that key (the key
is independent of the text, and the hash is a PRF of (key, previous word, set)). Slots with the same
(previous word, set) share one keyed coin, so they are deduplicated on that pair, not on the
(previous word, word) pair: "the big" and "the large" test the same coin, and their outcomes are
mutually exclusive rather than independent. The count of matches over the deduplicated slots is then
Poisson-binomial; its tail is computed exactly (one binomial per distinct set size, convolved), not
approximated, and not conditioned to a plain binomial, because the shipped sets have 2 to 5 members.

What is left alone, so that substitution never breaks what a reader or a program relies on: fenced
and inline code (backticks), runs that look like URLs, paths, e-mail addresses, identifiers or markup
(`_UNSAFE`), words glued to digits or underscores, compounds ("well-known", "don't"), mixed-case
words, and any non-space run longer than `MAX_RUN` characters. Case (lower, Title, UPPER),
punctuation and whitespace are kept exactly.

This is not a `WatermarkScheme` (scheme.py): that protocol biases next-token logits and scores token
ids, whereas this mark is applied to finished text and scored on words, with no tokenizer or logits.
It has its own small protocol (`TextWatermark`), and its detector offers `score_keys` with the
signature `attribution.attribute` uses, so account attribution (Holm / Bonferroni) is shared.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from scipy import stats

from distillguard.forensics.attribution import Attribution, Correction, attribute
from distillguard.forensics.keyed_hash import U64, keyed_values
from distillguard.forensics.keys import KeyRing, WatermarkKey
from distillguard.forensics.scheme import KeyScores, SchemeError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# a non-space run longer than this is code, a URL or data, never prose: passed through untouched.
# It also bounds what the streamer holds back while waiting for the end of a run.
MAX_RUN = 64
# keys x slots per vectorised block when scoring many keys (~32 MB per uint64 array)
_BLOCK_ELEMENTS = 4_000_000

_RUN = re.compile(r"\S+|\s+")
_BACKTICKS = re.compile(r"`+")
# an ASCII word not glued to other letters (any script), digits or underscores; "don't", "well-known"
# are one word each (and in no synonym set)
_WORD = re.compile(r"(?<!\w)[A-Za-z]+(?:['’-][A-Za-z]+)*(?!\w)(?!['’-]\w)")
# URLs, paths, e-mail, markup, code (calls, operators, scopes), decimals and dotted names
_UNSAFE = re.compile(r"[/\\@=<>{}\[\]|#$%^~+&]|::|[A-Za-z0-9_]\(|[A-Za-z0-9]\.[A-Za-z0-9]")
_MASK = (1 << 64) - 1


# -- hashing (pure-Python twin of keyed_hash.keyed_values for the streaming path) --------------------
def _mix64(z: int) -> int:
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & _MASK
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _keyed_int(seed: int, context: int, token: int) -> int:
    """keyed_values(seed, context, token) for one slot, without numpy's per-call overhead."""
    return _mix64(_mix64(seed ^ context) ^ (((token + 1) * 0xD6E8FEB86659FD93) & _MASK))


def _hash64(text: str, person: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=person).digest(), "big")


def word_context(prev: str) -> int:
    """The 64-bit context of a slot: a keyless hash of the previous word (lower case; '' at the start)."""
    return _hash64(prev, b"dg-lex-context")


# -- lexicon ----------------------------------------------------------------------------------------
class Lexicon:
    """Synonym sets; each word in at most one set, so a word's set is decidable from the word alone."""

    def __init__(self, sets: Iterable[Sequence[str]]) -> None:
        self.sets: tuple[tuple[str, ...], ...] = tuple(tuple(s) for s in sets)
        self.index: dict[str, tuple[int, int]] = {}  # word -> (set number, position in the set)
        for i, members in enumerate(self.sets):
            if len(members) < 2:
                raise SchemeError(f"lexicon set {i + 1} {members!r}: a synonym set needs 2+ members")
            for j, w in enumerate(members):
                if not (w.isascii() and w.isalpha() and w.islower()):
                    raise SchemeError(f"lexicon word {w!r}: only lower-case ASCII letters are supported")
                if w in self.index:
                    raise SchemeError(f"lexicon word {w!r} is in two sets: each word may be in one only")
                self.index[w] = (i, j)
        # a set's identity in the hash is its members, not its line number: adding sets to the
        # table leaves the marks of the existing ones unchanged
        self.set_hash = [_hash64("\t".join(m), b"dg-lex-set") for m in self.sets]
        self.sizes = np.array([len(m) for m in self.sets], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.sets)

    def __repr__(self) -> str:
        return f"Lexicon({len(self.sets)} sets, {len(self.index)} words)"

    @classmethod
    def from_tsv(cls, path: Path | None = None) -> Lexicon:
        """Load a TSV of sets (one a line, tab-separated, '#' comments); default: the shipped table."""
        if path is None:
            text = resources.files("distillguard").joinpath("data/synonyms.tsv").read_text(encoding="utf-8")
        else:
            text = path.read_text(encoding="utf-8")
        rows = [ln.split("\t") for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        return cls([w.strip() for w in r if w.strip()] for r in rows)


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    return Lexicon.from_tsv()


def _case_of(word: str) -> str | None:
    """'l', 't' or 'u' for lower, Title and UPPER words; None for mixed case (left alone)."""
    if word.islower():
        return "l"
    if word.isupper():
        return "u" if len(word) > 1 else None
    if word[0].isupper() and word[1:].islower():
        return "t"
    return None


def _with_case(word: str, case: str) -> str:
    return word if case == "l" else word.upper() if case == "u" else word.capitalize()


# -- the scanner that apply, detection and the attack share --------------------------------------------
# called with (previous word, set number, position of the word in its set); returns the position to write
SlotFn = Callable[[str, int, int], int]


class _Scanner:
    """Walks text incrementally; for every slot outside code and unsafe runs, asks `on_slot`.

    `feed` returns the text that is final (everything up to the last whitespace) and keeps the trailing
    non-space run, whose end (and so whose words) is not yet known, unless it is already longer than
    MAX_RUN, in which case it is passed through as it comes (only its backticks are tracked).
    """

    def __init__(self, lexicon: Lexicon, on_slot: SlotFn) -> None:
        self.lex = lexicon
        self.on_slot = on_slot
        self.prev = ""  # the previous word in the output, lower case
        self.fenced = False  # inside ``` ... ```
        self.inline = False  # inside ` ... ` (reset at a line break, as Markdown does)
        self.pending = ""  # the unfinished trailing non-space run
        self.passthrough = False  # the current run is longer than MAX_RUN: copy it as it comes

    def _ticks(self, s: str) -> None:
        for m in _BACKTICKS.finditer(s):
            if len(m.group()) >= 3:
                if not self.inline:
                    self.fenced = not self.fenced
            elif not self.fenced:
                self.inline = not self.inline

    def _words(self, run: str) -> str:
        out: list[str] = []
        last = 0
        for m in _WORD.finditer(run):
            w = m.group()
            lw = w.lower()
            hit = self.lex.index.get(lw)
            case = _case_of(w) if hit is not None else None
            if hit is None or case is None:
                self.prev = lw
                continue
            set_no, pos = hit
            new_pos = self.on_slot(self.prev, set_no, pos)
            new = self.lex.sets[set_no][new_pos]
            self.prev = new
            if new_pos != pos:
                out.append(run[last : m.start()])
                out.append(_with_case(new, case))
                last = m.end()
        if not out:
            return run
        out.append(run[last:])
        return "".join(out)

    def _run(self, run: str) -> str:
        """One complete non-space run of at most MAX_RUN characters."""
        in_code = self.fenced or self.inline
        if "`" in run:
            self._ticks(run)
            return run
        if in_code or _UNSAFE.search(run):
            return run
        return self._words(run)

    def _space(self, ws: str) -> str:
        if "\n" in ws:
            self.inline = False
        return ws

    def _pass(self, s: str, final: bool) -> str:
        """Copy part of a long run; hold back trailing backticks so that a run of them is never split."""
        cut = len(s) if final else len(s.rstrip("`"))
        self._ticks(s[:cut])
        self.pending = s[cut:]
        return s[:cut]

    def feed(self, text: str) -> str:
        buf = self.pending + text
        self.pending = ""
        out: list[str] = []
        for m in _RUN.finditer(buf):
            piece = m.group()
            if piece[0].isspace():
                self.passthrough = False
                out.append(self._space(piece))
            elif m.end() < len(buf):  # a complete run: whitespace follows
                long = self.passthrough or len(piece) > MAX_RUN
                out.append(self._pass(piece, final=True) if long else self._run(piece))
            elif self.passthrough or len(piece) > MAX_RUN:  # a long run still going on: copy it
                self.passthrough = True
                out.append(self._pass(piece, final=False))
            else:
                self.pending = piece  # the last run may go on in the next delta
        return "".join(out)

    def flush(self) -> str:
        buf, self.pending = self.pending, ""
        if not buf:
            return ""
        if self.passthrough or len(buf) > MAX_RUN:
            self.passthrough = False
            return self._pass(buf, final=True)
        return self._run(buf)


# -- the watermarker --------------------------------------------------------------------------------
@runtime_checkable
class TextStreamer(Protocol):
    def feed(self, delta: str) -> str: ...
    def flush(self) -> str: ...


@runtime_checkable
class TextWatermark(Protocol):
    """A watermark applied to finished text (post hoc), in one piece or as a stream of deltas."""

    name: str

    def apply(self, text: str) -> str: ...
    def streamer(self) -> TextStreamer: ...


class LexicalStreamer:
    """Marks a stream of text deltas (e.g. SSE chunks): `feed` returns what is final, `flush` the rest.

    Concatenating every `feed` output and `flush()` equals `apply(whole text)` for any chunking.
    """

    def __init__(self, seed: int, lexicon: Lexicon) -> None:
        self._seed = seed
        self._scan = _Scanner(lexicon, self._choose)

    def _choose(self, prev: str, set_no: int, pos: int) -> int:
        lex = self._scan.lex
        return _keyed_int(self._seed, word_context(prev), lex.set_hash[set_no]) % len(lex.sets[set_no])

    def feed(self, delta: str) -> str:
        return self._scan.feed(delta)

    def flush(self) -> str:
        return self._scan.flush()


class LexicalWatermarker:
    """Keyed synonym substitution with one account's key (`ProviderSecret.account_key(account)`)."""

    name = "lexical"

    def __init__(self, key: WatermarkKey, lexicon: Lexicon | None = None) -> None:
        if not isinstance(key, WatermarkKey):
            raise SchemeError("the lexical watermark is keyed: pass a WatermarkKey")
        self.key = key
        self.lexicon = lexicon if lexicon is not None else default_lexicon()

    def __repr__(self) -> str:
        return f"LexicalWatermarker({self.key.label}, {self.lexicon!r})"

    def streamer(self) -> LexicalStreamer:
        return LexicalStreamer(self.key.seed, self.lexicon)

    def apply(self, text: str) -> str:
        s = self.streamer()
        return s.feed(text) + s.flush()


# -- detection --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Slots:
    """Every slot of one or more texts: context hash, set hash, set size, which member was written."""

    context: U64
    set_hash: U64
    size: IntArray
    observed: IntArray
    segment: IntArray  # which input text the slot came from

    def take(self, mask: npt.NDArray[np.bool_]) -> Slots:
        return Slots(self.context[mask], self.set_hash[mask], self.size[mask], self.observed[mask],
                     self.segment[mask])  # fmt: skip

    @property
    def key(self) -> U64:
        """One value per keyed coin: equal (previous word, set) pairs, equal values (dedup, exclusion)."""
        return np.asarray(
            keyed_values(np.zeros(1, dtype=np.uint64), self.context, self.set_hash), dtype=np.uint64
        )


def lexical_slots(texts: str | Sequence[str], lexicon: Lexicon | None = None) -> Slots:
    """Read the slots of a text (or of each of several texts) with the watermarker's own scanner."""
    lex = lexicon if lexicon is not None else default_lexicon()
    items = [texts] if isinstance(texts, str) else list(texts)
    ctx: list[int] = []
    sh: list[int] = []
    size: list[int] = []
    obs: list[int] = []
    seg: list[int] = []
    for i, text in enumerate(items):

        def record(prev: str, set_no: int, pos: int, i: int = i) -> int:
            ctx.append(word_context(prev))
            sh.append(lex.set_hash[set_no])
            size.append(len(lex.sets[set_no]))
            obs.append(pos)
            seg.append(i)
            return pos  # read only: write the word back unchanged

        scan = _Scanner(lex, record)
        scan.feed(text)
        scan.flush()
    return Slots(
        np.array(ctx, dtype=np.uint64),
        np.array(sh, dtype=np.uint64),
        np.array(size, dtype=np.int64),
        np.array(obs, dtype=np.int64),
        np.array(seg, dtype=np.int64),
    )


def select_slots(
    slots: Slots, *, exclude: U64 | None = None, dedup: bool = True, per_segment: bool = False
) -> npt.NDArray[np.bool_]:
    """Boolean mask: drop excluded (previous word, set) coins, then keep the first of each repeated one."""
    keep = np.ones(slots.size.size, dtype=bool)
    if not keep.size:
        return keep
    k = slots.key
    if exclude is not None and exclude.size:
        keep &= ~np.isin(k, exclude)
    if dedup:
        kk = k ^ (slots.segment.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) if per_segment else k
        idx = np.flatnonzero(keep)
        _, first = np.unique(kk[idx], return_index=True)
        keep = np.zeros_like(keep)
        keep[idx[first]] = True
    return keep


def match_tail(sizes: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """(pmf, sf) of the number of matches over slots whose null match rates are 1/size, exactly.

    The count is a sum of independent Bernoulli(1/size) variables (Poisson-binomial). Slots with the
    same size form one binomial; the pmf is the convolution of these few binomials (set sizes 2..5
    give at most four), each convolution a direct sum of positive terms, so small tails keep their
    relative precision (an FFT would not). `sf[c] = P(X >= c)`, with `sf[n + 1] = 0`.
    """
    sz = np.asarray(sizes, dtype=np.int64)
    if sz.size and int(sz.min()) < 2:
        raise SchemeError("synonym sets have at least 2 members")
    values, counts = np.unique(sz, return_counts=True)
    return _tail(tuple(zip(values.tolist(), counts.tolist(), strict=True)))


@lru_cache(maxsize=8192)
def _tail(composition: tuple[tuple[int, int], ...]) -> tuple[FloatArray, FloatArray]:
    """match_tail for (set size, number of slots) pairs: cached, as many texts share a composition."""
    pmf = np.ones(1)
    for s, m in composition:  # one pass per distinct set size
        pmf = np.convolve(pmf, stats.binom.pmf(np.arange(m + 1), m, 1.0 / s))
    sf = np.minimum(np.cumsum(pmf[::-1])[::-1], 1.0)
    pmf.setflags(write=False)
    out = np.r_[sf, 0.0]
    out.setflags(write=False)
    return pmf, out


def lexical_p_values(
    matches: npt.ArrayLike, sizes: npt.ArrayLike, rng: np.random.Generator | None = None
) -> FloatArray:
    """Exact P(X >= matches) for each count in `matches`, X the Poisson-binomial of `sizes`.

    The exact test is discrete, hence conservative (P(p <= a) <= a). With `rng`, the randomised
    p-value P(X > c) + U P(X = c) is returned instead, which is exactly uniform under the null; use it
    for calibration studies, not for evidence (two runs give two different p-values).
    """
    c = np.asarray(matches, dtype=np.int64)
    pmf, sf = match_tail(sizes)
    if rng is None:
        return sf[c]
    u = rng.random(c.shape)
    return sf[c + 1] + u * pmf[c]


@dataclass(frozen=True)
class LexicalScore:
    """One text (or pooled texts) against one or more keys."""

    labels: list[str]
    n_slots: int  # deduplicated slots scored
    matches: IntArray  # per key: slots carrying that key's choice
    expected: float  # mean matches under the null
    p_value: FloatArray  # per key, exact
    z: FloatArray


class LexicalDetector:
    """Scores texts for the lexical mark; `score_keys` plugs into `attribution.attribute`."""

    name = "lexical"

    def __init__(self, lexicon: Lexicon | None = None) -> None:
        self.lexicon = lexicon if lexicon is not None else default_lexicon()

    def __repr__(self) -> str:
        return f"LexicalDetector({self.lexicon!r})"

    def windows(self, texts: str | Sequence[str]) -> U64:
        """The keyed coins (previous word, set) of `texts` (e.g. the prompt): pass as `exclude`."""
        return lexical_slots(texts, self.lexicon).key

    def _matches(self, seeds: U64, slots: Slots) -> IntArray:
        """Matches (k,) of each key over the given slots, in blocks of keys x slots."""
        out = np.zeros(seeds.size, dtype=np.int64)
        if not slots.size.size:
            return out
        sz = slots.size.astype(np.uint64)
        block = max(1, _BLOCK_ELEMENTS // slots.size.size)
        for lo in range(0, seeds.size, block):  # bounded: ceil(keys / block) iterations
            kv = keyed_values(seeds[lo : lo + block, None], slots.context[None, :], slots.set_hash[None, :])
            out[lo : lo + block] = ((kv % sz[None, :]).astype(np.int64) == slots.observed[None, :]).sum(1)
        return out

    def slots(self, texts: str | Sequence[str], *, exclude: U64 | None = None, dedup: bool = True) -> Slots:
        """The slots that are scored: prompt coins excluded, repeated coins once."""
        slots = lexical_slots(texts, self.lexicon)
        return slots.take(select_slots(slots, exclude=exclude, dedup=dedup))

    def score_slots(self, slots: Slots, seeds: npt.ArrayLike) -> KeyScores:
        keys = np.atleast_1d(np.asarray(seeds)).astype(np.uint64)
        m = self._matches(keys, slots)
        p = lexical_p_values(m, slots.size)
        q = 1.0 / slots.size
        mean, var = float(q.sum()), float((q * (1 - q)).sum())
        z = (m - mean) / np.sqrt(var) if var > 0 else np.zeros(keys.size)
        return KeyScores(self.name, int(slots.size.size), m.astype(np.float64), p, z)

    def score_keys(
        self,
        texts: str | Sequence[str],
        seeds: npt.ArrayLike,
        *,
        exclude: U64 | None = None,
        dedup: bool = True,
    ) -> KeyScores:
        """Test one (pooled) sample against many keys: the signature `attribution.attribute` calls."""
        return self.score_slots(self.slots(texts, exclude=exclude, dedup=dedup), seeds)

    def score_each(
        self, texts: Sequence[str], key: WatermarkKey, *, dedup: bool = True
    ) -> tuple[IntArray, IntArray, FloatArray]:
        """Each text on its own: (slots, matches, exact p-value) per text, one vectorised hash pass."""
        slots = lexical_slots(list(texts), self.lexicon)
        keep = select_slots(slots, dedup=dedup, per_segment=True)
        seg = slots.segment[keep]
        kv = keyed_values(np.full(1, key.seed, dtype=np.uint64), slots.context[keep], slots.set_hash[keep])
        hit = (kv % slots.size[keep].astype(np.uint64)).astype(np.int64) == slots.observed[keep]
        n = np.bincount(seg, minlength=len(texts))
        m = np.bincount(seg, weights=hit, minlength=len(texts)).astype(np.int64)
        p = np.ones(len(texts))
        sizes = slots.size[keep]
        for i in np.flatnonzero(n):  # one small convolution per text; the hashing above is vectorised
            p[i] = lexical_p_values(m[i : i + 1], sizes[seg == i])[0]
        return n, m, p


def detect_lexical(
    text: str | Sequence[str],
    keys: WatermarkKey | KeyRing | Sequence[WatermarkKey],
    *,
    lexicon: Lexicon | None = None,
    exclude: U64 | None = None,
    dedup: bool = True,
) -> LexicalScore:
    """Per-key statistic for a text (several texts are pooled): matches, exact p-value, z."""
    if isinstance(keys, KeyRing):
        ring = keys
    else:
        ring = KeyRing((keys,) if isinstance(keys, WatermarkKey) else tuple(keys))
    det = LexicalDetector(lexicon)
    slots = det.slots(text, exclude=exclude, dedup=dedup)
    ks = det.score_slots(slots, ring.seeds)
    return LexicalScore(
        labels=ring.labels,
        n_slots=ks.n_scored,
        matches=ks.statistic.astype(np.int64),
        expected=float((1.0 / slots.size).sum()),
        p_value=ks.p_value,
        z=ks.z,
    )


def attribute_lexical(
    text: str | Sequence[str],
    ring: KeyRing,
    *,
    alpha: float = 1e-3,
    correction: Correction = "holm",
    lexicon: Lexicon | None = None,
    exclude: U64 | None = None,
) -> Attribution:
    """Which account's lexical mark is in `text`: every key tested, family-wise error controlled."""
    det = LexicalDetector(lexicon)
    return attribute(det, text, ring, alpha=alpha, correction=correction, exclude=exclude)


# -- the adversary ------------------------------------------------------------------------------------
def substitute(
    text: str,
    fraction: float,
    rng: np.random.Generator | random.Random,
    lexicon: Lexicon | None = None,
) -> str:
    """An adversary's synonym paraphrase: replace `fraction` of the replaceable words by another synonym.

    The replaceable words are the lexicon words the watermark itself would consider (same scanner);
    round(fraction * n) of them, chosen at random, each become a random *other* member of their set.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    lex = lexicon if lexicon is not None else default_lexicon()
    n = int(lexical_slots(text, lex).size.size)
    k = round(fraction * n)
    if isinstance(rng, random.Random):
        chosen = set(rng.sample(range(n), k))
        draw: Callable[[int], int] = rng.randrange
    else:
        chosen = set(rng.choice(n, size=k, replace=False).tolist()) if k else set()
        draw = lambda m: int(rng.integers(m))  # noqa: E731
    seen = [0]

    def swap(prev: str, set_no: int, pos: int) -> int:
        i = seen[0]
        seen[0] += 1
        if i not in chosen:
            return pos
        return (pos + 1 + draw(len(lex.sets[set_no]) - 1)) % len(lex.sets[set_no])  # never the same word

    scan = _Scanner(lex, swap)
    return scan.feed(text) + scan.flush()


_ATTACK_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def replace_words(
    text: str,
    fraction: float,
    rng: np.random.Generator,
    vocabulary: Sequence[str],
    lexicon: Lexicon | None = None,
) -> str:
    """A cruder, stronger paraphrase attack: `fraction` of *all* words replaced.

    Each chosen word becomes a synonym when the lexicon has one, otherwise a random word of
    `vocabulary`. The lexicon covers about 1% of running words, so `substitute` at 50% changes well
    under 1% of a text; this attack changes the stated share of words, an upper bound on what a
    synonym paraphrase of that share could do to a token-level mark.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    if not vocabulary:
        raise ValueError("vocabulary is empty")
    lex = lexicon if lexicon is not None else default_lexicon()
    spans = [m.span() for m in _ATTACK_WORD.finditer(text)]
    k = round(fraction * len(spans))
    if not k:
        return text
    chosen = np.sort(rng.choice(len(spans), size=k, replace=False))
    out: list[str] = []
    last = 0
    for i in chosen.tolist():
        a, b = spans[i]
        word = text[a:b]
        where = lex.index.get(word.lower())
        if where is not None:
            members = lex.sets[where[0]]
            new = members[(where[1] + 1 + int(rng.integers(len(members) - 1))) % len(members)]
        else:
            new = vocabulary[int(rng.integers(len(vocabulary)))]
        if word[:1].isupper():
            new = new[:1].upper() + new[1:]
        out += [text[last:a], new]
        last = b
    out.append(text[last:])
    return "".join(out)
