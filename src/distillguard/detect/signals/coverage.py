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

# Each capability is recognised by its vocabulary and by its notation, since many prompts carry only the
# latter: a function signature with a docstring (HumanEval), LaTeX (competition maths), a data structure
# to work on (LeetCode). Words in other languages are listed without `\b` where they start or end with
# a letter outside ASCII: RE2's `\b` is ASCII-only (Java's is not), so there it would never match.
TOPICS: dict[str, str] = {
    "code": r"```|\b(python|javascript|typescript|java|c\+\+|rust|golang|sql|regex|function|class|compile|"
    r"algorithm|api|bug|debug|code|script|program|implement|refactor|array|string|integer)\b"
    # notation: a definition, an import, a C entry point, a log call
    r"|\bdef [a-z_]\w*\(|\bimport [a-z_]|#include\s*<|\bint main\s*\(|\bpublic (static|class|void)\b|"
    r"console\.log|\bfunc [a-z_]\w*\(|\bfn [a-z_]\w*\("
    r"|\b(linked list|binary (search )?tree|hash ?(map|table)|recursion|recursive|time complexity|"
    r"space complexity|big-o|leetcode|unit tests?|compiler|segfault|segmentation fault|null pointer|"
    r"stack trace|traceback|runtime error|syntax error|html|css|react (component|hook|app|native)|jsx|"
    r"node\.?js|docker|kubernetes|git|bash (script|command)|shell script|command line|pip install|npm|django|"
    r"flask|pandas|numpy|dataframe|kotlin|php|scala|haskell|matlab|boolean)\b"
    r"|\bgiven (an?|the) (integer |sorted |binary |2d |)(array|matrix|grid|tree|graph)\b"
    r"|\breturn the (minimum|maximum|number|length|index|indices|count|sum)\b"
    r"|函数|代码|程序|関数|コード|함수|코드|\b(función|fonction|funktion|código)\b",
    "math": r"\b(solve|equation|calculate|compute|how many|how much|percent|probability|integral|derivative|"
    r"theorem|prove|sum of|total|average|ratio|fraction)\b|\d+\s*[-+*/x×÷=]\s*\d+|\$\d"
    # notation: LaTeX commands, inline maths ($x$, $f(x)$), exponents (x^2, 2^{10})
    r"|\\(frac|dfrac|tfrac|sqrt|cdot|times|sum|prod|int|lim|infty|pi|theta|alpha|beta|leq?|geq?|neq|binom|"
    r"log|ln|sin|cos|tan|angle|triangle|circ|pmod|equiv)\b|\$[a-z]([^a-z$]|\$)|[a-z0-9)]\^[0-9a-z{(]"
    r"|\b(remainder|divisible|prime numbers?|primes|polynomial|quadratic|hypotenuse|isosceles|equilateral|"
    r"right triangle|radius|diameter|circumference|perimeter|area of (a|the|this|triangle|rectangle|circle|"
    r"square)|volume of (a|the|this)|matri(x|ces)|eigen\w*|geometry|algebra|arithmetic|simplify|factorial|"
    r"logarithm|gcd|lcm|expected value|variance|standard deviation|real (numbers|roots)|roots of|"
    r"how many ways|positive integers?|find the (value|values|number|sum|product|smallest|largest|greatest|"
    r"least|maximum|minimum|remainder|area|perimeter|volume|length))\b"
    r"|计算|方程|求解|計算|方程式|を解|계산|방정식|équation|вычисли|уравнени"
    # "how many" / "how much", as in English: a word problem's question
    r"|多少|几个|几只|几天|几岁|いくつ|何個|何人|何円|몇 개|몇 명|얼마|сколько"
    r"|\b(resuelve|calcula|calcule|calcular|ecuación|ecuacion|berechne|berechnen|gleichung|calculez|calculer|"
    r"resolva|equação|cuántos|cuántas|cuánto|combien|wie viele|wie viel|quantos|quantas|quanti|quante)\b",
    "reasoning": r"\b(puzzle|riddle|logic|logical|deduce|infer|paradox|which of the following|true or false|"
    r"syllogism|if all [a-z]+ are|tells the truth|truth-tellers?|knights and knaves|"
    r"(sort|arrange|order) the following|what is the date|mm/dd/yyyy)\b",
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
