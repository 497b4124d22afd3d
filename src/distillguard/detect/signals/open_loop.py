"""Open-loop traffic: a distiller's prompts do not depend on the answers it got; people's do.

`user_turns` and `history_overlap` are derived at ingest (see `exchange.to_row`): the number of user
messages in the request, and the share of the prompt's words found in the previous assistant answer.
A follow-up that reuses the previous answer's words is closed-loop evidence, and mitigates.
"""

from __future__ import annotations

from typing import ClassVar

from distillguard.detect.signals.base import Columns, Finding, ramp, register, safe_div, support

CLOSED_LOOP_OVERLAP = 0.15  # share of the follow-up's words taken from the previous answer


@register
class OpenLoop:
    name: ClassVar[str] = "open_loop"
    row_columns: ClassVar[dict[str, str]] = {
        "single_turn": "CASE WHEN coalesce(user_turns, 0) <= 1 THEN 1 ELSE 0 END",
        "closed_loop": f"CASE WHEN coalesce(history_overlap, 0) >= {CLOSED_LOOP_OVERLAP} THEN 1 ELSE 0 END",
    }
    extra_sql: ClassVar[str | None] = None
    account_columns: ClassVar[dict[str, str]] = {
        "single_turn_n": "sum(single_turn)",
        "closed_loop_n": "sum(closed_loop)",
    }

    def evaluate(self, cols: Columns) -> list[Finding]:
        n = cols["n_exchanges"]
        single = safe_div(cols["single_turn_n"], n)
        closed = safe_div(cols["closed_loop_n"], n)
        return [
            Finding(
                "open_loop.single_turn",
                single,
                ramp(single, 0.85, 0.99) * support(n, 50),
                0.99,
                "{value:.1%} of requests are single-turn",
            ),
            Finding(
                "open_loop.follow_ups",
                closed,
                ramp(closed, 0.01, 0.08) * support(n, 10),
                0.08,
                "{value:.1%} of requests follow up on the previous answer (closed loop)",
                mitigating=True,
            ),
        ]
