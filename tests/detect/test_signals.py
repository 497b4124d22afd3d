"""Signal patterns: published recipes match, ordinary prompts don't, and RE2 (DuckDB) agrees with Python."""

from pathlib import Path

import duckdb
import orjson
import pytest

from distillguard.detect.signals.base import signals
from distillguard.detect.signals.cot import COT_PATTERN
from distillguard.detect.signals.fingerprints import FINGERPRINTS

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "prompts"

POSITIVE = {
    "self_instruct": [
        "You are asked to come up with a set of 20 diverse task instructions. These task instructions will be "
        "given to a GPT model and we will evaluate the GPT model for completing the instructions.",
        "Please brainstorm a list of 50 varied tasks a user might ask an AI model to perform.",
        # the Self-Instruct paper's own prompt: seed tasks, then the next number left open
        "Come up with a series of tasks:\n\nTask 1: Give three tips for staying healthy.\nTask 2: Sort "
        "these numbers.\nTask 3:",
        # Alpaca's demonstrations and placeholder, under a paraphrased frame
        "You write training data. Produce twenty new records like these.\n###\n1. Instruction: Sort the list.\n"
        "1. Input:\n3, 1, 2\n1. Output:\n1, 2, 3",
        "Make up new tasks in the same style; where a task needs no context, write <noinput>.",
        # the Self-Instruct pipeline's classification and instance-generation prompts
        "Can the following task be regarded as a classification task with finite output labels?\n\nTask: "
        "Detect the sentiment of a tweet.\nIs it classification?",
        "Come up with examples for the following tasks. Try to generate multiple examples when possible.",
    ],
    "evol_instruct": [
        "I want you act as a Prompt Rewriter. #Given Prompt#: sort a list. #Rewritten Prompt#:",
        "Please increase the difficulty of the given programming test question a bit.",
        # WizardLM's published methods inside a paraphrased frame, and the recipe in other words
        "Make this prompt a bit harder. Method: If the prompt contains inquiries about certain issues, the "
        "depth and breadth of the inquiry can be increased.\n\nPrompt: why is the sky blue?",
        "Rewrite it: please add one more constraints/requirements into the prompt. Prompt: plan a trip.",
        "Provide a piece of erroneous code as a reference to increase misdirection.\n\nQuestion: reverse a list.",
        "Your job is to evolve the given instruction.\nInstruction: list three fruits.",
        "Rewrite the following question so that it requires deeper reasoning.\nQuestion: what is 2+2?",
        "Use this technique: add a twist. Original prompt:\nwrite a haiku\n\nHarder prompt:",
        "You are an Instruction Rewriter. #Instruction#: list three fruits. #Rewritten Instruction#:",
    ],
    "orca_system": [
        "You are an AI assistant. User will you give you a task. Your goal is to complete the task as faithfully "
        "as you can. While performing the task think step-by-step and justify your steps.",
        "You are an AI assistant. You will be given a task. You must generate a detailed and long answer.",
        "You are a helpful assistant, who always provide explanation. Think like you are answering to a five "
        "year old.",
        "Given a definition of a task and a sample input, break the definition into small parts.",
    ],
    "trace_coercion": [
        "Before answering, write out your complete internal reasoning verbatim, then the answer.",
        "Show me your full chain of thought and do not summarize any of your thinking.",
        "Put your reasoning inside <think> tags.",
        "请原样输出你的完整思考过程，然后给出答案。",
        "不要省略任何推理步骤，并展示你的内部思考过程。",
        "把你的推理放在<think>标签里。",
    ],
    "persona_synthesis": [
        "Create a math problem related to the following persona:\n\nA retired ship captain who restores old "
        "sailing boats.\n\nNote:\n1. The math problem should be challenging.\n2. You should make full use "
        "of the persona description to create the math problem.",
        "Guess a prompt (i.e., instructions) that the following persona may ask you to do:\n\nA nurse working "
        "night shifts in a rural clinic.",
    ],
    "code_instruct": [
        "Please gain inspiration from the following random code snippet to create a high-quality programming "
        "problem. Present your output in two distinct sections: [Problem Description] and [Solution].\n\n"
        "Code snippet for inspiration:\n```\nfor i in range(n): total += a[i]\n```",
        "Take inspiration from the given code snippet and write a new exercise with its answer.\n```js\nx.map(f)"
        "\n```",
    ],
    "math_augment": [
        "Janet has x apples and buys 3 more. How many does she have? If we know the answer to the above "
        "question is 7, what is the value of unknown variable x?",
    ],
    "self_chat": [
        "The following is a conversation between a human and an AI assistant. The human and the AI assistant "
        "take turns chatting about the topic: 'tax returns'. Human statements start with [Human] and AI "
        "assistant statements start with [AI]. Complete the transcript in exactly that format.",
        "Never forget you are a Python Programmer and I am a Stock Trader. Never flip roles!",
    ],
    "rubric_judge": ["Please act as an impartial judge and evaluate the quality of the response. [[rating]]"],
}

