"""Chain-of-thought and reasoning-trace elicitation: how much of an account's traffic asks the model to
show its reasoning, and how much buys hidden reasoning (reasoning effort, reasoning tokens).

Reasoning traces are the most valuable thing a distiller can take; tutoring apps also ask for steps,
which is why this is one signal among several and mitigated by closed-loop conversation (open_loop).
"""

from __future__ import annotations

from typing import ClassVar

from distillguard.detect.signals.base import Columns, Finding, example_ids, ramp, register, safe_div, support
from distillguard.store.engine import sql_str

# Chain-of-thought elicitation is a request about *how* to answer, and requests of that kind come in a
# few grammatical families; each is written as a family (verbs x qualifiers x nouns), not as a list of
# phrasings, so paraphrases ("show every step of your reasoning", "lay out your full thought process",
# "reason carefully before answering") match without being listed. Tested on paraphrases and on real
# user prompts (arena-hard, MT-bench, Vicuna) in tests/detect/test_signals.py.
COT_MANNER = (  # a manner of answering: step by step, one step at a time, thinking it through
    r"step[- ]by[- ]step|one step at a time|chain[- ]of[- ]thought|(let'?s|let us) (think|reason)"
    r"|(think|reason)(ing)? (it |this |things )?(carefully|through|out loud|aloud|logically)"
)
# A display verb, then at least one qualifier that makes the object the *model's own* reasoning or all of
# it ("your", "every", "all of the", "intermediate", "full"...), then a reasoning noun. The qualifier is
# required: "explain the reasoning behind this law" and "show me the steps to install Python" ask about
# a subject or a procedure, "explain your reasoning" and "show every step" ask for the answer's working.
COT_DISPLAY = (
    r"(show|explain|justify|detail|write out|spell out|lay out|walk (me |us )?through|go through|reveal"
    r"|include|give|provide|present|output|share)( me| us)?"
    r"( (all|each|every|of|your|all the|of the|single|intermediate|individual|full|complete|entire|whole"
    r"|detailed|raw|hidden|internal))+"
    r" (reasoning|thinking|thought process|rationale|logic|derivations?|calculations|steps?|work|workings?)"
)
COT_JUSTIFY = (  # asking for the justification of the answer itself
    r"justify (your|each|every|all|the)|explain (why|how) you (got|arrived|reached|derived|solved|came|chose"
    r"|decided)|how (you|we) (arrived|got|came) (at|to)|rationale"
    r"|(detailed|full|complete|thorough) (explanation|reasoning|derivation|solution)"
)
COT_ORDER = (  # reasoning ordered before the answer
    r"(think|reason|reflect)( carefully| it through)? (first|before)"
    r"|before (you )?(answer|answering|giving|responding|replying)"
    r"|before (giving |stating |writing )?(the|your|a) final (answer|grade|score|verdict)"
)
# The same requests in other languages: a harvest need not be in English, and "step by step" is the
# phrase every language has. Words that also mean "gradually" (Chinese 逐步, Japanese 段階的に, Korean
# 단계적으로) count only with a verb of reasoning or answering after them ("逐步增加" is "increase
# gradually"). No \b: RE2's word boundary is ASCII-only and CJK has no spaces.
COT_OTHER_LANGUAGES = (
    r"paso a paso|passo a passo|passo dopo passo|étape par étape|schritt für schritt|шаг за шагом|пошагов"
    r"|一步一步|一步步|思维链|思維鏈|(展示|给出|給出|写出|寫出|列出|说明|說明)(你的)?(完整的?|详细的?|詳細的?)?"
    r"(思考|推理|解题|解題)(过程|過程|步骤|步驟)"
    r"|(逐步|分步骤?|分步驟)(地)?(思考|推理|分析|解答|解决|解決|计算|計算|说明|說明|解释|解釋)"
    r"|ステップバイステップ|一歩ずつ|段階的に(考え|説明|解|推論)|順を追って(考え|説明|解)|思考過程|推論過程"
    r"|단계별로|차근차근|단계적으로 (생각|설명|풀)"
)
COT_PATTERN = "|".join((COT_MANNER, COT_DISPLAY, COT_JUSTIFY, COT_ORDER, COT_OTHER_LANGUAGES))


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
