"""p-values of unmarked text are (conservatively) uniform: the false-positive rate holds its level.

Fast version (2,000 texts); benchmarks/forensics_calibration.py runs >= 10,000 at alpha = 1e-3.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from distillguard.forensics.gumbel import Gumbel
from distillguard.forensics.keys import ProviderSecret
from distillguard.forensics.kgw import KGW

KEY = ProviderSecret(bytes(range(32))).account_key("calibration")
N = 2000


@pytest.fixture(scope="module")
def texts() -> list[np.ndarray]:
    # a Zipf-like unigram draw: repeats happen, as in real text, so dedup is exercised
    rng = np.random.default_rng(20261129)
    ranks = np.arange(1, 49_153)
    p = 1.0 / ranks**1.1
    return list(rng.choice(49_152, size=(N, 200), p=p / p.sum()))


def _band(alpha: float) -> tuple[int, int]:
    """Counts of p <= alpha that a valid test produces with probability ~0.999 at most / least."""
    return int(stats.binom.ppf(0.0005, N, alpha)), int(stats.binom.isf(0.0005, N, alpha))


def test_gumbel_p_values_are_uniform(texts: list[np.ndarray]) -> None:
    p = Gumbel().score_each(texts, KEY).p_value
    assert stats.kstest(p, "uniform").pvalue > 1e-3
    for alpha in (0.05, 0.01):
        lo, hi = _band(alpha)
        assert lo <= int((p <= alpha).sum()) <= hi


def test_kgw_exact_binomial_holds_its_level(texts: list[np.ndarray]) -> None:
    b = KGW().score_each(texts, KEY)
    p = b.p_value
    assert b.n_scored.min() < 199  # dedup removed repeated windows
    for alpha in (0.05, 0.01):
        _, hi = _band(alpha)
        # discrete exact tails are conservative: never above the level, but not far below either
        assert int((p <= alpha).sum()) <= hi
        assert int((p <= alpha).sum()) >= 0.4 * alpha * N
    # the green rate of unmarked text is gamma
    assert b.statistic.sum() / b.n_scored.sum() == pytest.approx(0.25, abs=0.005)