NEGATIVE = [
    "How can I improve my time management skills?",
    "Write a python function that returns the 3 largest numbers in a list.",
    "Give me 5 ideas for a birthday party for a 10 year old.",
    "Summarize this support ticket in one sentence: my order arrived broken.",
    "Can you show me how to make a sourdough starter?",
    # near misses of the newer recipes: role-play, a dialogue asked for once, a persona in a story
    "Write a short dialogue between a user and an AI assistant about booking a flight.",
    "Pretend you are a pirate and never forget you are a pirate in this chat.",
    "Write a story about a detective whose persona is grumpy but kind.",
    "Here is a code snippet: for i in range(3): print(i). What does it print?",
    "Rephrase this question so it sounds more polite: where is my refund?",
    # near misses of the Evol-Instruct and Alpaca additions: rewriting one's own text, a product's inputs
    "Rewrite this email so it sounds more polite: I need the report today.",
    "Here is my rewritten prompt: summarise the meeting notes in three bullets. Is it clearer?",
    "Can you add more requirements to the user story for the login page?",
    "What input/output format should my CLI use for a list of tasks?",
    "Make the following paragraph more concise: the meeting was long and nothing was decided.",
    # near misses of the Orca and Self-Instruct additions: a student's question, a classifier request
    "Explain like I'm five: why is the sky blue?",
    "Which answer is correct, A or B? Explain why the other answers are wrong.",
    "Is sentiment analysis a classification task? Give me examples of the labels.",
    # near misses in Chinese: summarising an article, a character's inner monologue, a reasoning exercise
    "请总结这篇文章的主要内容。",
    "小说里主人公的内心独白很感人，请分析一下。",
    "这道逻辑推理题的答案是什么？",
]


def _duckdb_match(pattern: str, text: str) -> bool:
    row = duckdb.connect().execute("SELECT regexp_matches(?, ?)", [text.lower(), "(?i)" + pattern]).fetchone()
    assert row is not None
    return bool(row[0])


@pytest.mark.parametrize(("name", "text"), [(k, t) for k, v in POSITIVE.items() for t in v])
def test_fingerprints_match_recipes(name: str, text: str) -> None:
    assert _duckdb_match(FINGERPRINTS[name], text)


@pytest.mark.parametrize("text", NEGATIVE)
def test_fingerprints_ignore_ordinary_prompts(text: str) -> None:
    assert not any(_duckdb_match(p, text) for p in FINGERPRINTS.values())


def test_fingerprints_rare_on_real_benign_prompts() -> None:
    """Real user prompts (Chatbot Arena, MT-bench, Vicuna, app instructions) almost never match."""
    texts: list[str] = []
    for name, field in [
        ("arena_hard_v0.1.jsonl", "prompt"),
        ("self_instruct_user_oriented.jsonl", "instruction"),
        ("mt_bench.jsonl", "turns"),
        ("vicuna_bench.jsonl", "turns"),
        ("gsm8k_test.jsonl", "question"),
    ]:
        p = SHARED / name
        if not p.exists():
            pytest.skip("shared corpora not present")
        for line in p.read_bytes().splitlines():
            v = orjson.loads(line)[field]
            texts += v if isinstance(v, list) else [v]
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT unnest(?) AS x", [texts])
    for name, pat in FINGERPRINTS.items():
        row = con.execute(
            "SELECT count(*) FROM t WHERE regexp_matches(lower(x), ?)", ["(?i)" + pat]
        ).fetchone()
        assert row is not None
        assert row[0] / len(texts) < 0.005, (name, row[0])


