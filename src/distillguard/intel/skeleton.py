"""Prompt templates as shareable skeletons.

A skeleton (a prompt with numbers, quoted spans and addresses masked, see `detect.skeletons`) still holds
the words that fill a template's slots: a question from a dataset, a ticket, a review. Those fillers are
usually longer than the template, so two prompts of one template can be less similar than two prompts
that share a filler, and a sketch of a whole skeleton says more about the filler than the template.

What an automated account repeats is its template. Per account, the words that occur in at least
`min_share` of its sampled skeletons are its template vocabulary; projecting each skeleton onto it (other
runs of words masked to one `#`) leaves the template, whatever the fillers. Both sides of an intel
exchange project the same way: the publisher its campaign's accounts, the matcher every account of its
own traffic. Projections with too few template words (a person's chat, where only "the" and "how"
repeat) are dropped. Only keyed sketches of projections leave a provider, never their text.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from distillguard.detect.skeletons import MIN_TEMPLATE_CHARS, Templates

MIN_ROWS = 4  # sampled skeletons an account needs before its repeated words mean anything
MIN_SHARE = 0.3  # an account running up to three templates still shows each
MIN_WORDS = 6  # distinct template words a projection needs (fewer would match half the world)


def project(words: list[str], vocab: set[str]) -> str:
    out: list[str] = []
    for w in words:
        tok = w if w in vocab else "#"
        if not (tok == "#" and out and out[-1] == "#"):
            out.append(tok)
    return " ".join(out)


def projections(
    tpl: Templates, min_rows: int = MIN_ROWS, min_share: float = MIN_SHARE, min_words: int = MIN_WORDS
) -> np.ndarray:
    """Template projection of every sampled skeleton of `tpl` (object array; None where the account
    repeats too little or the projection holds too few template words)."""
    n = len(tpl.account_id)
    out = np.full(n, None, dtype=object)
    if n == 0:
        return out
    order = np.argsort(tpl.account_id.astype(str), kind="stable")
    acc = tpl.account_id[order]
    starts = np.flatnonzero(np.r_[True, acc[1:] != acc[:-1]])
    ends = np.r_[starts[1:], n]
    texts = tpl.skel.to_pylist()
    for s, e in zip(starts, ends, strict=True):
        rows = order[s:e]
        if len(rows) < min_rows:
            continue
        words = [texts[r].split() for r in rows]
        # weighted by exact-duplicate counts: a skeleton sent 50 times is 50 prompts of the account
        w = tpl.cnt[rows]
        df: Counter[str] = Counter()
        for ws, wi in zip(words, w, strict=True):
            for word in set(ws):
                df[word] += wi
        total = float(w.sum())
        vocab = {word for word, c in df.items() if c >= min_share * total and word != "#"}
        if len(vocab) < min_words:
            continue
        for r, ws in zip(rows, words, strict=True):
            kept = {x for x in ws if x in vocab}
            if len(kept) >= min_words and tpl.length[r] >= MIN_TEMPLATE_CHARS:
                out[r] = project(ws, vocab)
    return out


def consensus(texts: list[str], weights: np.ndarray, min_share: float = 0.5) -> str:
    """One template from variants of it: the words at least `min_share` of them (by weight) hold, in
    the order of the heaviest variant, other runs masked."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full(len(texts), 1 / len(texts))
    df: Counter[str] = Counter()
    for t, wi in zip(texts, w, strict=True):
        for word in set(t.split()):
            df[word] += wi
    vocab = {word for word, share in df.items() if share >= min_share and word != "#"}
    return project(texts[int(np.argmax(w))].split(), vocab)
