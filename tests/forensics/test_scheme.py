from __future__ import annotations

import numpy as np
import pytest

from distillguard.forensics.gumbel import Gumbel
from distillguard.forensics.keys import ProviderSecret
from distillguard.forensics.kgw import KGW, kgw_green_flags
from distillguard.forensics.scheme import (
    SchemeError,
    WatermarkScheme,
    get_scheme,
    scheme_names,
    token_windows,
)
from tests.forensics.toy_model import bigram_logits, generate

KEY = ProviderSecret(bytes(range(32))).account_key("acct-7")
OTHER = ProviderSecret(bytes(range(32))).account_key("acct-8")


def test_registry_builds_schemes_and_rejects_unknown() -> None:
    assert {"kgw", "gumbel", "markllm-kgw"} <= set(scheme_names())
    s = get_scheme("kgw", gamma=0.5, context_width=2)
    assert isinstance(s, KGW) and s.gamma == 0.5 and s.context_width == 2
    assert isinstance(s, WatermarkScheme)
    with pytest.raises(SchemeError, match="unknown watermark scheme 'nope'"):
        get_scheme("nope")
    with pytest.raises(SchemeError, match="gamma"):
        get_scheme("kgw", gamma=1.5)
    with pytest.raises(SchemeError, match="bad parameters"):
        get_scheme("gumbel", gamma=0.5)


def test_windows_never_straddle_two_sequences() -> None:
    win = token_windows([np.array([1, 2, 3]), np.array([4]), np.array([5, 6])], 1)
    pairs = [(int(c[0]), int(t)) for c, t in zip(win.contexts, win.tokens, strict=True)]
    assert pairs == [(1, 2), (2, 3), (5, 6)]
    assert win.positions.tolist() == [1, 2, 5]
    assert win.segments.tolist() == [0, 0, 2]
    with pytest.raises(SchemeError, match="sequence 1: negative token id"):
        token_windows([np.array([1, 2]), np.array([-1, 3])], 1)


def test_green_flags_follow_the_hash_not_a_loop() -> None:
    """Vectorised flags equal one-by-one flags computed through `bias` (the generation path)."""
    s = KGW(gamma=0.25, delta=1.0, context_width=2)
    toks = np.random.default_rng(3).integers(0, 50, size=40)
    flags = kgw_green_flags(s, toks, KEY)
    for i in range(2, 40):
        boosted = s.bias(toks[None, :i], np.zeros((1, 50)), KEY)[0]
        assert flags[i] == (boosted[toks[i]] == 1.0)
    # about gamma of the vocabulary is green in each context
    frac = (s.bias(toks[None, :5], np.zeros((1, 50_000)), KEY) > 0).mean()
    assert 0.24 < frac < 0.26


def test_dedup_and_prompt_exclusion() -> None:
    s = KGW(context_width=1)
    text = np.array([5, 6, 5, 6, 5, 6, 7])
    assert s.score(text, KEY, dedup=False).n_scored == 6
    assert s.score(text, KEY, dedup=True).n_scored == 3  # (5,6), (6,5), (6,7)
    prompt = np.array([9, 5, 6])
    r = s.score(text, KEY, exclude=s.windows(prompt), dedup=True)
    assert r.n_scored == 2
    assert np.isnan(r.token_scores[1])  # the (5, 6) window came from the prompt
    assert s.score(text, KEY, exclude={(5, 6)}).n_scored == 2
    with pytest.raises(SchemeError, match="has 3 ids"):
        s.score(text, KEY, exclude={(5, 6, 7)})
    # a text repeated ten times carries no more evidence than once
    once, many = s.score(text, KEY), s.score(np.tile(text, 10), KEY)
    assert many.n_scored <= once.n_scored + 1  # only the seam window (7, 5) is new
    # a text whose every window came from the prompt has nothing to score (and is no evidence)
    r = s.score(text, KEY, exclude=s.windows(text), dedup=True)
    assert r.n_scored == 0 and r.p_value == 1.0


@pytest.mark.parametrize("scheme", [KGW(gamma=0.25, delta=2.0), Gumbel(context_width=2)], ids=repr)
def test_watermarked_text_detected_and_wrong_key_not(scheme: WatermarkScheme) -> None:
    table = bigram_logits(200, seed=0)
    marked = generate(scheme, KEY, table, batch=20, length=200, seed=4)
    plain = generate(None, None, table, batch=20, length=200, seed=5)
    hit = [scheme.score(t, KEY).p_value for t in marked]
    assert np.mean(np.asarray(hit) < 1e-6) >= 0.95
    wrong = [scheme.score(t, OTHER).p_value for t in marked]
    clean = [scheme.score(t, KEY).p_value for t in plain]
    assert min(wrong) > 1e-4 and min(clean) > 1e-4


def test_gumbel_sampling_is_distortion_free() -> None:
    """Over many contexts the Gumbel-max choice follows the model's distribution (chi-square)."""
    from scipy import stats

    g = Gumbel(context_width=1)
    logits = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05]))
    n = 20_000
    ctx = np.arange(n)[:, None]  # 20,000 distinct contexts: 20,000 independent keyed draws
    choice = g.choose(ctx, np.tile(logits, (n, 1)), KEY)
    counts = np.bincount(choice, minlength=5)
    assert stats.chisquare(counts, n * np.exp(logits)).pvalue > 1e-3
    # and `bias` forces exactly that choice whatever decoding follows
    out = g.bias(ctx[:3], np.tile(logits, (3, 1)), KEY)
    assert (np.argmax(out, axis=1) == choice[:3]).all() and np.isinf(out).sum() == 3 * 4


def test_score_each_equals_score_per_text() -> None:
    s = KGW()
    texts = [np.random.default_rng(i).integers(0, 1000, size=50 + i) for i in range(5)]
    batch = s.score_each(texts, KEY)
    for i, t in enumerate(texts):
        one = s.score(t, KEY)
        assert batch.n_scored[i] == one.n_scored
        assert batch.p_value[i] == pytest.approx(one.p_value, rel=1e-12)


def test_keyed_schemes_refuse_to_score_without_a_key() -> None:
    with pytest.raises(SchemeError, match="is keyed"):
        KGW().score(np.arange(10), None)  # type: ignore[arg-type]
