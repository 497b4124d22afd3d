"""Reaction to a model release: a harvester moves its traffic to a new model within hours, while
ordinary customers adopt it over days.

A model is "new" when first seen at least `NEW_AFTER_H` hours after the log starts. For each account,
the finding is the share of its requests in the 24 h after the release that went to the new model,
compared with the median adoption of all accounts active in that window.

*Moving* traffic needs traffic to move: the finding's strength is scaled by the account's requests in the
`WINDOW_H` hours before the release (full at `BEFORE_FULL`). An evaluation run that starts after the
release and tries the new model beside the old ones has no earlier traffic and moved nothing; a harvester
that switches within hours does (reports of 2026 describe a campaign moving half its traffic within 24 h).
Nor is traffic moved when the new model gets prompts the account also puts to another model in the same
day: a harness already running before the release that adds the new model beside the old one, on the same
set, compares. A prompt put to the old model before the release and to the new one after it was moved.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from distillguard.detect.signals.base import Columns, Finding, ramp, register, safe_div, support

NEW_AFTER_H = 6.0
WINDOW_H = 24.0
BEFORE_FULL = 20.0  # requests in the day before the release for the finding's full strength


@register
class ReleaseReaction:
    name: ClassVar[str] = "release"
    row_columns: ClassVar[dict[str, str]] = {
        "rel_window": f"CASE WHEN new_model_t IS NOT NULL AND t >= new_model_t AND t < new_model_t + {WINDOW_H * 3600} "
        "THEN 1 ELSE 0 END",
        "rel_before": f"CASE WHEN new_model_t IS NOT NULL AND t < new_model_t AND t >= new_model_t - {WINDOW_H * 3600} "
        "THEN 1 ELSE 0 END",
        "rel_on_new": f"CASE WHEN model_first_t >= log_start_t + {NEW_AFTER_H * 3600} AND t < model_first_t + {WINDOW_H * 3600} "
        "THEN 1 ELSE 0 END",
    }
    # Requests to the new model, in its first day, of prompts the same account also put to another model in
    # that day: an evaluation comparing the new model with the old on the same set, side by side, not traffic
    # moved to it. (A prompt sent to the old model before the release and to the new one after it moved:
    # a harvester re-asking its pool of the better model.)
    tables: ClassVar[dict[str, str]] = {
        "dg_release_compared": """
SELECT r.exchange_id FROM {rows} r
JOIN (SELECT account_id, pkey FROM {rows} WHERE rel_window = 1
      GROUP BY account_id, pkey HAVING count(DISTINCT model) > 1) m
  ON r.account_id = m.account_id AND r.pkey = m.pkey
WHERE r.rel_on_new = 1
"""
    }
    extra_sql: ClassVar[str | None] = (
        "SELECT s.account_id, count(DISTINCT s.exchange_id) AS rel_compared_n FROM {source} s "
        "JOIN dg_release_compared c ON s.exchange_id = c.exchange_id GROUP BY s.account_id"
    )
    account_columns: ClassVar[dict[str, str]] = {
        "rel_window_n": "sum(rel_window)",
        "rel_on_new_n": "sum(rel_on_new)",
        "rel_before_n": "sum(rel_before)",
    }

    def evaluate(self, cols: Columns) -> list[Finding]:
        win = np.asarray(cols["rel_window_n"], dtype=np.float64)
        share = _moved_share(cols)
        # The baseline is the accounts' median; parts of accounts (client slices) are given it.
        base = float(cols["release_base"][0]) if "release_base" in cols else adoption_base(cols)
        lift = share - base
        return [
            Finding(
                "release.fast_adoption",
                share,
                ramp(lift, 0.25, 0.5) * support(win, 20) * support(cols["rel_before_n"], BEFORE_FULL),
                0.5 + base,
                "{value:.0%} of its requests in the 24 h after a model release went to the new model",
            )
        ]


def adoption_base(cols: Columns) -> float:
    """Median share of requests sent to the new model in its first 24 h, over the active units."""
    win = np.asarray(cols["rel_window_n"], dtype=np.float64)
    share = _moved_share(cols)
    active = win >= 5
    return float(np.median(share[active])) if active.any() else 0.0


def _moved_share(cols: Columns) -> np.ndarray:
    """Share of the release window's requests that went to the new model with prompts the account did not
    also put to another model (those compare the models; they move nothing)."""
    compared = np.nan_to_num(np.asarray(cols.get("rel_compared_n", 0.0), dtype=np.float64))
    moved = np.maximum(np.asarray(cols["rel_on_new_n"], dtype=np.float64) - compared, 0.0)
    return safe_div(moved, cols["rel_window_n"])
