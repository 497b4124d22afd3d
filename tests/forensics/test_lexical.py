"""The post-hoc lexical watermark: substitution that keeps the text's form, streaming, exact detection."""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from distillguard.forensics.keyed_hash import keyed_values
from distillguard.forensics.keys import KeyRing, ProviderSecret
from distillguard.forensics.lexical import (
    MAX_RUN,
    LexicalDetector,
    LexicalWatermarker,
    Lexicon,
    TextWatermark,
    _keyed_int,
    attribute_lexical,
    default_lexicon,
    detect_lexical,
    lexical_p_values,
    lexical_slots,
    match_tail,
    substitute,
)
from distillguard.forensics.scheme import SchemeError

SECRET = ProviderSecret(bytes(range(32)))
KEY = SECRET.account_key("acme")
OTHER = SECRET.account_key("globex")
LEX = default_lexicon()
MEMBERS = sorted(LEX.index)
FILLER = "the a of to and in is it that for on with as was this are be by at from or we you they".split()  # noqa: SIM905


def prose(rng: random.Random, n_words: int, slot_share: float = 0.3) -> str:
    """Sentences of filler and lexicon words, with capitals, punctuation and line breaks."""
    out: list[str] = []
    start = True
    for _ in range(n_words):
        w = rng.choice(MEMBERS) if rng.random() < slot_share else rng.choice(FILLER)
        if start:
            w = w.capitalize()
        start = False
        r = rng.random()
        if r < 0.08:
            w += "."
            start = True
        elif r < 0.12:
            w += ","
        out.append(w)
        out.append(rng.choice([" ", " ", " ", "  ", "\n", "\n\n", "\t"]) if start else " ")
    return "".join(out)


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+", text)


def test_shipped_lexicon_is_a_partition_of_common_words() -> None:
    assert len(LEX) >= 150
    seen: set[str] = set()
    for members in LEX.sets:
        assert 2 <= len(members) <= 5
        assert not seen & set(members)
        seen |= set(members)
    assert {"big", "large"} <= set(LEX.sets[LEX.index["big"][0]])


def test_lexicon_rejects_ambiguous_or_bad_sets() -> None:
    with pytest.raises(SchemeError, match="two sets"):
        Lexicon([["big", "large"], ["large", "huge"]])
    with pytest.raises(SchemeError, match="2\\+ members"):
        Lexicon([["big"]])
    with pytest.raises(SchemeError, match="lower-case"):
        Lexicon([["Big", "large"]])


def test_pure_python_hash_matches_the_vectorised_one() -> None:
    rng = np.random.default_rng(1)
    s, c, t = (rng.integers(0, 2**63, size=50, dtype=np.uint64) for _ in range(3))
    vec = keyed_values(s, c, t)
    assert [_keyed_int(int(a), int(b), int(d)) for a, b, d in zip(s, c, t, strict=True)] == vec.tolist()


def test_apply_is_deterministic_per_key_and_differs_across_keys() -> None:
    text = prose(random.Random(3), 400)
    wm = LexicalWatermarker(KEY)
    assert isinstance(wm, TextWatermark)
    a = wm.apply(text)
    assert a == LexicalWatermarker(SECRET.account_key("acme")).apply(text)
    b = LexicalWatermarker(OTHER).apply(text)
    assert a != b and a != text
    # the choice is conditional on the previous word: one word maps to several members across contexts
    outputs: dict[str, set[str]] = {}
    for src, dst in zip(words(text), words(a), strict=True):
        if src.lower() in LEX.index:
            outputs.setdefault(src.lower(), set()).add(dst.lower())
    assert any(len(v) > 1 for v in outputs.values())


def test_apply_keeps_whitespace_punctuation_and_case() -> None:
    text = prose(random.Random(4), 600)
    out = LexicalWatermarker(KEY).apply(text)
    # everything between words is byte-identical
    assert re.split(r"[A-Za-z]+", out) == re.split(r"[A-Za-z]+", text)
    changed = 0
    for src, dst in zip(words(text), words(out), strict=True):
        if src == dst:
            continue
        changed += 1
        assert LEX.index[src.lower()][0] == LEX.index[dst.lower()][0]  # same synonym set
        assert (src.istitle(), src.isupper(), src.islower()) == (dst.istitle(), dst.isupper(), dst.islower())
    assert changed > 20
    assert LexicalWatermarker(KEY).apply("BIG big Big bIg").split()[3] == "bIg"  # mixed case left alone


def test_code_urls_identifiers_and_compounds_are_left_alone() -> None:
    wm = LexicalWatermarker(KEY)
    keep = [
        "```python\nbig = quickly(large)\nhuge big large vast\n```",
        "`big` and `large`",
        "http://example.com/big/large https://x.org/?q=huge",
        "big_value large2 x.big huge() me@large.org a/big",
        "well-known don't large-scale big's",
        "b" * (MAX_RUN - 3) + "-big-large-huge",
    ]
    for text in keep:
        assert wm.apply(text) == text
    # prose after a closed fence is marked again
    tail = " ".join(["big", "large", "huge", "vast", "quickly", "rapidly"] * 5)
    assert wm.apply("```\ncode\n```\n" + tail) != "```\ncode\n```\n" + tail


