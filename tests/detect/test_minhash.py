import numpy as np
import pytest

from distillguard.detect import minhash


def test_similar_texts_have_similar_sketches() -> None:
    base = "Translate the following sentence into French and explain each word choice: "
    a = base + "The cat sat on the mat."
    b = base + "The dog ran in the park."
    c = "Give me a recipe for a vegan chocolate cake without any nuts or soy products."
    sk = minhash.sketch([a, b, c, a])
    assert minhash.similarity(sk[0], sk[3]) == 1.0
    assert minhash.similarity(sk[0], sk[1]) > 0.5
    assert minhash.similarity(sk[0], sk[2]) < 0.15


def test_keyed_sketches_differ_by_key() -> None:
    t = ["the same template text with a slot filled in"]
    assert not np.array_equal(minhash.sketch(t, key=1), minhash.sketch(t, key=2))
    assert np.array_equal(minhash.sketch(t, key=1), minhash.sketch(t, key=1))


def test_short_and_empty_texts() -> None:
    sk = minhash.sketch(["ab", "ab", "", "abc"])
    assert minhash.similarity(sk[0], sk[1]) == 1.0
    assert minhash.similarity(sk[0], sk[3]) < 1.0
    assert sk.shape == (4, minhash.K)


def test_cluster_links_templates_not_strangers() -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(3000)]
    template = (
        "You are asked to come up with a set of 20 diverse task instructions. These task instructions will "
        "be given to a GPT model and we will evaluate the GPT model for completing the instructions. Try "
        "not to repeat the verb for each instruction to maximize diversity. Here are some examples: "
    )
    tpl = [template + " ".join(rng.choice(words, 12)) for _ in range(30)]
    strangers = [" ".join(rng.choice(words, 60)) for _ in range(200)]
    labels = minhash.cluster(minhash.sketch(tpl + strangers), threshold=0.4)
    assert len(set(labels[:30].tolist())) == 1
    assert len(set(labels[30:].tolist())) == 200
    assert labels[0] not in set(labels[30:].tolist())


def _cluster_reference(sk: np.ndarray, threshold: float, eligible: np.ndarray) -> np.ndarray:
    """`cluster` written plainly, all at once (as it was before it was made frugal with memory)."""
    n = sk.shape[0]
    rows = np.flatnonzero(eligible)
    keys = minhash.band_keys(sk[rows]).ravel()
    idx = np.repeat(rows, minhash.BANDS)
    order = np.argsort(keys, kind="stable")
    ks, ids = keys[order], idx[order]
    first = np.r_[True, ks[1:] != ks[:-1]]
    head = ids[np.maximum.accumulate(np.where(first, np.arange(len(ks)), 0))]
    cand = ids != head
    a, b = head[cand], ids[cand]
    lead = np.arange(n)
    keep = minhash.similarity(sk[a], sk[b]) >= threshold
    np.minimum.at(lead, b[keep], a[keep])
    lead = lead[lead]
    return np.unique(lead, return_inverse=True)[1].astype(np.int64)


def test_cluster_in_chunks_matches_the_plain_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(400)]
    stems = [" ".join(rng.choice(words, 30)) for _ in range(25)]
    texts = [
        stems[rng.integers(25)] + " " + " ".join(rng.choice(words, rng.integers(0, 12))) for _ in range(3000)
    ]
    sk = minhash.sketch(texts)
    eligible = rng.random(len(texts)) > 0.1
    expect = _cluster_reference(sk, 0.4, eligible)
    assert len(set(expect.tolist())) < 2000  # templates were found: the comparison means something
    monkeypatch.setattr(minhash, "_CHUNK", 97)  # many chunks, none aligned with anything
    assert np.array_equal(minhash.cluster(sk, 0.4, eligible=eligible), expect)
