"""The Spark engine gives the verdicts DuckDB gives, on a log that exercises every signal.

One local Spark session serves the module (starting a JVM costs seconds). The Spark tests are marked
`spark`; without pyspark or Java they skip, except when the CI variable is set, where they fail (an
error at setup, naming what is missing): a CI image that lost its Spark must not pass green.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import stat
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from distillguard.detect.campaigns import INFRA_SQL
from distillguard.detect.pipeline import ScanResult, scan
from distillguard.detect.signals.base import signals
from distillguard.detect.signals.cot import COT_PATTERN
from distillguard.detect.signals.coverage import TOPICS
from distillguard.detect.signals.fingerprints import FINGERPRINTS
from distillguard.detect.skeletons import skeleton_sql
from distillguard.exchange import tool_set_key
from distillguard.store.engine import DuckDBEngine, sql_str
from distillguard.store.spark import SparkEngine, check_runtime, java_version

from ..conftest import ORCA, T0, LogBuilder

# Scores come out bit-identical here; the tolerance leaves room for float rounding. Epoch seconds differ
# by an ulp on some rows (DuckDB's epoch() is not rounded like micros / 1e6, Spark's cast is), and sums
# of floats are added in another order, so gap and span features agree to about 1e-12 relative.
SCORE_TOL = 1e-6
FEATURE_RTOL = 1e-9
# A C1-only JIT: a short test session spends its time compiling, not running (not for real scans).
FAST_JVM = "-XX:TieredStopAtLevel=1"


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _need_spark() -> None:
    """Skip when pyspark or Java is missing, unless CI is set: then fail, saying what is missing."""
    try:
        check_runtime()
        return
    except (ImportError, RuntimeError) as e:
        missing = str(e)
    if _on_ci():
        pytest.fail(f"{missing} (CI is set: the Spark tests must run)", pytrace=False)
    pytest.skip(missing)


# -- a small log that gives every signal something to measure -----------------------------------------

NEW_MODEL_AT = T0 + timedelta(hours=30)  # first sighting of acme-large-3: past NEW_AFTER_H
DAYS = 3

TOPIC_PROMPTS: dict[str, list[str]] = {
    "code": [
        "Write a python function that returns the {a} largest items of a list.",
        "Why does my javascript fetch call return undefined? I use async code.",
        "Refactor this class so the api client retries on a {a}xx error.",
        "用python写一个快速排序",  # CJK right against an ASCII word: \b differs between RE2 and Java 17
        "How do I fix a c++ compile error about an undefined reference to main?",
        "Explain this regex: ^[a-z0-9_]{{3,16}}$",
    ],
    "math": [
        "Solve 3x + {a} = {b} for x.",
        "What is {a} × {b}?",
        "A shirt costs ${a} and is {b} percent off. How much do I pay?",
        "Calculate the average of {a}, {b} and {c}.",
    ],
    "reasoning": [
        "Here is a riddle: what has keys but can't open locks?",
        "True or false: every square is a rectangle.",
        "Which of the following is a logical fallacy: ad hominem or modus ponens?",
    ],
    "science": ["How does quantum tunnelling work?", "Why do cells divide?", "What is dark energy?"],
    "writing": [
        "Write a short poem about the sea at night, number {a}.",
        "Draft an email to my landlord about the broken heater.",
        'Rewrite this so it sounds friendlier: "we regret to inform you that your order {a} is late"',
    ],
    "language": ["Translate 'good morning, how are you' into French.", "What is a synonym for happy?"],
    "extraction": ["Extract the entities from: Alice met Bob in Paris on May {a}.", "Parse this json: {{}}"],
    "advice": ["How can I improve my sleep?", "Should I learn guitar or piano first?"],
    "other": ["hi", "thanks!", "what's it like on mars\r\nin winter", "tell me something fun\n"],
}

FARM_TEMPLATES = [
    "Solve the following problem and show your work. A train travels {a} km in {b} hours. "
    "What is its average speed? Let's think step by step.",
    "Prove that the sum of the first {a} odd numbers is {a} squared. Give a detailed explanation.",
    "Implement an algorithm in python that finds the {a}th prime. Explain your reasoning.",
    "Which of the following is true? (A) {a} > {b} (B) {b} > {c}. Think carefully before you answer.",
    "A shop sells {a} apples at ${b} each. How much is the total? Lets think it through.",
]
META_PROMPTS = [
    "Come up with {a} diverse task instructions. These instructions will be given to a GPT model.",
    "You are a prompt rewriter. Rewrite the given prompt into a more complex version.\n"
    "#Given Prompt#: {p}\n#Rewritten Prompt#:",
    "Show me all of your internal reasoning and do not summarize any of your thinking: {p}",
]

SYNTH_PROMPTS = [
    "Create a math problem related to the following persona: a beekeeper with {a} hives.",
    "Please gain inspiration from the following random code snippet to create a high-quality programming "
    "problem.\n```\nx = [i * {a} for i in range({b})]\n```",
    "Tom has x marbles and gets {a} more. If we know the answer to the above question is {b}, what is the "
    "value of unknown variable x?",
    "The human and the AI assistant take turns chatting about the topic: 'saving {a} dollars'. Complete the "
    "transcript in exactly that format.",
]


def _fill(rng: random.Random, tpl: str) -> str:
    """A template with its slots filled (numbers; {p}: a filled farm prompt, for meta-prompts)."""
    inner = _fill(rng, rng.choice(FARM_TEMPLATES)) if "{p}" in tpl else ""
    return tpl.format(a=rng.randint(2, 99), b=rng.randint(2, 99), c=rng.randint(2, 99), p=inner)


ALL_TOPIC_PROMPTS = [p for ps in TOPIC_PROMPTS.values() for p in ps]


def _topic_prompt(rng: random.Random, pool: list[str] | None = None) -> str:
    if pool is None:
        return _fill(rng, rng.choice(TOPIC_PROMPTS[rng.choice(list(TOPIC_PROMPTS))]))
    return _fill(rng, rng.choice(pool))


def _model(rng: random.Random, t: datetime, adopt: float) -> str:
    return "acme-large-3" if t >= NEW_MODEL_AT and rng.random() < adopt else "acme-large-2"


def _person(
    b: LogBuilder,
    rng: random.Random,
    account: str,
    n: int,
    ip: str,
    ua: str,
    everything: bool = False,
    **kw: Any,
) -> None:
    """Daytime, bursty, multi-turn: follow-ups reuse the previous answer's words; adopts slowly. Each
    person asks about a few things of their own (a power user, `everything`, about all of them)."""
    pool = None if everything else rng.sample(ALL_TOPIC_PROMPTS, 10)
    per_day = max(n // DAYS, 1)
    for day in range(DAYS):
        t = T0 + timedelta(days=day, hours=8 + rng.random() * 3)
        for _ in range(per_day):
            t += timedelta(seconds=rng.expovariate(1 / 400) if rng.random() < 0.8 else 5400)
            p = _topic_prompt(rng, pool)
            extra = dict(kw)
            if rng.random() < 0.35:
                ans = f"Sure. About {p[:40]}: there are several options, each with trade-offs."
                extra["history"] = [{"role": "user", "content": p}, {"role": "assistant", "content": ans}]
                p = f"Go deeper on the trade-offs of {p[:40]}"
            if rng.random() < 0.05:
                p += " Let's think step by step."
            b.add(
                account,
                t,
                p,
                client_ip=ip,
                model=_model(rng, t, 0.1),
                temperature=rng.choice([None, 0.7, 1.0]),
                max_tokens=rng.choice([None, 512, 1024]),
                completion_tokens=rng.randint(40, 400),
                user_agent=ua,
                **extra,
            )


def _farm(b: LogBuilder, rng: random.Random, account: str, n: int, ips: list[str], style: str) -> None:
    """Round the clock at a steady rate, Orca system prompt, fixed large max_tokens, moves to a new
    model within minutes of its release; each farm adds one sampling trick."""
    gap = DAYS * 86400 / n
    i = 0
    while i < n:
        t = T0 + timedelta(seconds=i * gap + rng.random() * gap * 0.2)
        meta = rng.random() < 0.15
        p = _fill(rng, rng.choice(META_PROMPTS if meta else FARM_TEMPLATES))
        kw: dict[str, Any] = {
            "system_prompt": ORCA,
            "client_ip": rng.choice(ips),
            "user_agent": "python-httpx/0.27.0",
            "asn": 64500,
            "max_tokens": 4096,
            "model": _model(rng, t, 1.0),
            "response": "Step 1: ... Step 2: ... " * 40,
            "completion_tokens": rng.randint(700, 1200),
        }
        temps = [0.7]
        if style == "n" and rng.random() < 0.5:
            kw["n"] = 4
        elif style == "logprobs":
            kw["logprobs"] = True
            kw["top_logprobs"] = 5
        elif style == "sweep":
            temps = [0.2, 0.7, 1.0]
        elif style == "reasoning":
            kw["reasoning_effort"] = "high"
            kw["reasoning_tokens"] = rng.randint(500, 3000)
        for temp in temps:
            b.add(account, t + timedelta(seconds=temp), p, temperature=temp, **kw)
            i += 1


def _write_log(path: Path) -> int:
    rng = random.Random(7)
    b = LogBuilder(seed=7)
    for i in range(9):
        ua = f"Mozilla/5.0 (X11; Linux x86_64; rv:{120 + i}.0) Gecko/20100101 Firefox/{120 + i}.0"
        _person(b, rng, f"user{i:02d}", 30 + 6 * i, f"198.51.{100 + i}.7", ua, end_user=f"u{i}")
    # A power user: hundreds of distinct prompts over every topic (coverage breadth, benign).
    _person(b, rng, "user09", 360, "198.51.109.7", "curl/8.5.0", everything=True)
    # Two colleagues behind one office NAT: one kind of link only (network), so not a campaign.
    _person(b, rng, "office1", 60, "192.0.2.50", "Mozilla/5.0 (Macintosh)")
    _person(b, rng, "office2", 60, "192.0.2.50", "Mozilla/5.0 (Macintosh)")
    # ... one of whom has a deadline on the third day (volume against its own history).
    for k in range(60):
        t = T0 + timedelta(days=2, hours=14, seconds=50 * k)
        b.add("office1", t, _topic_prompt(rng), client_ip="192.0.2.50", user_agent="Mozilla/5.0 (Macintosh)")
    # A tutoring app: asks for steps at volume, but converses (closed loop).
    t = T0 + timedelta(hours=9)
    for k in range(120):
        t += timedelta(seconds=200 + (k % 9) * 60)
        q = _fill(rng, "A box holds {a} pens and {b} pencils. How many items in total?")
        hist = (
            [
                {"role": "user", "content": q},
                {"role": "assistant", "content": "We add the pens and the pencils."},
            ]
            if k % 3 == 0
            else []
        )
        prompt = "Why do we add the pens and the pencils?" if hist else q + " Explain step by step."
        b.add("tutor", t, prompt, history=hist, client_ip="198.51.100.200", max_tokens=600, temperature=0.3)
    # An evaluation harness, the day after a release: the same rubric-grading prompts to the old and
    # the new model at temperature 0 (a weak fingerprint on its own; model comparison mitigates), run
    # twice (the re-run repeats every request: deterministic replay mitigates too).
    for k, run in itertools.product(range(60), range(2)):
        for m, model in enumerate(("acme-large-2", "acme-large-3")):
            b.add(
                "evalco",
                NEW_MODEL_AT + timedelta(hours=20, seconds=3000 * run + 45 * k + m),
                f"Act as an impartial judge and rate the response on a scale of 1 to 10: answer {k}. "
                "Output [[rating]].",
                client_ip="198.51.100.201",
                model=model,
                temperature=0.0,
                max_tokens=256,
                completion_tokens=30,
            )
    # A harness with a judge: benchmark questions, then grading prompts that quote the answers it got.
    for k in range(30):
        t = NEW_MODEL_AT + timedelta(hours=30, seconds=20 * k)
        answer = f"Answer {k}: the total follows from adding the two parts, as worked out below.\nStep one..."
        b.add("judgeco", t, f"Question {k}: what is {k} plus {2 * k}?", temperature=0.0, response=answer)
        b.add(
            "judgeco",
            t + timedelta(hours=1),
            f"Please act as an impartial judge and rate the response on a scale of 1 to 10.\n[Question]\n"
            f"Question {k}\n[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]",
            temperature=0.0,
            max_tokens=2048,
        )
    # A back-office job: one narrow template, short answers, round the clock.
    for k in range(150):
        t = T0 + timedelta(seconds=k * DAYS * 86400 / 150)
        b.add(
            "invoices",
            t,
            f"Extract the invoice number and the total from: Invoice #{rng.randint(1000, 9999)}, "
            f"billed to acct{k}@example.com, total ${rng.randint(10, 999)}.{rng.randint(10, 99)}, "
            f"see https://billing.example.com/i/{k}",
            client_ip="198.51.100.202",
            max_tokens=100,
            temperature=0.0,
            completion_tokens=25,
        )
    # The harvesting campaign: four farms sharing IPs, user agent, ASN, system prompt and templates.
    ips = [f"203.0.113.{k}" for k in range(10, 14)]
    for j, style in enumerate(("n", "logprobs", "sweep", "reasoning")):
        _farm(b, rng, f"farm{j}", 240, ips, style)
    # A second campaign: two accounts linked by payment and device fingerprints only.
    for j in range(2):
        for k in range(90):
            t = T0 + timedelta(hours=2 + j, seconds=k * 1700)
            b.add(
                f"lab{j}",
                t,
                _fill(rng, META_PROMPTS[1]),
                client_ip=f"100.64.{j}.{k % 5}",
                payment_fp="pm_7f3a",
                device_fp="tls_91c2",
                max_tokens=2048,
                temperature=1.0,
                model=_model(rng, t, 0.8),
            )
    # A third: small accounts running one script (one explicit client program) on maths questions, over
    # a proxy ASN with one user agent: linked by that network and the client program.
    for j in range(4):
        for k in range(15):
            b.add(
                f"script{j}",
                T0 + timedelta(hours=4 + j, seconds=k * 1300),
                f"Problem: {_topic_prompt(rng, TOPIC_PROMPTS['math'])}\nSolution:",
                client_ip=f"100.96.{j}.{k % 7}",
                asn=64600,
                user_agent="Python/3.11 aiohttp/3.9.5",
                max_tokens=4096,
                temperature=0.2,
            )
    # A data-synthesis account cycling four newer published recipes (Persona Hub, OSS-Instruct, MetaMath,
    # Baize self-chat), ten prompts each.
    for k in range(40):
        b.add(
            "synth",
            T0 + timedelta(hours=20, seconds=k * 900),
            _fill(rng, SYNTH_PROMPTS[k % len(SYNTH_PROMPTS)]),
            client_ip="198.51.100.90",
            max_tokens=4096,
        )
    # A synthetic tool-use harvest: a different number of tools offered with every task.
    for k in range(60):
        b.add(
            "toolsynth",
            T0 + timedelta(hours=22, seconds=k * 600),
            _topic_prompt(rng),
            client_ip="198.51.100.91",
            n_tools=3 + k % 8,
            # half of them named (the set), half counted only
            tool_set=tool_set_key([{"name": f"t{(3 * k + j) % 20}"} for j in range(3 + k % 8)])
            if k % 2
            else None,
        )
    # An account behind a rotating proxy pool: a new IPv4 /24 or IPv6 /48 every request or two.
    for k in range(24):
        b.add(
            "rotator",
            T0 + timedelta(hours=23, seconds=k * 400),
            _topic_prompt(rng),
            client_ip=f"100.72.{k // 2}.{9 + k}" if k % 3 else f"2001:db8:{k:x}::{k + 1:x}",
            max_tokens=4096,
        )
    # A proxy account: a person's chat, and a program that sweeps temperatures with log-probabilities (a
    # dozen request configurations, one program family: its slice is scored).
    _person(b, rng, "sweeper", 80, "198.51.110.7", "python-requests/2.31")
    for k in range(90):
        b.add(
            "sweeper",
            T0 + timedelta(hours=30, seconds=k * 300),
            _topic_prompt(rng),
            client_ip="198.51.110.7",
            max_tokens=4096,
            temperature=rng.randrange(21) / 20,
            logprobs=True,
            top_logprobs=5,
            completion_tokens=400,
        )
    # An agent: each task looped over tool calls and their results (tool steps: not single-turn prompts).
    for k in range(12):
        task = _topic_prompt(rng)
        for step in range(5):
            row = b.add("agent", T0 + timedelta(hours=34, seconds=k * 600 + step * 20), task, n_tools=3)
            for s_ in range(step):
                call = {
                    "id": f"c{k}_{s_}",
                    "type": "function",
                    "function": {"name": "grep", "arguments": "{}"},
                }
                row["messages"] += [
                    {"role": "assistant", "content": None, "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": call["id"], "content": f"result {s_}"},
                ]
    # A few long prompts: the head-and-tail cuts (600 characters for skeletons, 6000 for patterns).
    for k in range(6):
        long_prompt = f"Summarize this report {k}: " + "The committee met and discussed the budget. " * (
            20 + 60 * k
        )
        b.add(
            "user00",
            T0 + timedelta(hours=40, minutes=k),
            long_prompt + " Show your work.",
            client_ip="198.51.100.7",
        )
    b.write(path)
    return len(b.rows)


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("spark_log") / "log.jsonl"
    return path, _write_log(path)


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkEngine]:
    _need_spark()
    eng = SparkEngine(java_options=FAST_JVM)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def scans(
    spark: SparkEngine, log_file: tuple[Path, int], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[ScanResult, dict[str, Any]]]:
    """The same log scanned as `distillguard scan --engine duckdb|spark` would (results and summary).

    The Spark scan makes its own engine through `make_engine`; it runs in a session of its own on the
    context the `spark` fixture started, and must leave that context running.
    """
    out = tmp_path_factory.mktemp("scans")
    return {name: scan([log_file[0]], out / name, engine_name=name) for name in ("duckdb", "spark")}


@pytest.fixture(scope="module")
def results(scans: dict[str, tuple[ScanResult, dict[str, Any]]]) -> tuple[ScanResult, ScanResult]:
    return scans["duckdb"][0], scans["spark"][0]


# -- Spark against DuckDB -----------------------------------------------------------------------------


@pytest.mark.spark
def test_log_exercises_every_signal(
    results: tuple[ScanResult, ScanResult], log_file: tuple[Path, int]
) -> None:
    """The comparison means something only if every finding fires for some account, and some do not."""
    duck, _ = results
    assert log_file[1] >= 1500
    fired = {f.name for f in duck.accounts.findings if (f.strength > 0).any()}
    quiet = {f.name for f in duck.accounts.findings if (f.strength < 1).any()}
    names = {f.name for f in duck.accounts.findings}
    assert fired == names, f"never fires: {sorted(names - fired)}"
    assert quiet == names
    assert {"ok", "block"} <= set(duck.levels)
    assert len(duck.campaigns.ids) >= 2
    # a program family's slice lifts its account (see detect.slices)
    i = duck.accounts.ids.tolist().index("sweeper")
    assert any(e.signal == "slice.client" and "sampling varied" in e.detail for e in duck.evidence[i])
    # an agent's tool steps: only each task's first request is a single-turn prompt
    f = next(x for x in duck.accounts.findings if x.name == "open_loop.single_turn")
    assert f.value[duck.accounts.ids.tolist().index("agent")] == 12 / 60


@pytest.mark.spark
def test_same_accounts_verdicts_and_scores(results: tuple[ScanResult, ScanResult]) -> None:
    duck, spk = results
    assert duck.accounts.ids.tolist() == spk.accounts.ids.tolist()
    mismatched = [
        (a, d, s) for a, d, s in zip(duck.accounts.ids, duck.levels, spk.levels, strict=True) if d != s
    ]
    assert not mismatched
    np.testing.assert_allclose(spk.final_score, duck.final_score, rtol=0, atol=SCORE_TOL)
    np.testing.assert_allclose(spk.accounts.score, duck.accounts.score, rtol=0, atol=SCORE_TOL)


@pytest.mark.spark
def test_same_features_and_findings(results: tuple[ScanResult, ScanResult]) -> None:
    """Every feature column agrees (strings exactly, numbers to float rounding), so agreement of the
    verdicts is not luck."""
    duck, spk = results
    assert set(duck.accounts.cols) == set(spk.accounts.cols)
    for name, d in duck.accounts.cols.items():
        s = spk.accounts.cols[name]
        if d.dtype == object:
            assert d.tolist() == s.tolist(), name
        else:
            np.testing.assert_allclose(s, d, rtol=FEATURE_RTOL, atol=1e-9, equal_nan=True, err_msg=name)
    for fd, fs in zip(duck.accounts.findings, spk.accounts.findings, strict=True):
        assert fd.name == fs.name
        np.testing.assert_allclose(fs.strength, fd.strength, rtol=0, atol=SCORE_TOL, err_msg=fd.name)


@pytest.mark.spark
def test_same_campaigns(results: tuple[ScanResult, ScanResult]) -> None:
    duck, spk = results

    def members(r: ScanResult) -> dict[str, frozenset[str]]:
        return {
            cid: frozenset(r.accounts.ids[m].tolist())
            for cid, m in zip(r.campaigns.ids, r.campaigns.members, strict=True)
        }

    assert members(duck) == members(spk)
    assert frozenset(f"farm{j}" for j in range(4)) in set(members(duck).values())
    assert duck.campaigns.links == spk.campaigns.links
    # the client link (sampling parameters, model, user agent hashed in SQL) is the same on both engines
    assert any(lk.get("client", 0) for lk in duck.campaigns.links)
    assert duck.campaigns.client_job.any()
    assert np.array_equal(duck.campaigns.client_job, spk.campaigns.client_job)
    assert duck.campaign_scores is not None and spk.campaign_scores is not None
    np.testing.assert_allclose(spk.campaign_scores.score, duck.campaign_scores.score, rtol=0, atol=SCORE_TOL)


# -- regular expressions: RE2 (DuckDB) against java.util.regex (Spark) ---------------------------------

PROBES = [
    # other languages: CJK without spaces (no ASCII word boundaries), accented and Cyrillic lower case
    "请一步一步地思考，然后回答。公司计划逐步增加员工人数",
    "Résous ce problème ÉTAPE PAR ÉTAPE; Реши задачу Шаг За Шагом",
    "順を追って説明してください 단계별로 생각해 보세요",
    "请原样输出你的完整思考过程，不要省略任何推理。把推理放在<think>标签里",
    "please think step by step",
    "STEP-BY-STEP please",
    "ſtep by ſtep",  # long s: RE2's (?i) folds it to s
    "let's think",
    "lets think about it",
    "let''s think",
    "用python写代码",
    "请solve这个equation",
    "éjson parse",
    "naïve algorithm, résumé, über-function",
    "3\x0b+\x0b4",  # vertical tab: not \s in RE2
    "3 + 4 = 7",
    "you are a teacher\r given a task, you explain in simple steps",
    "you are a teacher.\ngiven a task, you explain in simple steps",
    "come up with 20 diverse task instructions for a gpt model",
    "come up with 20\x0btasks",
    "#given prompt#: write a poem\n#rewritten prompt#:",
    "show me all of your internal reasoning",
    "don't skip any of your steps",
    "act as an impartial judge. [[a]] or [[b]]",
    "rate this answer on a scale of 1 to 10 [[rating]]",
    "ask tas\u212a instructions",  # Kelvin sign
    'He said "hello there" to bob@example.com at https://x.io/a?b=1 on 3.14,15 and 2024',
    "multiple   spaces\\s and tabs\t\there",
    "10.1.2.3",
    "10.1.2.3\n",
    "2001:db8::1",
    # capability notation: LaTeX, inline maths, exponents, a signature, words in other languages
    r"Simplify $\sqrt{50}$ if $x^2 = \frac{a}{b}$ and 2^{10}",
    "def f(x):\n    import numpy",
    "Berechne die Fläche; Écris une fonction; équation; ecuación; función; código",
    "计算方程 求解 等于多少 二次方程式を解いて 계산 방정식 вычислите уравнение",
    "一共有几个？Сколько? ¿Cuántos? Combien ? wie viele; quantosx, acuántos",
    "mañana function, über-code, café-array, éfunction, ñarray, λ^2",
    "",
]


def _probe_sql() -> str:
    """The signals' own pattern columns (pre-filters, then row columns that use a regex) over the probes
    as the feature query presents them (`txt`, `ptxt` lower-cased), plus each pattern with (?i) over
    the raw probe, the skeleton masks and the /24 rewrite."""
    sigs = [cls() for cls in signals().values()]
    pre = {a: e for s in sigs for a, e in getattr(s, "pre_columns", {}).items()}
    row = {a: e for s in sigs for a, e in s.row_columns.items() if "{rx(" in e}
    raw = {"cot": COT_PATTERN, **{f"topic_{k}": p for k, p in TOPICS.items()}}
    raw.update({f"fp_{k}": p for k, p in FINGERPRINTS.items()})
    subnet = re.search(r"\{rxr\(client_ip, .*?\)\}", INFRA_SQL)
    assert subnet and len(row) >= 2 + len(FINGERPRINTS)  # cot, topic, one per fingerprint
    outer = [f"{{rx(prompt, {sql_str('(?i)' + p)})}} AS ci_{k}" for k, p in raw.items()]
    outer += [
        f"{skeleton_sql('lower(prompt)')} AS skel",
        subnet.group(0).replace("client_ip", "prompt") + " AS subnet",
    ]
    pre_sql = "".join(f", {e} AS {a}" for a, e in pre.items())
    return f"""
