"""Issue 6's bar, small: dismiss 20 false positives in the console by clicking, recalibrate, and check a
fresh simulator seed. The full-size run (600 accounts) is benchmarks/review_roundtrip.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.ui.roundtrip import run


@pytest.mark.timeout(300)
def test_dismissing_false_positives_lowers_fpr_on_a_fresh_seed(browser: Any, tmp_path: Path) -> None:
    r = run(tmp_path, browser, accounts=ACCOUNTS, volume=VOLUME, seed_a=11, seed_b=12)
    assert r["dismissed"] == 20
    assert sum(d == "dismiss" for d in r["decisions"].values()) == 20  # every click reached the database
    assert r["new"]["fpr"] < r["old"]["fpr"], r
    assert r["new"]["tpr"] >= r["old"]["tpr"] - 0.01, r


ACCOUNTS, VOLUME = 400, 0.4
