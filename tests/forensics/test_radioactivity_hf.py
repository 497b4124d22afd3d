"""The transformers integration on a tiny randomly initialised Llama built in code (no download)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the forensics extra; torch is also a dev dependency
pytest.importorskip("transformers")

from distillguard.forensics.hf import HFPredictor, WatermarkLogitsProcessor, tiny_causal_lm  # noqa: E402
from distillguard.forensics.keys import KeyRing, ProviderSecret  # noqa: E402
from distillguard.forensics.kgw import KGW  # noqa: E402
from distillguard.forensics.reading import read_suspect  # noqa: E402

SECRET = ProviderSecret(bytes(range(2, 34)))
VOCAB = 300


def test_processor_applies_the_schemes_bias_to_every_row() -> None:
    scheme = KGW(gamma=0.25, delta=2.0)
    key = SECRET.account_key("a")
    proc = WatermarkLogitsProcessor(scheme, key)
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    scores = torch.randn(2, VOCAB)
    out = proc(ids, scores)
    expected = scheme.bias(ids.numpy(), scores.numpy(), key)
    assert out.dtype == scores.dtype and out.shape == scores.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)
    added = (out - scores).numpy()
    assert set(np.unique(np.round(added, 4))) == {0.0, 2.0}  # δ on the green list only


def test_generation_with_the_processor_is_watermarked_for_that_account() -> None:
    from transformers import LogitsProcessorList

    model = tiny_causal_lm(VOCAB, seed=1)
    scheme = KGW(gamma=0.25, delta=4.0)
    key = SECRET.account_key("acct-3")
    torch.manual_seed(0)
    prompt = torch.randint(0, VOCAB, (4, 3))
    out = model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=60,
        do_sample=True,
        top_k=0,
        logits_processor=LogitsProcessorList([WatermarkLogitsProcessor(scheme, key)]),
        pad_token_id=0,
    )
    new = out[:, 3:].numpy()
    assert scheme.score(list(new), key).p_value < 1e-10
    assert scheme.score(list(new), SECRET.account_key("acct-4")).p_value > 1e-3


def test_hf_predictor_matches_a_forward_pass_and_feeds_reading_mode() -> None:
    model = tiny_causal_lm(VOCAB, seed=2)
    seqs = [np.arange(10, 30), np.arange(50, 57)]  # different lengths: padding must not leak
    preds = HFPredictor(model, batch_size=2).top1(seqs)
    for s, p in zip(seqs, preds, strict=True):
        with torch.no_grad():
            ref = model(input_ids=torch.from_numpy(s[None, :])).logits.argmax(-1)[0].numpy()
        assert p[0] == -1
        assert np.array_equal(p[1:], ref[:-1])
    # an untrained model knows nothing of our mark: reading mode must not reject
    scheme = KGW(gamma=0.25, delta=2.0)
    rng = np.random.default_rng(0)
    texts = [rng.integers(0, VOCAB, 80) for _ in range(8)]
    ring = KeyRing.derive(SECRET, [f"k{i}" for i in range(200)])
    r = read_suspect(HFPredictor(model), scheme, texts, ring=ring)
    assert r.attribution is not None and r.windows_scored > 50
    assert r.attribution.implicated == []
    p = r.attribution.p_values  # one per key: uniform under the null
    assert 0.3 < float(np.median(p)) < 0.7
    assert float((p < 0.05).mean()) < 0.1