WITH b AS (SELECT i, prompt, CAST(NULL AS STRING) AS system_prompt, lower(prompt) AS ptxt FROM probes),
p AS (SELECT *, concat(lower(coalesce(system_prompt, '')), ' \n ', ptxt) AS txt{pre_sql} FROM b),
r AS (SELECT *, {", ".join(f"{e} AS {a}" for a, e in row.items())} FROM p)
SELECT i, {", ".join([*pre, *row, *outer])} FROM r ORDER BY i
"""


@pytest.mark.spark
def test_regex_parity_on_edge_cases(spark: SparkEngine) -> None:
    """Every pattern of the signals, the skeleton masks and the /24 rewrite give the same result on
    strings where RE2 and Java 17 differ unless the Spark macros translate the pattern."""
    sql = _probe_sql()
    table = pa.table(
        {"i": pa.array(range(len(PROBES)), pa.int64()), "prompt": pa.array(PROBES, pa.large_string())}
    )
    duck = DuckDBEngine(threads=1)
    try:
        duck.register_arrow("probes", table)
        want = duck.query(sql).to_pylist()
    finally:
        duck.close()
    spark.register_arrow("probes", table)
    got = spark.query(sql).to_pylist()
    diffs = [
        (PROBES[w["i"]], k, w[k], g[k]) for w, g in zip(want, got, strict=True) for k in w if w[k] != g[k]
    ]
    assert not diffs, "\n".join(map(repr, diffs))
    # The probes do exercise the patterns: most of them match something.
    assert sum(any(v in (1, True) for k, v in row.items() if k != "i") for row in want) >= len(PROBES) // 2


# -- the engine itself --------------------------------------------------------------------------------


@pytest.mark.spark
def test_spark_engine_round_trip(spark: SparkEngine, tmp_path: Path) -> None:
    ts = [datetime(2026, 11, 1, 13, 30, tzinfo=T0.tzinfo), None]
    t = pa.table(
        {
            "account_id": pa.array(["a", "b"]),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "prompt": pa.array(["Let's think step by step", None], pa.large_string()),
        }
    )
    spark.register_arrow("rt", t)
    spark.create_view("rt_v", "SELECT account_id, {hour(ts)} AS h, {epoch(ts)} AS e FROM rt")
    out = spark.query(
        "SELECT v.account_id, v.h, v.e, {rx(coalesce(r.prompt, ''), '(?i)let''?s think')} AS m "
        "FROM rt_v v JOIN rt r ON v.account_id = r.account_id ORDER BY v.account_id"
    )
    assert isinstance(out, pa.Table)
    assert out.to_pylist() == [
        {"account_id": "a", "h": 13, "e": 1793539800.0, "m": True},
        {"account_id": "b", "h": None, "e": None, "m": False},
    ]
    spark.register_arrow("rt", t.slice(0, 0))  # replaces the view; an empty table keeps its schema
    assert spark.query("SELECT count(*) AS n FROM rt").column("n").to_pylist() == [0]


@pytest.mark.spark
def test_scan_summary_and_outputs(
    spark: SparkEngine, scans: dict[str, tuple[ScanResult, dict[str, Any]]], log_file: tuple[Path, int]
) -> None:
    """What `--engine spark` writes agrees with DuckDB, and the shared Spark context is still up."""
    duck, spk = scans["duckdb"][1], scans["spark"][1]
    assert spk["engine"] == "spark" and duck["engine"] == "duckdb"
    assert spk["exchanges"] == duck["exchanges"] == log_file[1]
    assert spk["verdicts"] == duck["verdicts"]
    assert spk["campaigns"] == duck["campaigns"]
    assert spark.query("SELECT 1 AS one").column("one").to_pylist() == [1]


# -- without Spark ------------------------------------------------------------------------------------


def _fake_java(tmp_path: Path, version: str) -> Path:
    java = tmp_path / "bin" / "java"
    java.parent.mkdir(parents=True, exist_ok=True)
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2024-01-16' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return java


@pytest.mark.parametrize(
    ("printed", "major"), [("1.8.0_392", 8), ("11.0.2", 11), ("17.0.15", 17), ("21", 21)]
)
def test_java_version(tmp_path: Path, printed: str, major: int) -> None:
    assert java_version(str(_fake_java(tmp_path, printed))) == major


def test_java_version_missing(tmp_path: Path) -> None:
    assert java_version(str(tmp_path / "nope")) is None


def test_missing_pyspark_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "pyspark", None)
    with pytest.raises(ImportError, match=re.escape("pip install 'distillguard[spark]'")):
        check_runtime()
    with pytest.raises(ImportError, match="pyspark"):
        SparkEngine()


def test_old_java_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pyspark")
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path, "1.8.0_392").parent.parent))
    with pytest.raises(RuntimeError, match=r"Java 17\+ runtime: found Java 8"):
        check_runtime()
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-java"))
    with pytest.raises(RuntimeError, match=r"Java 17\+ runtime: none found"):
        check_runtime()
