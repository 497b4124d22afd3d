from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from distillguard.intel.decay import DAY, DecayModel, DecaySettings, polynomial
from distillguard.intel.indicator import IndicatorType


def test_polynomial_at_known_points() -> None:
    # MISP: base * (1 - (t / tau) ** (1 / delta))
    assert polynomial(100, 0, 30, 1) == 100
    assert polynomial(100, 15 * DAY, 30, 1) == pytest.approx(50)  # linear: halfway, half the score
    assert polynomial(100, 15 * DAY, 30, 2) == pytest.approx(100 * (1 - 0.5**0.5))  # fast: 29.3
    assert polynomial(100, 15 * DAY, 30, 0.5) == pytest.approx(75)  # slow: 1 - 0.5**2
    assert polynomial(80, 3 * DAY, 30, 1) == pytest.approx(72)
    assert polynomial(100, 30 * DAY, 30, 1) == 0
    assert polynomial(100, 400 * DAY, 30, 2) == 0  # past the lifetime: 0, never negative


def test_negative_elapsed_counts_as_just_seen() -> None:
    assert polynomial(60, -5 * DAY, 30, 2) == 60


def test_vectorised_matches_scalar() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 101, 1000).astype(float)
    elapsed = rng.uniform(-DAY, 60 * DAY, 1000)
    got = polynomial(base, elapsed, 30, 1.7)
    assert isinstance(got, np.ndarray) and got.shape == (1000,)
    want = [polynomial(float(b), float(e), 30, 1.7) for b, e in zip(base, elapsed, strict=True)]
    np.testing.assert_allclose(got, want)
    assert np.all((got >= 0) & (got <= base))
    # a scalar base with an array of times broadcasts
    assert polynomial(100.0, np.array([0.0, 15 * DAY]), 30, 1).tolist() == pytest.approx([100, 50])


def test_default_lifetimes_by_type() -> None:
    s = DecaySettings()
    at = 20 * DAY
    ip = s.score(IndicatorType.IPV4, 100.0, at)
    asn = s.score(IndicatorType.ASN, 100.0, at)
    account = s.score(IndicatorType.ACCOUNT, 100.0, at)
    skeleton = s.score(IndicatorType.SKELETON, 100.0, at)
    assert ip < skeleton < asn < account  # addresses rotate fastest, operators' own digests last
    assert s.score("ipv6", 100.0, 31 * DAY) == 0
    assert s.score("account", 100.0, 300 * DAY) > 0
    assert set(s.models) == set(IndicatorType)


def test_scores_of_mixed_types() -> None:
    s = DecaySettings()
    kinds = np.array(["ipv4", "asn", "ipv4", "account"], dtype=object)
    elapsed = np.full(4, 10 * DAY)
    got = s.scores(kinds, np.array([100, 100, 50, 100]), elapsed)
    want = [s.score(str(k), float(b), 10 * DAY) for k, b in zip(kinds, [100, 100, 50, 100], strict=True)]
    np.testing.assert_allclose(got, want)


def test_settings_from_config_keep_other_defaults() -> None:
    s = DecaySettings.model_validate({"models": {"ipv4": {"lifetime_days": 7, "speed": 1}}})
    assert s.model_for("ipv4") == DecayModel(lifetime_days=7, speed=1)
    assert s.model_for("asn") == DecaySettings().model_for("asn")
    assert s.score("ipv4", 100.0, 3.5 * DAY) == pytest.approx(50)


@pytest.mark.parametrize(
    "bad",
    [
        {"models": {"ipv4": {"lifetime_days": 0, "speed": 1}}},
        {"models": {"ipv4": {"lifetime_days": 5, "speed": -1}}},
        {"models": {"no-such-type": {"lifetime_days": 5, "speed": 1}}},
        {"default": {"lifetime_days": 5}},
    ],
)
def test_invalid_settings_are_rejected(bad: dict) -> None:
    with pytest.raises(ValidationError):
        DecaySettings.model_validate(bad)
