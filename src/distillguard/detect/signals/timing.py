"""Automation timing: inter-arrival regularity, round-the-clock activity; and, mitigating, a single
short session (a batch or evaluation run).

People are bursty (inter-arrival coefficient of variation well above 1) and sleep; a scheduler sends at
a steady rate (CV well below 1) in every hour of the day.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from distillguard.detect.signals.base import Columns, Finding, ramp, register, safe_div, support


@register
class Timing:
    name: ClassVar[str] = "timing"
    row_columns: ClassVar[dict[str, str]] = {
        "hr": "{hour(ts)}",
    }
    # The gap to the previous exchange of the same group (account or campaign).
    window_columns: ClassVar[dict[str, str]] = {
        "gap": "t - lag(t) OVER (PARTITION BY account_id ORDER BY t)",
    }
    extra_sql: ClassVar[str | None] = None
    account_columns: ClassVar[dict[str, str]] = {
        "gap_mean": "avg(gap)",
        "gap_sd": "stddev_samp(gap)",
        "hours_active": "count(DISTINCT hr)",
        "days_active": "count(DISTINCT {day(ts)})",
        "span_s": "max(t) - min(t)",
    }

    def evaluate(self, cols: Columns) -> list[Finding]:
        n = np.asarray(cols["n_exchanges"], dtype=np.float64)
        mean = np.nan_to_num(np.asarray(cols["gap_mean"], dtype=np.float64), nan=0.0)
        sd = np.nan_to_num(np.asarray(cols["gap_sd"], dtype=np.float64), nan=0.0)
        cv = np.where(mean > 0, safe_div(sd, mean), 1.0)
        hours = np.asarray(cols["hours_active"], dtype=np.float64)
        span_h = np.asarray(cols["span_s"], dtype=np.float64) / 3600.0
        # Share of the hours the account could have been active in that it was active in.
        coverage = safe_div(hours, np.minimum(np.maximum(span_h, 1.0), 24.0))
        return [
            Finding(
                "timing.regular",
                cv,
                ramp(1.0 - cv, 0.3, 0.75) * support(n, 100),
                0.25,
                "inter-arrival coefficient of variation {value:.2f} (people are bursty, above 1)",
            ),
            Finding(
                "timing.single_session",
                span_h,
                # Everything in one sitting of at most two hours: a batch or evaluation run, not a
                # standing harvest. Explains away behavioural evidence only (never a recipe).
                ramp(-span_h, -2.0, -1.0) * support(n, 50),
                1.0,
                "all requests within one {value:.1f} h session",
                mitigating=True,
            ),
            Finding(
                "timing.round_the_clock",
                hours,
                ramp(hours, 18, 23) * ramp(coverage, 0.7, 0.95) * support(n, 200),
                23,
                "active in {value:.0f} distinct hours of the day",
            ),
        ]
