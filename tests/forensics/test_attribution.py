from __future__ import annotations

import numpy as np
import pytest

from distillguard.forensics.attribution import attribute, bonferroni, holm
from distillguard.forensics.gumbel import Gumbel
from distillguard.forensics.keys import KeyRing, ProviderSecret
from distillguard.forensics.kgw import KGW
from distillguard.forensics.scheme import SchemeError
from tests.forensics.toy_model import bigram_logits, generate

SECRET = ProviderSecret(bytes(range(32)))
RING = KeyRing.derive(SECRET, [f"acct-{i:04d}" for i in range(1000)])


def test_holm_matches_the_textbook_step_down() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
    # by hand: sorted 0.005*5, 0.01*4, 0.03*3, 0.04*2, 0.5*1 -> running max 0.025 0.04 0.09 0.09 0.5
    assert holm(p).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.025, 0.5])
    assert bonferroni(p).tolist() == pytest.approx([0.05, 0.2, 0.15, 0.025, 1.0])
    rng = np.random.default_rng(0)
    q = rng.random(50)
    assert (holm(q) <= bonferroni(q) + 1e-15).all()


@pytest.mark.parametrize("scheme", [KGW(), Gumbel(context_width=2)], ids=repr)
def test_names_the_leaking_account_among_1000_keys(scheme) -> None:  # type: ignore[no-untyped-def]
    leaker = RING.keys[417]
    table = bigram_logits(300, seed=2)
    texts = generate(scheme, leaker, table, batch=10, length=200, seed=3)
    for t in texts:
        a = attribute(scheme, t, RING, alpha=1e-3)
        assert a.implicated == ["acct-0417@0"]
        assert a.best == "acct-0417@0" and a.family_p_value < 1e-6
    clean = generate(None, None, table, batch=10, length=200, seed=4)
    for t in clean:
        assert attribute(scheme, t, RING, alpha=1e-3).implicated == []


def test_attribution_scores_equal_single_key_scores() -> None:
    s = KGW(context_width=2)
    t = np.random.default_rng(5).integers(0, 5000, size=300)
    small = KeyRing(RING.keys[:7])
    a = attribute(s, t, small, correction="bonferroni")
    for i, k in enumerate(small.keys):
        assert a.p_values[i] == pytest.approx(s.score(t, k).p_value, rel=1e-12)
    with pytest.raises(SchemeError, match="alpha"):
        attribute(s, t, small, alpha=2.0)
    with pytest.raises(SchemeError, match="empty"):
        attribute(s, t, KeyRing(()))
