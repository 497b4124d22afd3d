"""Chain-of-thought and reasoning-trace elicitation: how much of an account's traffic asks the model to
show its reasoning, and how much buys hidden reasoning (reasoning effort, reasoning tokens).

Reasoning traces are the most valuable thing a distiller can take; tutoring apps also ask for steps,
which is why this is one signal among several and mitigated by closed-loop conversation (open_loop).
"""

from __future__ import annotations

from typing import ClassVar

from distillguard.detect.signals.base import Columns, Finding, example_ids, ramp, register, safe_div, support
from distillguard.store.engine import sql_str

COT_PATTERN = (
    r"step[- ]by[- ]step|show (your|all|the|me your) (work|steps|reasoning|working)"
    r"|explain (your|the|each|every) (reasoning|step|steps|logic)|think (carefully|through|it through|aloud|out loud)"
    r"|chain[- ]of[- ]thought|reason(ing)? (through|out loud|aloud)|walk (me )?through (the|your|each)"
    r"|justify (your|each|every)|let'?s think|(detailed|full|complete) (explanation|reasoning|rationale|derivation)"
    r"|rationale|before (you )?(answer|answering|giving)"
)


@register
class ChainOfThought:
    name: ClassVar[str] = "cot"
    row_columns: ClassVar[dict[str, str]] = {
        "cot": f"CASE WHEN {{rx(txt, {sql_str(COT_PATTERN)})}} THEN 1 ELSE 0 END",
        "reasoning_high": "CASE WHEN lower(reasoning_effort) IN ('high', 'xhigh', 'max') THEN 1 ELSE 0 END",
        "has_reasoning": "CASE WHEN coalesce(reasoning_tokens, 0) > 0 OR reasoning_text IS NOT NULL THEN 1 ELSE 0 END",
    }
    extra_sql: ClassVar[str | None] = None
    account_columns: ClassVar[dict[str, str]] = {
        "cot_n": "sum(cot)",
        "cot_ex": "min(CASE WHEN cot = 1 THEN exchange_id END)",
        "reasoning_high_n": "sum(reasoning_high)",
        "has_reasoning_n": "sum(has_reasoning)",
    }

    def evaluate(self, cols: Columns) -> list[Finding]:
        n = cols["n_exchanges"]
        cot = safe_div(cols["cot_n"], n)
        high = safe_div(cols["reasoning_high_n"], n)
        ex = example_ids(cols["cot_ex"])
        return [
            Finding(
                "cot.elicitation",
                cot,
                ramp(cot, 0.3, 0.8) * support(n, 30),
                0.8,
                "{value:.0%} of prompts ask for step-by-step reasoning",
                ex,
            ),
            Finding(
                "cot.reasoning_effort",
                high,
                ramp(high, 0.5, 0.95) * support(n, 50),
                0.95,
                "{value:.0%} of requests buy high reasoning effort",
            ),
        ]