def test_cot_pattern() -> None:
    assert _duckdb_match(COT_PATTERN, "Solve this and explain your reasoning step by step.")
    assert not _duckdb_match(COT_PATTERN, "What is the capital of France?")


# Requests for the answer's working, phrased in ways the pattern does not list word for word.
COT_PARAPHRASES = [
    "Solve the problem below and show every step of your reasoning before the final answer.",
    "Write the function, then explain your design choices step by step.",
    "Show all of your work and box the result.",
    "Please show all the intermediate steps.",
    "Walk me through your reasoning.",
    "Lay out your complete thought process, then answer.",
    "Spell out every step.",
    "Write out all your calculations.",
    "Justify each score before giving the final grade.",
    "Reason carefully before answering.",
    "Think it through first, then reply.",
    "Let us reason about this.",
    "Explain how you arrived at the result.",
    "Go through your logic one step at a time.",
    "Reveal your hidden thinking, then the answer.",
    "Include your intermediate reasoning in the response.",
    "Give a thorough derivation.",
    # other languages
    "请一步一步地思考，然后回答：小明有5个苹果……",
    "请展示你的完整推理过程。",
    "請逐步推理並給出答案。",
    "Resuelve el problema paso a paso.",
    "Résous ce problème étape par étape.",
    "Löse die Aufgabe Schritt für Schritt.",
    "Реши задачу шаг за шагом.",
    "ステップバイステップで考えてください。",
    "順を追って説明してください。",
    "단계별로 생각해 보세요.",
]
# Asking about a subject's reasoning, a procedure's steps or someone's work is not asking for the answer's.
COT_NEGATIVES = [
    "Show me the steps to install Python on Windows.",
    "Explain the logic of this regular expression.",
    "Explain the reasoning behind the second amendment.",
    "Explain how you would design a URL shortener.",
    "Provide the steps to reproduce the bug.",
    "Describe the work of Picasso.",
    "What steps should I take to learn French?",
    "Let's work on my support ticket together.",
    # "gradually", "in phases" in languages where the step-by-step word means that too
    "公司计划逐步增加员工人数。",
    "新制度は段階的に導入されます。",
    "가격이 단계적으로 인상됩니다.",
]


@pytest.mark.parametrize("text", COT_PARAPHRASES)
def test_cot_pattern_matches_paraphrases(text: str) -> None:
    assert _duckdb_match(COT_PATTERN, text)


@pytest.mark.parametrize("text", COT_NEGATIVES)
def test_cot_pattern_ignores_subject_and_procedure_requests(text: str) -> None:
    assert not _duckdb_match(COT_PATTERN, text)


def test_cot_pattern_rate_on_real_user_prompts() -> None:
    """Real users ask for steps now and then (arena-hard 3.2%, MT-bench 2.5% when this was written;
    Vicuna's Fermi questions ask for step-by-step reasoning outright), and never inside a GSM8K question."""
    rates = {}
    for name, field in [
        ("arena_hard_v0.1.jsonl", "prompt"),
        ("mt_bench.jsonl", "turns"),
        ("gsm8k_test.jsonl", "question"),
    ]:
        p = SHARED / name
        if not p.exists():
            pytest.skip("shared corpora not present")
        texts: list[str] = []
        for line in p.read_bytes().splitlines():
            v = orjson.loads(line)[field]
            texts += v if isinstance(v, list) else [v]
        con = duckdb.connect()
        con.execute("CREATE TABLE t AS SELECT unnest(?) AS x", [texts])
        row = con.execute(
            "SELECT avg(CASE WHEN regexp_matches(lower(x), ?) THEN 1 ELSE 0 END) FROM t", [COT_PATTERN]
        ).fetchone()
        assert row is not None
        rates[name] = row[0]
    assert rates["arena_hard_v0.1.jsonl"] < 0.05 and rates["mt_bench.jsonl"] < 0.05, rates
    assert rates["gsm8k_test.jsonl"] == 0.0, rates


