"""Volume against the account's peers and its own history (requests and output tokens per day)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from distillguard.detect.signals.base import Columns, Finding, ramp, register


@register
class Volume:
    name: ClassVar[str] = "volume"
    row_columns: ClassVar[dict[str, str]] = {}
    account_columns: ClassVar[dict[str, str]] = {
        "out_tokens_sum": "sum(out_tokens)",
    }
    extra_sql: ClassVar[str | None] = """
        SELECT account_id, max(c) AS day_max, median(c) AS day_median, count(*) AS day_count
        FROM (SELECT account_id, {day(ts)} AS d, count(*) AS c FROM {source} GROUP BY account_id, {day(ts)}) x
        GROUP BY account_id
    """

    def evaluate(self, cols: Columns) -> list[Finding]:
        n = np.asarray(cols["n_exchanges"], dtype=np.float64)
        days = np.maximum(np.asarray(cols["days_active"], dtype=np.float64), 1.0)
        per_day = n / days
        tok_day = np.asarray(cols["out_tokens_sum"], dtype=np.float64) / days
        # Peers are the other accounts; a campaign is compared with the accounts' medians (passed in).
        peer = float(cols["peer_per_day"][0]) if "peer_per_day" in cols else float(np.median(per_day))
        peer_tok = (
            float(cols["peer_tok_per_day"][0]) if "peer_tok_per_day" in cols else float(np.median(tok_day))
        )
        rel = np.log10(np.maximum(per_day, 1.0) / max(peer, 1.0))
        rel_tok = np.log10(np.maximum(tok_day, 1.0) / max(peer_tok, 1.0))
        x = np.maximum(rel, rel_tok)
        # Own history: the busiest day against the account's median day, once there are 3+ days.
        days_seen = np.asarray(cols["day_count"], dtype=np.float64)
        jump = np.asarray(cols["day_max"], dtype=np.float64) / np.maximum(np.asarray(cols["day_median"]), 1.0)
        jump = np.where(days_seen >= 3, jump, 1.0)
        return [
            Finding(
                "volume.vs_peers",
                10.0**x,
                ramp(x, 1.0, 2.0),
                100.0,
                "{value:.0f}x the median account's daily requests or output tokens",
            ),
            Finding(
                "volume.vs_history",
                jump,
                ramp(jump, 3.0, 10.0),
                10.0,
                "busiest day {value:.1f}x the account's median day",
            ),
        ]
