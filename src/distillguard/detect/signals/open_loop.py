"""Open-loop traffic: a distiller's prompts do not depend on the answers it got; people's do.

`user_turns` and `history_overlap` are derived at ingest (see `exchange.to_row`): the number of user
messages in the request, and the share of the prompt's words found in the previous assistant answer.
A follow-up that reuses the previous answer's words is closed-loop evidence, and mitigates.

So is grading one's own answers: an evaluation harness asks the model its benchmark's questions, then
asks a judge to grade the answers it got back (MT-bench, Arena-hard), so its grading prompts quote answers
this account received earlier. A harvest of judge outputs grades answers from elsewhere (its own
student's, other models'). A grading prompt (the rubric-judge fingerprint) quotes an answer when one of
its lines is the first line (40+ characters) of an answer the same account got before it.

A step of a tool loop (the request carries a tool's result: the model's tool call, executed and fed
back) counts for neither side. An agent sends its task as the last user message at every step, so by its
user messages alone each step read as a new single-turn prompt, and a coding-agent product as a harvest
of single-turn prompts. Nor is it a follow-up: a program read the answer, not a person, and agent
products and harvests of agent trajectories both loop.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from distillguard.detect.signals.base import Columns, Finding, ramp, register, safe_div, support

CLOSED_LOOP_OVERLAP = 0.15  # share of the follow-up's words taken from the previous answer
QUOTE_MIN_CHARS = 40  # shorter lines ("Sure!", "Here is the code:") open too many answers to tell

# Grading prompts that quote an answer their account received earlier, by exchange id: computed once per
# scan over the accounts' own history (the lines of grading prompts, the first lines of the answers of
# the accounts that grade), then counted per group (account, client slice or campaign). Lines compare
# exactly, untrimmed: a template puts a quoted answer on lines of its own, and trimming 1.5M lines cost
# more than the rest of the step.
_TABLES = {
    "dg_judge_lines": f"""
SELECT exchange_id, account_id, t, line FROM (
  SELECT r.exchange_id, r.account_id, r.t, {{lines(e.prompt)}} AS line
  FROM {{rows}} r JOIN exchanges e ON r.exchange_id = e.exchange_id
  WHERE r.fp_rubric_judge = 1
) l WHERE length(line) >= {QUOTE_MIN_CHARS}
""",
    "dg_answer_heads": f"""
SELECT account_id, t, head FROM (
  SELECT account_id, {{epoch(ts)}} AS t, {{first_line(response_text)}} AS head FROM exchanges
  WHERE account_id IN (SELECT account_id FROM {{rows}} WHERE fp_rubric_judge = 1)
) x WHERE length(head) >= {QUOTE_MIN_CHARS}
""",
    "dg_judged_own": """
SELECT DISTINCT q.exchange_id FROM dg_judge_lines q JOIN dg_answer_heads a
  ON q.account_id = a.account_id AND q.line = a.head
WHERE a.t < q.t
""",
}


@register
class OpenLoop:
    name: ClassVar[str] = "open_loop"
    row_columns: ClassVar[dict[str, str]] = {
        # A step of a tool loop (`tool_step`) carries the model's previous answer, executed: it is not a
        # new single-turn prompt, whatever its one user message says. Nor is it a follow-up: a program
        # read the answer, not a person, and agent products and agent-trajectory harvests both loop.
        "single_turn": "CASE WHEN coalesce(user_turns, 0) <= 1 AND tool_step = 0 THEN 1 ELSE 0 END",
        "closed_loop": f"CASE WHEN coalesce(history_overlap, 0) >= {CLOSED_LOOP_OVERLAP} THEN 1 ELSE 0 END",
    }
    tables: ClassVar[dict[str, str]] = _TABLES
    extra_sql: ClassVar[str | None] = (
        "SELECT s.account_id, count(DISTINCT s.exchange_id) AS judged_own_n FROM {source} s "
        "JOIN dg_judged_own o ON s.exchange_id = o.exchange_id GROUP BY s.account_id"
    )
    account_columns: ClassVar[dict[str, str]] = {
        "single_turn_n": "sum(single_turn)",
        "closed_loop_n": "sum(closed_loop)",
    }

    def evaluate(self, cols: Columns) -> list[Finding]:
        n = cols["n_exchanges"]
        single = safe_div(cols["single_turn_n"], n)
        closed = safe_div(cols["closed_loop_n"], n)
        # Of its grading prompts, those that grade answers it got from this API (NaN: none at all).
        judged = np.nan_to_num(np.asarray(cols["judged_own_n"], dtype=np.float64))
        own = safe_div(judged, cols["fp_rubric_judge_n"])
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
            Finding(
                "open_loop.grades_own_answers",
                own,
                ramp(own, 0.3, 0.8) * support(judged, 20),
                0.8,
                "{value:.0%} of its grading prompts grade answers it received from this API earlier "
                "(an evaluation harness judging the model's own answers)",
                mitigating=True,
            ),
        ]