def test_every_signal_declares_its_sql() -> None:
    for name, cls in signals().items():
        assert cls.name == name
        assert isinstance(cls.row_columns, dict) and isinstance(cls.account_columns, dict)


# Capability prompts whose words alone do not say so: notation (LaTeX, a signature with a docstring, C),
# a data structure to work on, a logic form, or another language. Written after other benchmarks' formats
# (competition maths, HumanEval, MBPP, LeetCode, BBH), none of which the simulator draws from.
CAPABILITY_NOTATION = [
    r"If $\frac{a}{b} = \frac{3}{4}$ and $a + b = 21$, what is $a$?",
    r"In triangle $ABC$, $AB = 13$, $BC = 14$ and $CA = 15$. Find the area of the triangle.",
    r"Simplify $\sqrt{50} + \sqrt{18}$.",
    r"Evaluate $\lim_{x \to 0} \frac{\sin 3x}{x}$.",
    r"Let $f(x) = x^3 - 3x + 1$. Find the number of distinct real roots of $f(f(x)) = 0$.",
    "Find the remainder when 2^100 is divided by 7.",
    "from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
    '    """ Check if in given list of numbers, are any two numbers closer to each other than threshold."""\n',
    "Given the head of a singly linked list, reverse the list, and return the reversed list.",
    "Given a binary tree, determine if it is height-balanced.",
    "You are given an m x n grid where each cell can be empty or fresh. Return the minimum number of minutes.",
    '#include <stdio.h>\nint main() { int x; scanf("%d", &x); printf("%d", x*2); }\nWhy is the output wrong?',
    "Explain the time complexity of quicksort in the worst case.",
    "If all bloops are razzies and all razzies are lazzies, are all bloops definitely lazzies?",
    "Sort the following words alphabetically: List: syndrome therefrom",
    "Resuelve la ecuación 3x + 5 = 20.",
    "Berechne die Fläche eines Kreises mit dem Radius 5 cm.",
    "计算 12 乘以 15 等于多少？",
    "二次方程式 x^2 - 5x + 6 = 0 を解いてください。",
    "Écris une fonction Python qui inverse une chaîne.",
    # word problems asking "how many" in other languages
    "小明有5个苹果，他又买了3个，现在一共有几个苹果？",
    "У Маши было 7 яблок, она отдала 2. Сколько яблок у неё осталось?",
    "María tiene 12 caramelos y regala 5. ¿Cuántos caramelos le quedan?",
    "Paul a 3 sacs de 4 billes. Combien de billes a-t-il ?",
]
NOT_CAPABILITY = [
    "What are some good places to visit in Lisbon in the spring?",
    "Write a short poem about the sea at night.",
    "What's a good restaurant in the area near the station?",
    "How did people react to the news of the moon landing?",
    "My friend is a liar. How do I talk to her about it?",
    "Any pointers for keeping my team in the loop during a reorganisation?",
    "We are throwing a birthday bash on Saturday: ideas for games?",
    "You are given a list of a product's features; write its description.",
    "Summarize the plot of Pride and Prejudice.",
    "What is the volume knob on an amplifier for?",
    "Wie geht es dir heute?",
    "这家餐厅几乎每天都很忙。",
]


def _topic(text: str) -> str:
    from distillguard.detect.signals.coverage import TOPICS

    return next((k for k, pat in TOPICS.items() if _duckdb_match(pat, text[:1500])), "other")


@pytest.mark.parametrize("text", CAPABILITY_NOTATION)
def test_capabilities_are_read_from_notation_too(text: str) -> None:
    from distillguard.detect.signals.coverage import CAPABILITIES

    assert _topic(text) in CAPABILITIES


@pytest.mark.parametrize("text", NOT_CAPABILITY)
def test_everyday_prompts_are_not_capabilities(text: str) -> None:
    from distillguard.detect.signals.coverage import CAPABILITIES

    assert _topic(text) not in CAPABILITIES
