"""Held-out benign personas: known by name, never in the default population.

The false-positive bars are to hold on benign traffic the detector was not tuned on, just as the
detection bars hold on held-out attack strategies (`simulate.held_out`). These four customers are left
out of `simulate`'s default population, and so out of every evaluation the detector was tuned against;
name them with `--add-personas` to see what the detector makes of workloads it has not seen:

  coding_agent   a coding-agent product: each end user's task is a loop of tool calls (read a file, run
                 the tests, apply a patch), every step sending the task again with the calls and results
                 so far, the product's own fixed tool set, a large output budget, users round the clock
  code_review    a pull-request review bot in CI: one template around each change's diff, a long review
                 back, a fixed budget, the working hours of an organisation spread over time zones
  translation    a localisation job: documents and app strings translated with one template into one or
                 two languages, an answer about as long as its document, run as batches
  qa_grading     a support team grading its own chatbot's transcripts with a rubric: the graded replies
                 come from the team's product, not from this API key, and the grades are short JSON

They are written to be what such customers send, not to pass: whatever the detector makes of them is
measured by `distillguard eval` like any other persona (the label's `strategy` is the persona's name).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import numpy as np
import orjson

from distillguard.exchange import tool_set_key
from distillguard.simulate.base import (
    PROFILE_FLAT,
    PROFILE_WORK,
    Account,
    Behaviour,
    World,
    day_count,
    hour_starts,
    local_weekday,
    loguniform,
    think_gaps,
    weekday_factor,
)
from distillguard.simulate.personas import _pick

AGENT_TOOLS = (
    "read_file",
    "write_file",
    "list_directory",
    "search_code",
    "apply_patch",
    "run_tests",
    "run_shell",
    "git_diff",
    "open_url",
    "ask_user",
    "create_file",
    "lint",
)
AGENT_SYSTEMS = (
    "You are an autonomous software engineering agent working in the user's repository. Use the tools to "
    "inspect the code, make the smallest change that solves the task, and run the tests before you finish.",
    "You are a coding assistant with access to the user's workspace. Read before you edit, explain each "
    "change briefly, and never run destructive commands without asking.",
)
REVIEW_TEMPLATES = (
    "You are a senior engineer reviewing a pull request. Point out bugs, security problems and unclear "
    "code, and suggest concrete fixes. Be specific and refer to line numbers.\n\nTitle: {title}\n\n"
    "```diff\n{diff}\n```",
    "Review the following change. List blocking issues first, then nits.\n\nPR: {title}\n\n{diff}",
)
TRANSLATE_TEMPLATES = (
    "Translate the following text into {lang}. Keep the formatting, placeholders and tone; do not add "
    "anything.\n\n{x}",
    "You are a professional translator. Translate into {lang}:\n\n{x}",
    'Localise this UI copy for {lang} users. Return only the translation.\n\n"""{x}"""',
)
LANGUAGES = ("French", "German", "Japanese", "Spanish", "Brazilian Portuguese", "Korean", "Italian")
QA_RUBRIC = (
    "You are auditing a customer-support chatbot. Rate the reply below from 1 to 5 for correctness, "
    "helpfulness and tone, and give a one-sentence reason. Return JSON "
    '{{"score": <int>, "reason": <string>}}.\n\nCustomer:\n{q}\n\nChatbot reply:\n{a}'
)


def _end_users(rng: np.random.Generator, mean: float, prefix: str) -> list[str]:
    return [
        f"{prefix}_{int(x):08x}" for x in rng.integers(0, 2**32, max(20, int(mean * rng.uniform(0.2, 1.0))))
    ]


class CodingAgent(Behaviour):
    """A coding-agent product: many users' tasks, each a loop of tool calls over the product's own tools."""

    name: ClassVar[str] = "coding_agent"

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        self.mean = loguniform(rng, 300, 3000)  # requests a day
        self.weekend = float(rng.uniform(0.3, 0.8))
        self.steps = float(rng.uniform(4, 10))  # mean steps per task
        self.tools = [str(t) for t in rng.choice(AGENT_TOOLS, size=int(rng.integers(5, 11)), replace=False)]
        self.system = AGENT_SYSTEMS[int(rng.integers(len(AGENT_SYSTEMS)))]
        self.temperature = None if rng.random() < 0.4 else float(rng.choice([0.0, 0.2]))
        self.max_tokens = None if rng.random() < 0.2 else int(rng.choice([4096, 8192, 16384]))
        self.model = "acme-large-2" if rng.random() < 0.7 else "acme-mini-2"
        self.users = _end_users(rng, self.mean / self.steps, "dev")
        self.global_users = rng.random() < 0.6  # users in every time zone, or one region's working day

    def plan(
        self, world: World, acct: Account, step: int, day0: float, rng: np.random.Generator
    ) -> list[tuple[float, Any]]:
        n = day_count(world, rng, self.mean * weekday_factor(local_weekday(world, step), self.weekend), 0.25)
        tasks = max(1, round(n / self.steps))
        starts = hour_starts(rng, day0, tasks, PROFILE_FLAT if self.global_users else PROFILE_WORK)
        lengths = np.minimum(rng.geometric(1.0 / self.steps, tasks), 30)
        out: list[tuple[float, Any]] = []
        for k, (t0, m) in enumerate(zip(starts.tolist(), lengths.tolist(), strict=True)):
            # a tool runs, then the model is called again: seconds between the steps of a loop
            gaps = np.concatenate(([0.0], np.cumsum(think_gaps(rng, m - 1, 6.0, 0.7))))
            user = int(rng.integers(len(self.users)))
            out.extend((t0 + float(g), ("a", (step, k), i, m, user)) for i, g in enumerate(gaps.tolist()))
        return out

    def render(
        self, world: World, acct: Account, payload: Any, ts: float, rnd: random.Random
    ) -> dict[str, Any]:
        _, tid, i, m, user = payload
        loops: dict[Any, dict[str, Any]] = acct.state.setdefault("loops", {})
        loop = loops.get(tid)
        if loop is None:
            item = _pick(
                rnd, world.corpora.arena_code if rnd.random() < 0.85 else world.corpora.arena_general
            )
            loop = loops[tid] = {"item": item, "hist": []}
        item = loop["item"]
        last = i >= m - 1
        if last:
            text = world.bank.code(rnd, item.text, item.topic, 150 + int(rnd.random() * 300))[0]
        else:
            name = _pick(rnd, self.tools)
            args = {"path": f"src/{item.topic.split(' ')[0]}.py"} if "file" in name else {"query": item.topic}
            text = orjson.dumps({"tool": name, "arguments": args}).decode()
        req: dict[str, Any] = {
            "model": acct.model(world, ts, rnd, self.model),
            "system_prompt": self.system,
            "messages": [{"role": "user", "content": item.text}, *loop["hist"]],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "end_user": self.users[user],
            "tool_set": tool_set_key([{"name": t} for t in self.tools]),
            "n_tools": len(self.tools),
            "response_text": text,
        }
        rec = world.finish(acct, ts, req, rnd)
        if last:
            loops.pop(tid, None)
        elif "error" not in rec:
            call_id = f"call_{rnd.getrandbits(48):012x}"
            call = {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": orjson.dumps(args).decode()},
            }
            # what running the tool printed: a file's lines, test output, a search hit
            result = (
                _pick(rnd, world.bank.passages)
                if rnd.random() < 0.5
                else world.bank.code(rnd, item.text, item.topic, 60)[0]
            )
            loop["hist"] = [
                *loop["hist"],
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "content": result, "tool_call_id": call_id},
            ]
        return rec


class CodeReview(Behaviour):
    """A pull-request review bot: one template around each change's diff, a long review back."""

    name: ClassVar[str] = "code_review"

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        self.mean = loguniform(rng, 80, 1500)
        self.weekend = float(rng.uniform(0.05, 0.3))
        self.template = REVIEW_TEMPLATES[int(rng.integers(len(REVIEW_TEMPLATES)))]
        self.temperature = float(rng.choice([0.0, 0.2, 0.3]))
        self.max_tokens = int(rng.choice([2048, 4096, 4096, 8192]))
        self.model = "acme-large-2" if rng.random() < 0.8 else "acme-mini-2"
        # an organisation in one region, or offices in several (the working day of each)
        self.offsets = [0.0] if rng.random() < 0.5 else [0.0, float(rng.choice([5.5, 8.0, 9.0])), -8.0]

    def plan(
        self, world: World, acct: Account, step: int, day0: float, rng: np.random.Generator
    ) -> list[tuple[float, Any]]:
        n = day_count(world, rng, self.mean * weekday_factor(local_weekday(world, step), self.weekend), 0.3)
        per = rng.multinomial(n, np.full(len(self.offsets), 1.0 / len(self.offsets)))
        times = [
            hour_starts(rng, day0 - off * 3600.0, int(c), PROFILE_WORK)
            for off, c in zip(self.offsets, per, strict=True)
        ]
        return [(max(day0, float(t)), ("r",)) for t in np.concatenate(times).tolist()]

    def render(
        self, world: World, acct: Account, payload: Any, ts: float, rnd: random.Random
    ) -> dict[str, Any]:
        item = _pick(rnd, world.corpora.arena_code)
        code = world.bank.code(rnd, item.text, item.topic, 80)[0].split("```")
        lines = (code[1] if len(code) > 2 else item.text).splitlines()[1:] or [item.text[:80]]
        k = 1 + int(rnd.random() * len(lines))
        hunk = [("+" if rnd.random() < 0.7 else "-") + line for line in lines[:k]]
        path = f"src/{item.topic.split(' ')[0]}.py"
        diff = f"--- a/{path}\n+++ b/{path}\n@@ -{k},7 +{k},9 @@\n" + "\n".join(hunk)
        prompt = self.template.format(title=f"Fix {item.topic}", diff=diff)
        req = {
            "model": acct.model(world, ts, rnd, self.model),
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "response_text": world.bank.chat(rnd, item.topic, 120 + int(rnd.random() * 400))[0],
        }
        return world.finish(acct, ts, req, rnd)