_ALPHABET = st.sampled_from(
    ["big", "large", "Big", "LARGE", "huge", "quickly", "the", "a", "x", " ", "  ", "\n", ".", ",", "`",
     "```", "-", "'", "http://a.b/", "_", "7", "é", "b" * 40, "vast", "Rapidly", "\t"]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(_ALPHABET, max_size=80), cuts=st.lists(st.integers(0, 400), max_size=12))
def test_streaming_equals_apply_for_any_chunking(pieces: list[str], cuts: list[int]) -> None:
    text = "".join(pieces)
    wm = LexicalWatermarker(KEY)
    bounds = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    stream = wm.streamer()
    out = "".join(stream.feed(text[a:b]) for a, b in itertools.pairwise(bounds)) + stream.flush()
    assert out == wm.apply(text)


def test_streamer_emits_complete_words_and_holds_back_only_the_partial_one() -> None:
    wm = LexicalWatermarker(KEY)
    s = wm.streamer()
    first = s.feed("Results were huge and qui")
    assert first == wm.apply("Results were huge and ")  # the partial word "qui" is held back
    rest = s.feed("ckly obtained") + s.flush()
    assert first + rest == wm.apply("Results were huge and quickly obtained")
    long = "y" * (MAX_RUN + 10)
    assert wm.streamer().feed(long) == long  # a run longer than MAX_RUN is passed through at once
    # a fence at the end of a long run, split anywhere: the backtick run must be counted whole
    text = long + "```\n" + " ".join(["big", "large", "huge", "quickly"] * 8) + "\n```\nbig large"
    for cut in range(len(long) - 2, len(long) + 5):
        s = wm.streamer()
        assert s.feed(text[:cut]) + s.feed(text[cut:]) + s.flush() == wm.apply(text)


def test_exact_p_value_matches_brute_force_enumeration() -> None:
    for sizes in ([2, 2, 3], [2, 3, 4, 5], [3, 3, 3, 2, 5], [5, 4]):
        total = int(np.prod(sizes))
        counts = np.zeros(len(sizes) + 1)
        # every equally likely keyed choice vector; the observed word is member 0 of each set
        for choice in itertools.product(*(range(s) for s in sizes)):
            counts[sum(c == 0 for c in choice)] += 1
        brute_sf = np.cumsum(counts[::-1])[::-1] / total
        pmf, sf = match_tail(sizes)
        np.testing.assert_allclose(pmf, counts / total, rtol=1e-12)
        np.testing.assert_allclose(sf[:-1], brute_sf, rtol=1e-12)
        assert lexical_p_values([len(sizes)], sizes)[0] == pytest.approx(1.0 / total, rel=1e-12)


def test_long_watermarked_text_is_detected_and_unmarked_is_not() -> None:
    text = prose(random.Random(5), 1500)
    marked = LexicalWatermarker(KEY).apply(text)
    res = detect_lexical(marked, [KEY, OTHER])
    assert res.n_slots > 40
    assert res.matches[0] == res.n_slots  # every coin carries the key's choice
    assert res.p_value[0] < 1e-6
    assert res.p_value[1] > 1e-3
    assert detect_lexical(text, KEY).p_value[0] > 1e-4
    # the batched per-text form agrees with one-at-a-time detection
    batch = [marked, text, prose(random.Random(50), 300), ""]
    n, m, p = LexicalDetector().score_each(batch, KEY)
    for i, t in enumerate(batch):
        one = detect_lexical(t, KEY)
        assert (n[i], m[i]) == (one.n_slots, one.matches[0])
        assert p[i] == pytest.approx(one.p_value[0], rel=1e-12)


def test_dedup_counts_each_previous_word_and_set_once() -> None:
    text = "the big one. the large one. the huge one."
    slots = lexical_slots(text)
    assert slots.size.size == 3
    # "the big" and "the large" are one keyed coin; "the huge" is another set
    assert detect_lexical(text, KEY).n_slots == 2
    assert detect_lexical(text, KEY, dedup=False).n_slots == 3
    # a coin that occurs in the prompt is not scored: the answer may have copied it
    prompt = LexicalDetector().windows("Is the large one better?")
    assert detect_lexical(text, KEY, exclude=prompt).n_slots == 1


