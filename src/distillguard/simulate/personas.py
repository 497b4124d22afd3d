"""Benign customers: the traffic a distillation detector must leave alone, hard negatives included.

Each persona is a `Behaviour` built from the real prompt corpora: chat users with follow-ups that quote
the previous answer, developers in bursts, templated back-office batch jobs, tutoring apps serving many
end users, evaluation harnesses replaying whole benchmarks (with LLM-as-judge prompts), and power users.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import numpy as np

from distillguard.exchange import tool_set_key
from distillguard.simulate.base import (
    BASE_MODELS,
    HOUR,
    MODELS,
    PROFILE_PERSON,
    PROFILE_STUDENT,
    PROFILE_WORK,
    RELEASE_MODEL,
    Account,
    Behaviour,
    World,
    day_count,
    hour_starts,
    human_sessions,
    local_weekday,
    loguniform,
    think_gaps,
    weekday_factor,
)
from distillguard.simulate.corpora import Item

REASONING = frozenset(m for m, spec in MODELS.items() if spec.reasoning)
CHAT_SYSTEMS = (
    "You are a helpful assistant.",
    "You are a helpful assistant. Answer concisely.",
    "You are ChatBuddy, a friendly assistant. Keep answers clear and practical.",
    "Always answer in a friendly tone and use bullet points where helpful.",
    "You are a knowledgeable assistant. If you are not sure about something, say so.",
)
DEV_SYSTEMS = (
    "You are an expert software engineer. Answer with working code and a short explanation.",
    "You are a coding assistant integrated into our internal developer portal. Be concise.",
    "You are a senior Python developer. Prefer the standard library and include type hints.",
    "You are a helpful assistant.",
    "Reply with code only unless asked otherwise.",
)
FOLLOWUPS = (
    "Can you make that shorter?",
    "Can you make that shorter and more direct?",
    "Thanks! Can you give me a concrete example?",
    'What do you mean by "{hook}"?',
    "Can you expand on the part about {hook}?",
    'I\'m not sure I agree with "{hook}". Why do you say that?',
    "Could you put that in a table?",
    "Rewrite it in a more formal tone, please.",
    "ok, and how does that apply to {topic}?",
    "Can you explain {hook} like I'm five?",
    "That's helpful. What would you do first?",
    "Can you turn this into a checklist?",
    "Wait, I think point 2 is wrong. Can you double-check?",
    "Great, now summarise it in 3 bullet points.",
    "hmm, what about {hook}? is that really true",
    "Thanks. Could you add sources or further reading?",
)
DEV_FOLLOWUPS = (
    "That gives me an error: {err}",
    "I get this when I run it:\n\n{err}",
    "Can you add type hints and docstrings?",
    "Now write unit tests for this.",
    "Can you convert this to TypeScript?",
    "It works, but it's slow on large inputs. How can I speed up {hook}?",
    "Why did you use {hook} here?",
    "Can you refactor it to avoid the global state?",
    "I'm stuck on Python 3.8, so I can't use that syntax. Can you adapt it?",
    "Explain what this part does: {hook}",
    "ok that works. now make it handle empty input",
)
ERRORS = (
    "TypeError: 'NoneType' object is not subscriptable",
    "KeyError: 'value'",
    "ModuleNotFoundError: No module named 'pandas'",
    "SyntaxError: invalid syntax (line 12)",
    "Uncaught TypeError: Cannot read properties of undefined (reading 'map')",
    "error[E0382]: borrow of moved value: `v`",
    'ERROR:  column "total" does not exist',
    "AttributeError: 'list' object has no attribute 'items'",
    "RecursionError: maximum recursion depth exceeded",
)
STUDENT_FOLLOWUPS = (
    "I don't get step {k}",
    "i dont get step {k}, can you explain it again?",
    "Why do we do step {k} like that?",
    "can you explain it another way?",
    "so the answer is {final}?",
    "wait how did you get {num}?",
    "what does '{hook}' mean",
    "can u give me a similar problem to practice",
    "ok thanks!! but why can't we just add everything together?",
    "I got a different answer. Is {wrong} wrong?",
)
TUTOR_SYSTEMS = (
    "You are a friendly maths tutor for students aged 10 to 14. Explain every solution step by step, "
    "using simple language, and end by checking the student's understanding.",
    "You are MathPal, a patient tutor. Break each problem into small numbered steps and explain the "
    "reasoning behind each step. Never just give the answer.",
    "You help school students with word problems. Explain step by step, show the calculation for every "
    "step, and encourage the student.",
    "Act as a supportive homework helper. Walk through the problem step by step; if the student is "
    "confused, re-explain the step they ask about with a simpler example.",
)
CI_SYSTEM = "You are a test fixture. Answer deterministically."


def _pick(rnd: random.Random, seq: tuple[Any, ...] | list[Any]) -> Any:
    return seq[int(rnd.random() * len(seq))]


def _words(rnd: random.Random, median: float, lo: int = 40, hi: int = 1500) -> int:
    return max(lo, min(hi, int(median * rnd.lognormvariate(0.0, 0.5))))


def _usual_models(rng: np.random.Generator, k: int | None = None) -> list[str]:
    k = int(rng.integers(1, 3)) if k is None else k
    w = np.array([0.45, 0.45, 0.10])
    idx = rng.choice(len(BASE_MODELS), size=k, replace=False, p=w)
    return [BASE_MODELS[int(i)] for i in idx]


class ChatUser(Behaviour):
    """A person chatting through the API (their own script, a BYO-key front end): sessions by day,
    conversations of a few turns whose follow-ups quote the previous answer."""

    name: ClassVar[str] = "chat"
    volume: ClassVar[tuple[float, float]] = (5.0, 80.0)

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        self.mean = loguniform(rng, *self.volume)
        self.weekend = float(rng.uniform(0.5, 1.2))
        self.active_p = float(rng.uniform(0.55, 0.95))
        self.more_turns = float(rng.uniform(0.35, 0.65))  # chance a conversation continues
        self.think = float(rng.uniform(40, 150))
        self.per_session = float(rng.uniform(4, 14))
        self.models = _usual_models(rng)
        self.system = CHAT_SYSTEMS[int(rng.integers(len(CHAT_SYSTEMS)))] if rng.random() < 0.45 else None
        self.temperature = None if rng.random() < 0.5 else float(rng.choice([0.2, 0.5, 0.7, 0.8, 1.0]))
        self.max_tokens = None if rng.random() < 0.5 else int(rng.choice([512, 1024, 2048, 4096]))
        self.top_p = float(rng.choice([0.9, 0.95, 1.0])) if rng.random() < 0.1 else None
        self.effort = str(rng.choice(["low", "medium", "high"])) if rng.random() < 0.4 else None
        self.src = np.cumsum(rng.dirichlet([5, 2, 2, 1]))  # arena, vicuna, mt_bench, app tasks
        self.answer_len = float(rng.uniform(180, 420))

    # -- planning ----------------------------------------------------------------------------------------
    def plan(
        self, world: World, acct: Account, step: int, day0: float, rng: np.random.Generator
    ) -> list[tuple[float, Any]]:
        if rng.random() > self.active_p:
            return []
        n = day_count(world, rng, self.mean * weekday_factor(local_weekday(world, step), self.weekend))
        return self.conversations(rng, step, day0, n, PROFILE_PERSON)

    def conversations(
        self, rng: np.random.Generator, step: int, day0: float, n: int, profile: np.ndarray
    ) -> list[tuple[float, Any]]:
        out: list[tuple[float, Any]] = []
        cid = 0
        for times in human_sessions(rng, day0, n, profile, self.per_session, self.think):
            i = 0
            while i < len(times):
                turns = 1
                while rng.random() < self.more_turns and turns < 8:
                    turns += 1
                turns = min(turns, len(times) - i)
                for k in range(turns):
                    out.append((float(times[i + k]), ("c", (step, cid), k, turns)))
                i += turns
                cid += 1
        return out

    # -- rendering ---------------------------------------------------------------------------------------
    def first_prompt(self, world: World, rnd: random.Random) -> tuple[Item, str | None]:
        c = world.corpora
        u = rnd.random()
        if u < self.src[0]:
            return _pick(rnd, c.arena), None
        if u < self.src[1]:
            return _pick(rnd, c.vicuna), None
        if u < self.src[2]:
            it = _pick(rnd, c.mt_bench)
            return it, it.extra[0] if it.extra else None
        it = _pick(rnd, c.user_oriented)
        inp = it.extra[0] if it.extra and it.extra[0] else ""
        return Item(f"{it.text}\n\n{inp}".strip(), it.topic, it.group, it.answer), None

    def answer(
        self, world: World, rnd: random.Random, item: Item, prompt: str, words: int
    ) -> tuple[str, str]:
        b = world.bank
        if item.group in ("math", "reasoning"):
            return b.steps_answer(rnd, item.topic, 3 + int(rnd.random() * 5)), item.topic
        if item.code:
            return b.code(rnd, prompt, item.topic, words)
        return b.chat(rnd, item.topic, words)

    def followup(self, rnd: random.Random, conv: dict[str, Any]) -> str:
        mt2 = conv.get("mt2")
        if mt2 is not None:
            conv["mt2"] = None
            return str(mt2)
        return _pick(rnd, FOLLOWUPS).format(hook=conv["hook"], topic=conv["item"].topic)

    def render(
        self, world: World, acct: Account, payload: Any, ts: float, rnd: random.Random
    ) -> dict[str, Any]:
        return self.render_turn(world, acct, payload, ts, rnd)

    def render_turn(
        self,
        world: World,
        acct: Account,
        payload: Any,
        ts: float,
        rnd: random.Random,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        _, cid, k, nt = payload
        convs: dict[Any, dict[str, Any]] = acct.state.setdefault("conv", {})
        conv = convs.get(cid)
        if conv is None:
            item, mt2 = self.first_prompt(world, rnd)
            usual = self.models[0] if len(self.models) == 1 else _pick(rnd, self.models)
            conv = {"item": item, "mt2": mt2, "hook": item.topic, "model": acct.model(world, ts, rnd, usual)}
            convs[cid] = conv
            msgs: list[dict[str, Any]] = [{"role": "user", "content": item.text}]
            words = _words(rnd, self.answer_len)
        elif conv.get("retry") is not None:
            msgs = conv.pop("retry")
            words = _words(rnd, self.answer_len * 0.8)
        else:
            msgs = [*conv["hist"], {"role": "user", "content": self.followup(rnd, conv)}]
            words = _words(rnd, self.answer_len * 0.7)
        text, hook = self.answer(world, rnd, conv["item"], msgs[-1]["content"], words)
        req = {
            "model": conv["model"],
            "system_prompt": self.system,
            "messages": msgs,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "response_text": text,
        }
        if conv["model"] in REASONING and self.effort:
            req["reasoning_effort"] = self.effort
        if extra:
            req.update(extra)
        rec = world.finish(acct, ts, req, rnd)
        if "error" in rec:
            conv["retry"] = msgs  # the person presses "retry": the same request again
        else:
            conv["hist"] = [*msgs, {"role": "assistant", "content": rec["response_text"]}]
            conv["hook"] = hook
        if k >= nt - 1:
            convs.pop(cid, None)
        return rec


class PowerUser(ChatUser):
    """A heavy but ordinary chat user: hundreds of requests a day in long sessions, several models."""

    name: ClassVar[str] = "power_user"
    volume: ClassVar[tuple[float, float]] = (150.0, 600.0)

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        super().__init__(world, rng)
        self.active_p = float(rng.uniform(0.85, 1.0))
        self.per_session = float(rng.uniform(15, 40))
        self.think = float(rng.uniform(25, 70))
        self.models = _usual_models(rng, 2)


class Developer(ChatUser):
    """A developer: coding prompts in bursts during working hours, tools sometimes, several models,
    iterating on errors; some run a nightly CI job that sends the same fixture prompts every day."""

    name: ClassVar[str] = "developer"
    volume: ClassVar[tuple[float, float]] = (20.0, 400.0)

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        super().__init__(world, rng)
        self.weekend = float(rng.uniform(0.05, 0.4))
        self.active_p = float(rng.uniform(0.7, 0.97))
        self.per_session = float(rng.uniform(6, 25))
        self.think = float(rng.uniform(12, 60))
        self.more_turns = float(rng.uniform(0.4, 0.65))
        self.models = _usual_models(rng, int(rng.integers(1, 4)))
        self.system = DEV_SYSTEMS[int(rng.integers(len(DEV_SYSTEMS)))] if rng.random() < 0.5 else None
        self.temp_range = sorted(rng.uniform(0.0, 1.0, 2).tolist())
        self.tools = int(rng.integers(1, 13)) if rng.random() < 0.3 else 0
        self.endpoint = "/v1/responses" if rng.random() < 0.15 else None
        self.max_tokens = None if rng.random() < 0.4 else int(rng.choice([1024, 2048, 4096, 8000]))
        code = world.corpora.arena_code
        if rng.random() < 0.25:
            k = int(rng.integers(5, 31))
            self.ci = [code[int(i)].text for i in rng.choice(len(code), size=k, replace=False)]
            self.ci_hour = float(rng.uniform(1, 5))
        else:
            self.ci = []

    def plan(
        self, world: World, acct: Account, step: int, day0: float, rng: np.random.Generator
    ) -> list[tuple[float, Any]]:
        wd = local_weekday(world, step)
        out: list[tuple[float, Any]] = []
        if rng.random() <= self.active_p:
            n = day_count(world, rng, self.mean * weekday_factor(wd, self.weekend), 0.5)
            out = self.conversations(rng, step, day0, n, PROFILE_WORK)
        if self.ci and wd < 5:
            t = day0 + self.ci_hour * HOUR + rng.random() * 300
            for i in range(len(self.ci)):
                out.append((t, ("ci", i)))
                t += float(rng.uniform(0.5, 4.0))
        return out

    def first_prompt(self, world: World, rnd: random.Random) -> tuple[Item, str | None]:
        c = world.corpora
        u = rnd.random()
        if u < 0.72:
            return _pick(rnd, c.arena_code), None
        if u < 0.9:
            return _pick(rnd, c.arena_general), None
        return _pick(rnd, c.user_oriented), None

    def answer(
        self, world: World, rnd: random.Random, item: Item, prompt: str, words: int
    ) -> tuple[str, str]:
        if item.code:
            return world.bank.code(rnd, prompt, item.topic, words)
        return world.bank.chat(rnd, item.topic, words)

    def followup(self, rnd: random.Random, conv: dict[str, Any]) -> str:
        return _pick(rnd, DEV_FOLLOWUPS).format(hook=conv["hook"], err=_pick(rnd, ERRORS))

    def render(
        self, world: World, acct: Account, payload: Any, ts: float, rnd: random.Random
    ) -> dict[str, Any]:
        if payload[0] == "ci":
            prompt = self.ci[payload[1]]
            req = {
                "model": self.models[0],
                "system_prompt": CI_SYSTEM,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0.0,
                "max_tokens": 512,
                "response_text": world.bank.code(rnd, prompt, "fixture", 120)[0],
            }
            return world.finish(acct, ts, req, rnd)
        # A developer's temperature varies with what they are trying; tools when their agent is on.
        lo, hi = self.temp_range
        extra: dict[str, Any] = {"temperature": round(lo + (hi - lo) * rnd.random(), 2)}
        if self.tools and rnd.random() < 0.6:
            # the agent's own tools, named the same each time (no draw: the stream of choices is unchanged)
            extra["tool_set"] = tool_set_key([{"name": f"tool_{i}"} for i in range(self.tools)])
            extra["n_tools"] = self.tools
        if self.endpoint:
            extra["endpoint"] = self.endpoint
        return self.render_turn(world, acct, payload, ts, rnd, extra)


# -- back-office / RAG batch jobs ----------------------------------------------------------------------------
# A job's system prompt fits its task (a few per kind, the company name varies).
OFFICE_SYSTEMS: dict[str, tuple[str, ...]] = {
    "ticket": (
        "You are a customer-support triage assistant for {co}. Reply with JSON only.",
        "You are a helpful assistant for the {co} operations team. Be brief.",
    ),
    "review": (
        "You classify short texts. Answer with a single label.",
        "You are a sentiment classifier for {co} product reviews.",
    ),
    "invoice": (
        "You extract structured data from business documents. Output valid JSON and nothing else.",
        "You are {co}'s accounts-payable assistant. Return only JSON.",
    ),
    "rag": (
        "You answer questions for {co} customers using only the provided context.",
        "You are the {co} help-centre assistant. Be accurate and concise; never invent policies.",
    ),
    "app": (
        "You are an assistant that rewrites and summarises internal documents for {co}.",
        "You are a helpful assistant.",
    ),
}
_COMPANIES = ("Northwind Retail", "Globex", "Initech", "Acme Supplies", "Umbrella Health", "Stark Logistics")
OFFICE_TEMPLATES = {
    "ticket": (
        "Summarize the following support ticket in one sentence and assign a category and priority. "
        "Reply as JSON with keys category, priority, summary.\n\n{x}",
        'Triage this ticket. Output JSON {{"category": ..., "priority": ..., "summary": ...}}.\n\nTicket:\n{x}',
        "Summarize the following support ticket: {x}",
    ),
    "review": (
        "Classify the sentiment of this product review as positive, negative or neutral. Answer with one word."
        "\n\nReview: {x}",
        "Sentiment (positive/negative/neutral) of the review below?\n\n{x}",
    ),
    "invoice": (
        "Extract the invoice number, date, total and currency from the email below. Return JSON only.\n\n{x}",
        "From this email, pull out invoice_number, date, total, currency as JSON:\n\n{x}",
    ),
    "rag": (
        "Answer the question using only the context below. If the answer is not in the context, say "
        '"I don\'t know".\n\nContext:\n{x}\n\nQuestion: {q}',
        "Context:\n{x}\n\nUsing the context above, answer briefly: {q}",
    ),
}
RAG_QUESTIONS = (
    "How long is the warranty?",
    "Can I get a refund?",
    "What is the API rate limit?",
    "When is support open?",
    "Where is my data stored?",
    "Is shipping free?",
    "How do I cancel my plan?",
    "Do you support SSO?",
    "How many rows can I export?",
    "When are invoices sent?",
    "What happens to inactive accounts?",
)
_OUT_KIND = {"ticket": "triage", "review": "label", "invoice": "json", "rag": "sentence", "app": "reference"}


class BackOffice(Behaviour):
    """Templated back-office and RAG jobs: a few fixed system prompts and templates, the variable slot filled
    with varied content, temperature 0, short structured outputs, run as nightly or hourly batches or
    continuously in business hours. High volume and machine-regular timing, yet benign."""

    name: ClassVar[str] = "back_office"

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        self.mean = loguniform(rng, 300, 5000)
        self.weekend = float(rng.uniform(0.2, 1.0))
        self.jobs: list[dict[str, Any]] = []
        k = int(rng.integers(1, 4))
        share = rng.dirichlet(np.ones(k))
        uo = world.corpora.user_oriented
        co = _COMPANIES[int(rng.integers(len(_COMPANIES)))]
        for j in range(k):
            kind = str(
                rng.choice(["ticket", "review", "invoice", "rag", "app"], p=[0.25, 0.2, 0.15, 0.2, 0.2])
            )
            if kind == "app":
                task = uo[int(rng.integers(len(uo)))]
                template = task.text + "\n\n{x}"
                ref = task.answer
            else:
                ts_ = OFFICE_TEMPLATES[kind]
                template = ts_[int(rng.integers(len(ts_)))]
                ref = ""
            sched = str(rng.choice(["nightly", "hourly", "continuous"], p=[0.4, 0.25, 0.35]))
            self.jobs.append(
                {
                    "kind": kind,
                    "template": template,
                    "ref": ref,
                    "system": str(rng.choice(OFFICE_SYSTEMS[kind])).format(co=co)
                    if rng.random() < 0.85
                    else None,
                    "share": float(share[j]),
                    "sched": sched,
                    "hour": float(rng.uniform(0, 5)) if sched == "nightly" else float(rng.uniform(6, 9)),
                    "gap": float(rng.uniform(0.15, 2.5)),  # seconds between requests of a batch
                    "temperature": 0.0 if rng.random() < 0.85 else float(rng.choice([0.1, 0.2, 0.3])),
                    "max_tokens": int(rng.choice([64, 128, 256, 300, 512])),
                    "model": "acme-mini-2" if rng.random() < 0.75 else "acme-large-2",
                    "users": int(rng.integers(50, 2000)) if kind == "rag" and rng.random() < 0.5 else 0,
                    # Classifiers often read the label's probability as a confidence score.
                    "logprobs": int(rng.integers(1, 6)) if kind == "review" and rng.random() < 0.35 else 0,
                }
            )

    def plan(
        self, world: World, acct: Account, step: int, day0: float, rng: np.random.Generator
    ) -> list[tuple[float, Any]]:
        n_day = day_count(
            world, rng, self.mean * weekday_factor(local_weekday(world, step), self.weekend), 0.25
        )
        out: list[tuple[float, Any]] = []
        for j, job in enumerate(self.jobs):
            n = round(n_day * job["share"])
            if n <= 0:
                continue
            if job["sched"] == "nightly":
                t0 = day0 + job["hour"] * HOUR + rng.random() * 120
                times = t0 + np.cumsum(job["gap"] * rng.exponential(1.0, n) * 0.5 + job["gap"] * 0.5)
            elif job["sched"] == "hourly":
                hours = np.arange(int(job["hour"]), 20)
                per = rng.multinomial(n, np.full(len(hours), 1.0 / len(hours)))
                parts = [
                    day0 + h * HOUR + 30 + np.cumsum(job["gap"] * (0.5 + rng.random(int(c))))
                    for h, c in zip(hours, per, strict=True)
                    if c
                ]
                times = np.concatenate(parts) if parts else np.empty(0)
            else:
                times = hour_starts(rng, day0, n, PROFILE_WORK)
            out.extend((float(t), ("j", j)) for t in times)
        return out

    def render(
        self, world: World, acct: Account, payload: Any, ts: float, rnd: random.Random
    ) -> dict[str, Any]:
        job = self.jobs[payload[1]]
        b = world.bank
        kind = job["kind"]
        if kind == "ticket":
            prompt = job["template"].format(x=_pick(rnd, b.tickets))
        elif kind == "review":
            prompt = job["template"].format(x=_pick(rnd, b.reviews))
        elif kind == "invoice":
            prompt = job["template"].format(x=_pick(rnd, b.emails))
        elif kind == "rag":
            prompt = job["template"].format(x=_pick(rnd, b.passages), q=_pick(rnd, RAG_QUESTIONS))
        else:
            prompt = job["template"].replace("{x}", _pick(rnd, b.inputs))
        out_kind = _OUT_KIND[kind]
        if out_kind == "sentence":
            text = _pick(rnd, b.passages).split(". ")[0] + "." if rnd.random() < 0.85 else "I don't know."
        else:
            text = b.short(rnd, out_kind, job["ref"][:400])
        req: dict[str, Any] = {
            "model": acct.model(world, ts, rnd, job["model"]),
            "system_prompt": job["system"],
            "messages": [{"role": "user", "content": prompt}],
            "temperature": job["temperature"],
            "max_tokens": job["max_tokens"],
            "response_text": text,
        }
        if job["logprobs"]:
            req["logprobs"] = True
            req["top_logprobs"] = job["logprobs"]
        if job["users"]:
            # The app passes its own (hashed) user ids; a stable per-account salt keeps them distinct.
            u = int(rnd.random() * job["users"])
            req["end_user"] = f"usr_{(u * 2654435761 + acct.idx * 40503) & 0xFFFFFFFF:08x}"
        return world.finish(acct, ts, req, rnd)


class Tutoring(Behaviour):
    """A tutoring app: one account, thousands of students (`end_user`), GSM8K-style word problems under a
    step-by-step system prompt, student follow-ups about a step with the history, school hours."""

    name: ClassVar[str] = "tutoring"

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        self.mean = loguniform(rng, 300, 3000)
        self.weekend = float(rng.uniform(0.4, 0.9))
        n_students = max(50, int(self.mean * rng.uniform(0.3, 1.5)))
        self.students = [f"stu_{int(x):08x}" for x in rng.integers(0, 2**32, n_students)]
        self.system = TUTOR_SYSTEMS[int(rng.integers(len(TUTOR_SYSTEMS)))]
        self.model = "acme-mini-2" if rng.random() < 0.8 else "acme-large-2"
        self.temperature = float(rng.choice([0.3, 0.5, 0.7]))
        self.max_tokens = int(rng.choice([800, 1000, 1500]))
        self.more = float(rng.uniform(0.3, 0.55))

    def plan(
        self, world: World, acct: Account, step: int, day0: float, rng: np.random.Generator
    ) -> list[tuple[float, Any]]:
        n = day_count(world, rng, self.mean * weekday_factor(local_weekday(world, step), self.weekend), 0.25)
        n_conv = max(1, int(n * (1 - self.more)))
        starts = hour_starts(rng, day0, n_conv, PROFILE_STUDENT)
        students = rng.integers(0, len(self.students), n_conv).tolist()
        # Vectorised: thousands of conversations a day, each a question and a few follow-ups.
        turns = np.minimum(rng.geometric(1 - self.more, n_conv), 5)
        first = np.cumsum(turns) - turns
        gaps = think_gaps(rng, int(turns.sum()), 75.0)
        gaps[first] = 0.0
        cs = np.cumsum(gaps)
        times = (np.repeat(starts, turns) + cs - np.repeat(cs[first], turns)).tolist()
        out: list[tuple[float, Any]] = []
        j = 0
        for c, (nt, s) in enumerate(zip(turns.tolist(), students, strict=True)):
            cid = (step, c)
            for k in range(nt):
                out.append((times[j], ("t", cid, k, nt, s)))
                j += 1
        return out

    def render(
        self, world: World, acct: Account, payload: Any, ts: float, rnd: random.Random
    ) -> dict[str, Any]:
        _, cid, k, nt, s = payload
        b = world.bank
        convs: dict[Any, dict[str, Any]] = acct.state.setdefault("conv", {})
        conv = convs.get(cid)
        if conv is None:
            item = _pick(rnd, world.corpora.gsm8k)
            conv = {"item": item, "model": acct.model(world, ts, rnd, self.model)}
            convs[cid] = conv
            msgs: list[dict[str, Any]] = [{"role": "user", "content": item.text}]
            text = b.gsm8k(rnd, item, 1)
        elif conv.get("retry") is not None:
            msgs = conv.pop("retry")
            text = b.gsm8k(rnd, conv["item"], 1)
        else:
            item = conv["item"]
            lines, nums = b.solution_lines(item)
            step = int(rnd.random() * len(lines))
            q = _pick(rnd, STUDENT_FOLLOWUPS).format(
                k=step + 1,
                final=item.final,
                num=nums[step],
                hook=" ".join(lines[step].split()[:4]),
                wrong=str(int(rnd.random() * 100)),
            )
            msgs = [*conv["hist"], {"role": "user", "content": q}]
            text = b.explain_step(rnd, item, step)
        req = {
            "model": conv["model"],
            "system_prompt": self.system,
            "messages": msgs,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "end_user": self.students[s],
            "response_text": text,
        }
        rec = world.finish(acct, ts, req, rnd)
        if "error" in rec:
            conv["retry"] = msgs
        else:
            conv["hist"] = [*msgs, {"role": "assistant", "content": rec["response_text"]}]
        if k >= nt - 1:
            convs.pop(cid, None)
        return rec


# -- evaluation harness ----------------------------------------------------------------------------------------
JUDGE_SINGLE = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an "
    "AI assistant to the user question displayed below. Your evaluation should consider factors such as the "
    "helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. Begin your "
    "evaluation by providing a short explanation. Be as objective as possible. After providing your "
    "explanation, you must rate the response on a scale of 1 to 10 by strictly following this format: "
    '"[[rating]]", for example: "Rating: [[5]]".\n\n[Question]\n{q}\n\n[The Start of Assistant\'s Answer]\n'
    "{a}\n[The End of Assistant's Answer]"
)
JUDGE_PAIR = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user prompt displayed below. You will be given assistant A's answer and assistant B's answer. "
    "Your job is to evaluate which assistant's answer is better.\n\nBegin your evaluation by generating your "
    "own answer to the prompt. You must provide your answers before judging any answers.\n\nWhen evaluating "
    "the assistants' answers, compare both assistants' answers with your answer. You must identify and "
    "correct any mistakes or inaccurate information.\n\nAfter providing your explanation, you must output "
    "only one of the following choices as your final verdict with a label:\n\n1. Assistant A is "
    "significantly better: [[A>>B]]\n2. Assistant A is slightly better: [[A>B]]\n3. Tie, relatively the "
    "same: [[A=B]]\n4. Assistant B is slightly better: [[B>A]]\n5. Assistant B is significantly better: "
    '[[B>>A]]\n\nExample output: "My final verdict is tie: [[A=B]]".\n\n<|User Prompt|>\n{q}\n\n'
    "<|The Start of Assistant A's Answer|>\n{b}\n<|The End of Assistant A's Answer|>\n\n"
    "<|The Start of Assistant B's Answer|>\n{a}\n<|The End of Assistant B's Answer|>"
)
GSM_FORMATS = (
    "Question: {q}\nLet's think step by step.",
    "Solve the following math problem step by step. The last line of your response should be of the form "
    '"ANSWER: $ANSWER" (without quotes) where $ANSWER is the answer to the problem.\n\n{q}',
    "{q}",
)


class EvalHarness(Behaviour):
    """Benchmark runs (MT-bench, Vicuna-bench, Arena-hard, GSM8K) replayed whole at temperature 0 against one
    or several models, in a burst, then idle; half follow with LLM-as-judge prompts. A classic hard
    negative: a burst of curated, single-turn, high-coverage prompts that is not distillation."""

    name: ClassVar[str] = "eval_harness"

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        c = world.corpora
        benches = ["mt_bench", "vicuna", "arena", "gsm8k"]
        k = int(rng.integers(1, 4))
        self.benches = [str(b) for b in rng.choice(benches, size=k, replace=False, p=[0.35, 0.2, 0.3, 0.15])]
        self.models = _usual_models(rng, int(rng.integers(1, 4)))
        self.runs_per_day = float(rng.uniform(0.4, 2.5))
        self.weekend = float(rng.uniform(0.2, 1.0))
        self.shuffle = bool(rng.random() < 0.5)
        self.judge = bool(rng.random() < 0.5)
        self.gap = float(rng.uniform(0.05, 0.8))  # concurrency: seconds between requests in a burst
        self.max_tokens = int(rng.choice([1024, 2048, 4096]))
        self.nightly = float(rng.uniform(0, 5)) if rng.random() < 0.4 else None
        gsm_n = int(rng.choice([100, 250, 500, len(c.gsm8k)]))
        self._benches = {
            "mt_bench": c.mt_bench,
            "vicuna": c.vicuna,
            "arena": c.arena,
            "gsm8k": c.gsm8k[:gsm_n],
        }
        self.gsm_fmt = GSM_FORMATS[int(rng.integers(len(GSM_FORMATS)))]
        # Some harnesses add a newly released model to their runs the same day.
        self.new_model_delay = float(rng.uniform(2, 30)) * HOUR if rng.random() < 0.35 else None

    def _items(self, world: World, bench: str) -> tuple[Item, ...]:
        return self._benches[bench]

    def plan(
        self, world: World, acct: Account, step: int, day0: float, rng: np.random.Generator
    ) -> list[tuple[float, Any]]:
        wd = local_weekday(world, step)
        runs = int(rng.poisson(self.runs_per_day * weekday_factor(wd, self.weekend) * world.volume))
        out: list[tuple[float, Any]] = []
        starts = (
            [day0 + (self.nightly + 24 * r / max(1, runs)) * HOUR for r in range(runs)]
            if self.nightly is not None
            else list(hour_starts(rng, day0, runs, PROFILE_WORK))
        )
        for r, t0 in enumerate(starts):
            bench = self.benches[int(rng.integers(len(self.benches)))]
            models = list(self.models)
            if self.new_model_delay is not None and t0 >= world.release_ts + self.new_model_delay:
                models.append(RELEASE_MODEL)
            n = len(self._items(world, bench))
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            run = (step, r)
            t = float(t0)
            for m in models:
                gaps = self.gap * rng.exponential(1.0, n)
                for i, g in zip(order, gaps, strict=True):
                    t += float(g)
                    out.append((t, ("q", run, bench, int(i), m, 0)))
                    if bench == "mt_bench":
                        out.append((t + float(rng.uniform(8, 40)), ("q", run, bench, int(i), m, 1)))
            if self.judge and bench != "gsm8k":
                t += float(rng.uniform(60, 600))
                for m in models:
                    for i in order:
                        t += self.gap * float(rng.exponential(1.0))
                        out.append((t, ("j", run, bench, int(i), m)))
        return out

    def render(
        self, world: World, acct: Account, payload: Any, ts: float, rnd: random.Random
    ) -> dict[str, Any]:
        b = world.bank
        answers: dict[Any, str] = acct.state.setdefault("answers", {})
        if payload[0] == "j":
            _, run, bench, i, m = payload
            item = self._items(world, bench)[i]
            ans = answers.pop((run, i, m), None) or b.chat(rnd, item.topic, 200)[0]
            if bench == "arena":
                prompt = JUDGE_PAIR.format(q=item.text, a=ans, b=b.chat(rnd, item.topic, 250)[0])
                text = (
                    b.chat(rnd, item.topic, 250)[0]
                    + "\n\nMy final verdict is "
                    + _pick(
                        rnd,
                        ("tie: [[A=B]]", "Assistant B is slightly better: [[B>A]]", "[[A>B]]", "[[B>>A]]"),
                    )
                )
            else:
                prompt = JUDGE_SINGLE.format(q=item.text, a=ans)
                text = b.judge(rnd, 0)
            req = {
                "model": "acme-large-2",
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0.0,
                "max_tokens": 2048,
                "response_text": text,
            }
            return world.finish(acct, ts, req, rnd)
        _, run, bench, i, m, turn = payload
        item = self._items(world, bench)[i]
        if bench == "gsm8k":
            msgs: list[dict[str, Any]] = [{"role": "user", "content": self.gsm_fmt.format(q=item.text)}]
            text = b.gsm8k(rnd, item, 0 if rnd.random() < 0.5 else 2)
        elif turn == 0:
            msgs = [{"role": "user", "content": item.text}]
            if item.group in ("math", "reasoning"):
                text = b.steps_answer(rnd, item.topic, 4 + int(rnd.random() * 4))
            elif item.code:
                text = b.code(rnd, item.text, item.topic, _words(rnd, 300))[0]
            else:
                text = b.chat(rnd, item.topic, _words(rnd, 320))[0]
        else:
            first = answers.get((run, i, m, "t1")) or b.chat(rnd, item.topic, 250)[0]
            msgs = [
                {"role": "user", "content": item.text},
                {"role": "assistant", "content": first},
                {"role": "user", "content": item.extra[0] if item.extra else "Please elaborate."},
            ]
            text = b.chat(rnd, item.topic, _words(rnd, 220))[0]
        req = {
            "model": m,
            "messages": msgs,
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
            "response_text": text,
        }
        if m in ("acme-reason-1", RELEASE_MODEL):
            req["reasoning_effort"] = "medium"
        rec = world.finish(acct, ts, req, rnd)
        if turn == 1:
            answers.pop((run, i, m, "t1"), None)
        elif "error" not in rec:
            # Kept until the second turn (MT-bench) and the judge prompt quote it.
            if bench == "mt_bench":
                answers[(run, i, m, "t1")] = rec["response_text"]
            if self.judge and bench != "gsm8k":
                answers[(run, i, m)] = rec["response_text"]
        return rec


PERSONAS: dict[str, type[Behaviour]] = {
    "chat": ChatUser,
    "developer": Developer,
    "back_office": BackOffice,
    "tutoring": Tutoring,
    "eval_harness": EvalHarness,
    "power_user": PowerUser,
}
# Default shares of the benign population (normalised by the population builder).
PERSONA_WEIGHTS: dict[str, float] = {
    "chat": 0.46,
    "developer": 0.26,
    "back_office": 0.09,
    "tutoring": 0.05,
    "eval_harness": 0.08,
    "power_user": 0.06,
}