class Translation(Behaviour):
    """A localisation job: documents translated with one template, an answer about as long as the input."""

    name: ClassVar[str] = "translation"

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        self.mean = loguniform(rng, 300, 4000)
        self.weekend = float(rng.uniform(0.2, 1.0))
        self.template = TRANSLATE_TEMPLATES[int(rng.integers(len(TRANSLATE_TEMPLATES)))]
        self.langs = [str(x) for x in rng.choice(LANGUAGES, size=int(rng.integers(1, 3)), replace=False)]
        self.temperature = float(rng.choice([0.0, 0.2, 0.3]))
        self.max_tokens = None if rng.random() < 0.3 else int(rng.choice([2048, 4096]))
        self.model = "acme-mini-2" if rng.random() < 0.6 else "acme-large-2"
        self.nightly = rng.random() < 0.5
        self.gap = float(rng.uniform(0.3, 3.0))

    def plan(
        self, world: World, acct: Account, step: int, day0: float, rng: np.random.Generator
    ) -> list[tuple[float, Any]]:
        n = day_count(world, rng, self.mean * weekday_factor(local_weekday(world, step), self.weekend), 0.3)
        if self.nightly:
            t0 = day0 + float(rng.uniform(0, 4)) * 3600.0
            times = (t0 + np.cumsum(self.gap * rng.exponential(1.0, n))).tolist()
        else:
            times = hour_starts(rng, day0, n, PROFILE_WORK).tolist()
        return [(float(t), ("t",)) for t in times]

    def render(
        self, world: World, acct: Account, payload: Any, ts: float, rnd: random.Random
    ) -> dict[str, Any]:
        b = world.bank
        u = rnd.random()
        doc = (
            _pick(rnd, b.passages)
            if u < 0.4
            else _pick(rnd, b.inputs)
            if u < 0.7
            else _pick(rnd, world.corpora.arena_general).text
        )
        words = len(doc.split())
        req = {
            "model": acct.model(world, ts, rnd, self.model),
            "messages": [
                {"role": "user", "content": self.template.format(lang=_pick(rnd, self.langs), x=doc)}
            ],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            # a translation is about as long as its source (the bank's text stands in for it)
            "response_text": " ".join(b.chat(rnd, "translation", max(60, words))[0].split()[: max(5, words)]),
        }
        return world.finish(acct, ts, req, rnd)