def test_null_p_values_are_uniform_and_the_exact_test_holds_its_level() -> None:
    # one fresh key per text: the null is a key drawn independently of the text (with one key for all
    # texts, coins such as ("the", big/large) recur across texts and the tests would be correlated)
    rng = random.Random(6)
    gen = np.random.default_rng(7)
    det = LexicalDetector()
    exact, randomised = [], []
    for i in range(2000):
        slots = det.slots(prose(rng, 120, slot_share=0.4))
        assert slots.size.size > 10
        m = det.score_slots(slots, [SECRET.account_key(f"null-{i}").seed]).statistic.astype(np.int64)
        exact.append(lexical_p_values(m, slots.size)[0])
        randomised.append(lexical_p_values(m, slots.size, gen)[0])
    p, pr = np.array(exact), np.array(randomised)
    # the exact test is discrete: conservative at every level
    for alpha in (0.1, 0.05, 0.01):
        assert (p <= alpha).mean() <= alpha + 3 * np.sqrt(alpha / p.size)
    assert (p <= 0.1).mean() > 0.05  # and not vacuous
    # the randomised p-value is exactly uniform
    assert stats.kstest(pr, "uniform").pvalue > 1e-3


def test_right_account_named_among_1000_keys() -> None:
    accounts = [f"acct-{i:04d}" for i in range(1000)]
    ring = KeyRing.derive(SECRET, accounts)
    leaker = SECRET.account_key("acct-0421")
    text = LexicalWatermarker(leaker).apply(prose(random.Random(8), 2000))
    att = attribute_lexical(text, ring, alpha=1e-3)
    assert att.implicated == ["acct-0421@0"]
    assert att.best == "acct-0421@0"
    clean = attribute_lexical(prose(random.Random(9), 2000), ring, alpha=1e-3)
    assert clean.implicated == []


def test_substitute_replaces_the_asked_fraction_with_other_synonyms() -> None:
    text = prose(random.Random(10), 800)
    n = lexical_slots(text).size.size
    for fraction in (0.0, 0.1, 0.5, 1.0):
        for rng in (np.random.default_rng(11), random.Random(11)):
            out = substitute(text, fraction, rng)
            changed = sum(a != b for a, b in zip(words(text), words(out), strict=True))
            assert changed == round(fraction * n)
            assert re.split(r"[A-Za-z]+", out) == re.split(r"[A-Za-z]+", text)
    with pytest.raises(ValueError):
        substitute(text, 1.5, random.Random(0))


def test_substitution_weakens_detection_gradually() -> None:
    marked = LexicalWatermarker(KEY).apply(prose(random.Random(12), 3000))
    p = [
        detect_lexical(substitute(marked, f, np.random.default_rng(13)), KEY).p_value[0]
        for f in (0.0, 0.25, 1.0)
    ]
    assert p[0] < p[1] < p[2]
    assert p[1] < 1e-6


def test_cli_lexical_detect_names_the_account(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from distillguard.cli import app

    secret_file = tmp_path / "secret.hex"
    secret_file.write_text(SECRET.to_hex() + "\n")
    (tmp_path / "accounts.txt").write_text("\n".join(f"org-{i}" for i in range(50)) + "\n")
    wm = LexicalWatermarker(SECRET.account_key("org-7"))
    rows = [{"id": f"t{i}", "text": wm.apply(prose(random.Random(20 + i), 1500)), "prompt": "the big"}
            for i in range(3)]  # fmt: skip
    data = tmp_path / "texts.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "result.json"
    args = ["forensics", "lexical-detect", str(data), "--keys", str(tmp_path / "accounts.txt")]
    res = CliRunner().invoke(app, [*args, "--secret", str(secret_file), "--json", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["implicated"] == ["org-7@0"]
    assert [r["implicated"] for r in result["per_record"]] == [["org-7@0"]] * 3
    assert SECRET.to_hex() not in res.output
    data.write_text(json.dumps({"tokens": [1]}) + "\n")
    res = CliRunner().invoke(app, [*args, "--secret", str(secret_file)])
    assert res.exit_code == 2 and "no string `text`" in res.output


def test_replace_words_changes_the_stated_share_of_all_words() -> None:
    from distillguard.forensics.lexical import replace_words

    text = "The quick brown fox jumps over the lazy dog, and then it rests quietly. " * 20
    vocab = ["zebra", "quartz", "violin"]
    rng = np.random.default_rng(0)
    assert replace_words(text, 0.0, rng, vocab) == text
    for frac in (0.1, 0.25, 0.5):
        out = replace_words(text, frac, np.random.default_rng(1), vocab)
        a, b = text.split(), out.split()
        assert len(a) == len(b)  # spacing and punctuation kept: words stay aligned
        changed = sum(x != y for x, y in zip(a, b, strict=True)) / len(a)
        # a replacement can by chance equal the word it replaces only via the fixed vocabulary: none here
        assert abs(changed - frac) < 0.02, (frac, changed)
    out = replace_words("Hello world", 1.0, np.random.default_rng(2), ["zebra"])
    assert out == "Zebra zebra"  # capitalisation of the replaced word kept
    with pytest.raises(ValueError):
        replace_words(text, 1.5, rng, vocab)
    with pytest.raises(ValueError):
        replace_words(text, 0.5, rng, [])
