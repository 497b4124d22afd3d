import numpy as np

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