class QaGrading(Behaviour):
    """A support team grading its own chatbot's transcripts with a rubric: short JSON grades."""

    name: ClassVar[str] = "qa_grading"

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        self.mean = loguniform(rng, 150, 2000)
        self.weekend = float(rng.uniform(0.0, 0.5))
        self.max_tokens = int(rng.choice([256, 512, 1024]))
        self.model = "acme-large-2" if rng.random() < 0.6 else "acme-mini-2"
        self.gap = float(rng.uniform(0.5, 4.0))

    def plan(
        self, world: World, acct: Account, step: int, day0: float, rng: np.random.Generator
    ) -> list[tuple[float, Any]]:
        n = day_count(world, rng, self.mean * weekday_factor(local_weekday(world, step), self.weekend), 0.3)
        # the day's transcripts, graded in one run after the support shift
        t0 = day0 + float(rng.uniform(17, 21)) * 3600.0
        return [(float(t), ("g",)) for t in (t0 + np.cumsum(self.gap * rng.exponential(1.0, n))).tolist()]

    def render(
        self, world: World, acct: Account, payload: Any, ts: float, rnd: random.Random
    ) -> dict[str, Any]:
        b = world.bank
        question = _pick(rnd, b.tickets)
        reply = b.chat(rnd, "support", 60 + int(rnd.random() * 120))[0]
        grade = orjson.dumps(
            {"score": 1 + int(rnd.random() * 5), "reason": b.short(rnd, "sentence")}
        ).decode()
        req = {
            "model": acct.model(world, ts, rnd, self.model),
            "messages": [{"role": "user", "content": QA_RUBRIC.format(q=question, a=reply)}],
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
            "response_text": grade,
        }
        return world.finish(acct, ts, req, rnd)


HELD_OUT_PERSONAS: dict[str, type[Behaviour]] = {
    "coding_agent": CodingAgent,
    "code_review": CodeReview,
    "translation": Translation,
    "qa_grading": QaGrading,
}
# Each held-out persona's share of the benign population when added (the default personas' weights sum
# to 1): about 30 accounts each in 1,500.
HELD_OUT_PERSONA_WEIGHT = 0.025
# How each reaches the API: client libraries, rate-limit errors (all run from a cloud, as services).
HELD_OUT_UA: dict[str, dict[str, float]] = {
    "coding_agent": {"node": 0.5, "python": 0.3, "httpx": 0.2},
    "code_review": {"node": 0.4, "python": 0.4, "go": 0.2},
    "translation": {"python": 0.5, "httpx": 0.2, "node": 0.2, "litellm": 0.1},
    "qa_grading": {"python": 0.6, "httpx": 0.2, "langchain": 0.2},
}
HELD_OUT_P429: dict[str, float] = {
    "coding_agent": 0.006,
    "code_review": 0.004,
    "translation": 0.01,
    "qa_grading": 0.01,
}
