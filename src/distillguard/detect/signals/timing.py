"""Automation timing: inter-arrival regularity, round-the-clock activity; and, mitigating, batch runs
(all of an account's requests in a short session, or in a few short sittings a day: evaluation runs).

People are bursty (inter-arrival coefficient of variation well above 1) and sleep; a scheduler sends at
a steady rate (CV well below 1) in every hour of the day. A harness runs its benchmarks in bursts of
minutes and is idle in between; a harvest keeps sending, because every idle hour is answers it did not get.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from distillguard.detect.signals.base import Columns, Finding, ramp, register, safe_div, support

SITTING_GAP_S = 1800  # a longer pause ends a sitting
# Sittings are runs only with this many requests, sent at a program's pace: a light user's few scattered
# requests are short sittings too, a hydra's small accounts must not pass for evaluation runs, and nor may
# a person's day (an hour or two of sittings at a request every 40 s or more: a harvest at a person's pace
# looks the same). A request every 8 s on average over an hour's sittings is no person reading answers.
RUN_MIN_REQUESTS = 100
RUN_PACE_S = 8.0


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
        # Time spent in sittings: the gaps that do not end one (an idle hour is not busy time).
        "busy_s": f"sum(CASE WHEN gap <= {SITTING_GAP_S} THEN gap ELSE 0 END)",
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
        days = np.maximum(np.asarray(cols["days_active"], dtype=np.float64), 1.0)
        # Hours per active day in its runs: the whole span when it is one session; the sittings when
        # they are a program's runs (a harness: a few bursts of minutes a day).
        busy_s = np.nan_to_num(np.asarray(cols["busy_s"], dtype=np.float64), nan=0.0)
        runs = (n >= RUN_MIN_REQUESTS) & (busy_s <= RUN_PACE_S * n)
        run_h = np.where(runs, np.minimum(span_h, busy_s / 3600.0 / days), span_h)
        return [
            Finding(
                "timing.regular",
                cv,
                ramp(1.0 - cv, 0.3, 0.75) * support(n, 100),
                0.25,
                "inter-arrival coefficient of variation {value:.2f} (people are bursty, above 1)",
            ),
            Finding(
                "timing.batch_runs",
                run_h,
                # Everything in one sitting of at most two hours, or in sittings totalling that a day: batch
                # or evaluation runs, not a standing harvest. Explains away behavioural evidence only
                # (never a recipe or a sampling trick).
                ramp(-run_h, -2.0, -1.0) * support(n, 50),
                1.0,
                "all requests in runs of {value:.1f} h a day (one session, or short sittings with idle "
                "hours between)",
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
