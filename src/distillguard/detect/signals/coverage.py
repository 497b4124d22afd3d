"""Capability concentration and systematic coverage of a topic taxonomy.

Each prompt gets one topic from a small keyword taxonomy (first match wins, in the order below). A
distiller either concentrates volume on the capabilities worth copying (maths, code, reasoning, tool
use) or sweeps the whole taxonomy evenly; both need many *distinct* prompts, which is what the findings
are scaled by. Tool use is read from the request, not the words: a request that offers the model tools
asks for the capability whatever its topic (a harvest of function-calling trajectories reads like
weather, travel and shopping questions).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from distillguard.detect.signals.base import Columns, Finding, ramp, register, safe_div
from distillguard.store.engine import sql_str

TOPICS: dict[str, str] = {
    "code": r"```|\b(python|javascript|typescript|java|c\+\+|rust|golang|sql|regex|function|class|compile|"
    r"algorithm|api|bug|debug|code|script|program|implement|refactor|array|string|integer)\b",
    "math": r"\b(solve|equation|calculate|compute|how many|how much|percent|probability|integral|derivative|"
    r"theorem|prove|sum of|total|average|ratio|fraction)\b|\d+\s*[-+*/x×÷=]\s*\d+|\$\d",
    "reasoning": r"\b(puzzle|riddle|logic|logical|deduce|infer|paradox|which of the following|true or false)\b",
    "science": r"\b(physics|chemistry|biology|quantum|molecule|cell|energy|climate|evolution|atom|gene)\b",
    "writing": r"\b(write|compose|draft|essay|story|poem|blog|email|letter|rewrite|paraphrase|summari[sz]e)\b",
    "language": r"\b(translate|translation|grammar|spanish|french|german|chinese|japanese|synonym)\b",
    "extraction": r"\b(classify|extract|label|categor(y|ize)|sentiment|json|table|parse|entities)\b",
    "advice": r"\b(should i|advice|recommend|tips|how can i|how do i|best way|improve my)\b",
}
CAPABILITIES = ("code", "math", "reasoning")


@register
class Coverage:
    name: ClassVar[str] = "coverage"
    row_columns: ClassVar[dict[str, str]] = {
        "topic": "CASE "
        # The topic shows in the first part of a prompt; reading 1,500 characters bounds the cost.
        + " ".join(f"WHEN {{rx(left(ptxt, 1500), {sql_str(pat)})}} THEN '{k}'" for k, pat in TOPICS.items())
        + " ELSE 'other' END",
        "tooled": "CASE WHEN coalesce(n_tools, 0) > 0 THEN 1 ELSE 0 END",
    }
    extra_sql: ClassVar[str | None] = None
    account_columns: ClassVar[dict[str, str]] = {
        **{f"topic_{k}": f"sum(CASE WHEN topic = '{k}' THEN 1 ELSE 0 END)" for k in [*TOPICS, "other"]},
        "distinct_prompts": "count(DISTINCT pkey)",
        "capability_n": "sum(CASE WHEN topic IN ("
        + ", ".join(f"'{c}'" for c in CAPABILITIES)
        + ") OR tooled = 1 THEN 1 ELSE 0 END)",
    }

    def evaluate(self, cols: Columns) -> list[Finding]:
        n = cols["n_exchanges"]
        counts = np.stack(
            [np.asarray(cols[f"topic_{k}"], dtype=np.float64) for k in [*TOPICS, "other"]], axis=1
        )
        p = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1) / np.log(counts.shape[1])
        cap = safe_div(cols["capability_n"], n)
        distinct = np.asarray(cols["distinct_prompts"], dtype=np.float64)
        # Scale by distinct prompts: a handful of maths questions is a person; thousands is a sweep.
        vol = ramp(np.log10(np.maximum(distinct, 1.0)), 2.0, 3.0)
        return [
            Finding(
                "coverage.capability_focus",
                cap,
                ramp(cap, 0.5, 0.85) * vol,
                0.85,
                "{value:.0%} of prompts target maths, code, reasoning or tool use",
            ),
            Finding(
                "coverage.breadth",
                ent,
                ramp(ent, 0.6, 0.85) * vol,
                0.85,
                "prompts spread evenly over the topic taxonomy (normalised entropy {value:.2f})",
            ),
        ]
