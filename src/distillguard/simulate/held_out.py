"""Held-out attack strategies: known by name, never in the default mix.

The detector's bars are to hold on attack strategies it was not tuned on. These three are left out of
`simulate`'s default population (and so out of every evaluation the detector was tuned against); name
them with `--strategies` or `--add-strategies` to see how the detector does on traffic it has not seen:

  agentic_tool_use    agent trajectories over synthetic tool sets: each request offers a different random
                      set of tools, and most continue a trajectory with the tool calls and (made-up)
                      results so far, so the task repeats as the last user message at every step
  persona_synthesis   Persona Hub (Chan et al. 2024): "Create a {kind} related to the following persona",
                      a different persona each time, then the created items answered
  paraphrase_harvest  benchmark and instruction questions in a person's words (no template, no request for
                      reasoning, varied temperature, no output budget) at a person's pace, a few hundred a
                      day from home addresses
  dialogue_harvest    UltraChat-style dialogue synthesis (Ding et al. 2023): a question, then follow-ups that
                      a second model (the "user simulator") writes from the answer it just got, the whole
                      history sent each time; many conversations at once, round the clock
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import numpy as np
import orjson

from distillguard.exchange import tool_set_key
from distillguard.simulate.attacks import (
    Harvest,
    HarvestStrategy,
    HumanPaced,
    Seat,
    _answer,
    _mix,
    _payment,
    _pick,
    _sizes,
    _subset,
    question,
)
from distillguard.simulate.base import Account, World
from distillguard.simulate.network import stable_profile, user_agents

# A synthetic tool library: a harvest of function-calling trajectories offers a random handful per request.
TOOL_NAMES = (
    "get_weather",
    "search_flights",
    "book_hotel",
    "convert_currency",
    "create_calendar_event",
    "send_email",
    "query_database",
    "get_stock_price",
    "translate_text",
    "run_python",
    "read_file",
    "write_file",
    "web_search",
    "get_directions",
    "order_food",
    "set_reminder",
    "lookup_contact",
    "create_invoice",
    "get_exchange_rate",
    "track_package",
    "play_music",
    "get_news",
    "calculate",
    "list_files",
    "resize_image",
    "schedule_meeting",
    "check_inventory",
    "refund_order",
    "get_user_profile",
    "update_ticket",
)
TOOL_TASKS = (
    "Find a flight from {c1} to {c2} next {d} and add it to my calendar.",
    "What's the weather in {c1} on {d}, and should I reschedule my meeting there?",
    "Convert {n} USD to the currency of {c2} and email the result to my accountant.",
    "Check whether order #{n} has shipped; if it is late, open a refund.",
    "Look up the {n} most recent tickets from {c1} customers and summarise the common issue.",
    "Book a hotel in {c2} for {n} nights from {d} near the conference centre.",
    "Search the news about {c1} from this week and draft a short briefing email.",
    "Read the file report_{n}.csv, compute the monthly totals and write them to totals.csv.",
    "Schedule a 30-minute meeting with the {c1} team on {d} and remind me an hour before.",
    "Get the stock price of the {n} largest companies in {c2} and calculate the average.",
)
CITIES = ("Lisbon", "Osaka", "Denver", "Nairobi", "Toronto", "Krakow", "Lima", "Hanoi", "Perth", "Oslo")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "weekend")


class ToolUseKit(Harvest):
    """Agent trajectories over synthetic tool sets: a harvest of function-calling behaviour."""

    name: ClassVar[str] = "agentic_tool_use"
    volume: ClassVar[tuple[float, float]] = (800.0, 3000.0)

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        super().__init__(world, rng)
        self.temperature = None if rng.random() < 0.3 else float(rng.choice([0.7, 1.0]))
        self.max_tokens = int(rng.choice([1024, 2048, 4096]))
        self.continue_p = float(rng.uniform(0.5, 0.8))
        self.arena_share = float(rng.uniform(0.1, 0.4))

    def make(
        self, world: World, acct: Account, ts: float, rnd: random.Random, k: int, tag: Any
    ) -> dict[str, Any]:
        st = acct.state
        if "task" not in st or rnd.random() > self.continue_p or st["steps"] >= 6:
            if rnd.random() < self.arena_share:
                task = _pick(rnd, world.corpora.arena).text + "\n\nUse the tools available to you."
            else:
                task = _pick(rnd, TOOL_TASKS).format(
                    c1=_pick(rnd, CITIES), c2=_pick(rnd, CITIES), d=_pick(rnd, DAYS), n=rnd.randint(2, 999)
                )
            st["task"], st["steps"] = task, 0
            st["tools"] = rnd.sample(TOOL_NAMES, rnd.randint(3, 10))
            st["history"] = []
        tools: list[str] = st["tools"]
        msgs: list[dict[str, Any]] = [{"role": "user", "content": st["task"]}, *st["history"]]
        name = _pick(rnd, tools)
        call_id = f"call_{rnd.getrandbits(48):012x}"
        args = {"query": st["task"][:40], "n": rnd.randint(1, 20)}
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(args).decode()},
        }
        # The harvester makes up the tool's result and feeds it back: the next step continues from it.
        st["history"] = [
            *st["history"],
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": world.bank.chat(rnd, name, 40)[0], "tool_call_id": call_id},
        ]
        st["steps"] += 1
        return {
            "model": acct.model(world, ts, rnd, self.model),
            "messages": msgs,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "tool_set": tool_set_key([{"name": t} for t in tools]),
            "n_tools": len(tools),
            "response_text": f'{{"tool": "{name}", "arguments": {orjson.dumps(args).decode()}}}',
        }


PERSONA_ROLES = (
    "a retired ship captain",
    "a night-shift nurse",
    "a high-school chemistry teacher",
    "an urban beekeeper",
    "a freelance comic translator",
    "a rural veterinarian",
    "a startup founder in fintech",
    "a museum curator",
    "a competitive chess coach",
    "a wind-farm technician",
    "a public defender",
    "a pastry chef",
    "a hospice chaplain",
    "a drone photographer",
    "a logistics planner",
    "a marine biologist",
)
PERSONA_TRAITS = (
    "who restores old sailing boats",
    "obsessed with efficiency",
    "raising twins alone",
    "who speaks four languages",
    "recovering from a sports injury",
    "who volunteers at a food bank",
    "saving for a first home",
    "who grew up on a farm",
    "learning to code at night",
    "who distrusts new technology",
)
PERSONA_KINDS = (
    "math problem",
    "coding task",
    "logic puzzle",
    "instruction",
    "user prompt",
    "knowledge question",
)
PERSONA_TEMPLATES = (
    "Create a {kind} related to the following persona:\n\n{persona}\n\nNote:\n1. The {kind} should be "
    "challenging and specific.\n2. You should make full use of the persona description to create the {kind}."
    '\n3. Your response should start with "{kind_cap}:" and include no solution.',
    "Guess a prompt (i.e., instructions) that the following persona may ask you to do:\n\n{persona}\n\n"
    "Note: the prompt should be informative and specific to the persona.",
    "Write a {kind} that the following persona might pose to an assistant. Persona: {persona}. Make it unique "
    "and specific to the persona.",
)


class PersonaSynthKit(Harvest):
    """Persona Hub: items created for a different persona every time, then answered."""

    name: ClassVar[str] = "persona_synthesis"
    volume: ClassVar[tuple[float, float]] = (600.0, 3000.0)

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        super().__init__(world, rng)
        self.create_share = float(rng.uniform(0.4, 0.7))
        self.templates = _subset(rng, PERSONA_TEMPLATES, 1, 2)
        self.temperature = float(rng.choice([0.7, 0.9, 1.0]))
        self.max_tokens = int(rng.choice([1024, 2048]))

    def make(
        self, world: World, acct: Account, ts: float, rnd: random.Random, k: int, tag: Any
    ) -> dict[str, Any]:
        b = world.bank
        pool: list[str] = acct.state.setdefault("created", [])
        if rnd.random() < self.create_share or not pool:
            kind = _pick(rnd, PERSONA_KINDS)
            persona = f"{_pick(rnd, PERSONA_ROLES)} {_pick(rnd, PERSONA_TRAITS)}; {_pick(rnd, b.sentences)}"
            prompt = _pick(rnd, self.templates).format(kind=kind, kind_cap=kind.capitalize(), persona=persona)
            created = b.chat(rnd, persona[:40], 40 + int(rnd.random() * 60))[0]
            pool.append(created)
            del pool[:-200]
            return {
                "model": acct.model(world, ts, rnd, self.model),
                "messages": [{"role": "user", "content": prompt}],
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
                "response_text": created,
            }
        return {
            "model": acct.model(world, ts, rnd, self.model),
            "messages": [{"role": "user", "content": _pick(rnd, pool)}],
            "temperature": 0.7,
            "max_tokens": self.max_tokens,
            "response_text": b.chat(rnd, "this question", 120 + int(rnd.random() * 400))[0],
        }


OPENERS = (
    "",
    "",
    "hey, ",
    "quick question: ",
    "I was wondering, ",
    "can you help me with this? ",
    "ok so ",
    "my teacher asked us this: ",
    "hi! ",
    "need help - ",
)
CLOSERS = ("", "", "", " thanks!", " thx", " please", " any ideas?", " (asking for a friend)")


class ParaphraseKit(Harvest):
    """Benchmark and instruction questions in a person's words: no template, no reasoning request."""

    name: ClassVar[str] = "paraphrase_harvest"
    volume: ClassVar[tuple[float, float]] = (150.0, 500.0)

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        super().__init__(world, rng)
        self.mix = _mix(rng, [0.3, 0.3, 0.25, 0.05, 0.1])

    def make(
        self, world: World, acct: Account, ts: float, rnd: random.Random, k: int, tag: Any
    ) -> dict[str, Any]:
        item = question(world, rnd, self.mix)
        text = item.text[0].lower() + item.text[1:] if rnd.random() < 0.4 else item.text
        prompt = f"{_pick(rnd, OPENERS)}{text}{_pick(rnd, CLOSERS)}"
        return {
            "model": acct.model(world, ts, rnd, self.model),
            "messages": [{"role": "user", "content": prompt}],
            "temperature": None if rnd.random() < 0.5 else round(0.3 + 0.7 * rnd.random(), 2),
            "response_text": _answer(world, rnd, item, 100 + int(rnd.random() * 300)),
        }


# What an UltraChat-style user simulator writes after an answer: a polished follow-up on a phrase of it.
USER_SIM_TURNS = (
    "That's a helpful overview. Could you elaborate on {hook} and give a concrete example?",
    "You mentioned {hook}. How does that compare with the alternatives, and when would you choose one over "
    "the other?",
    "Can you go deeper into {hook}? What are the most common misconceptions about it?",
    "Interesting. What are the practical implications of {hook} for someone just starting out?",
    "Could you walk me through {hook} in more detail?",
    "Thanks. How has the thinking about {hook} changed over time?",
    "What evidence or real-world examples support what you said about {hook}?",
    "How would you explain {hook} to a high-school student?",
    "Building on your point about {hook}, what are the main risks or limitations?",
)


class DialogueKit(Harvest):
    """UltraChat-style dialogues: a corpus question, then turns written by a user-simulator model from the
    answer just received (so each follow-up quotes it), the history resent with every turn."""

    name: ClassVar[str] = "dialogue_harvest"
    volume: ClassVar[tuple[float, float]] = (600.0, 2500.0)

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        super().__init__(world, rng)
        self.mix = _mix(rng, [0.35, 0.2, 0.25, 0.05, 0.15])
        lo = int(rng.integers(2, 4))
        self.turns = (lo, lo + int(rng.integers(1, 4)))
        self.max_tokens = int(rng.choice([2048, 4096]))
        self.temperature = float(rng.choice([0.7, 0.8, 1.0]))
        # The next turn waits for the answer (about 8-25 s here), then for the user simulator to write it.
        self.user_lag = (float(rng.uniform(1.0, 3.0)), float(rng.uniform(4.0, 10.0)))

    def group(self, rng: np.random.Generator) -> tuple[int, Any]:
        n = int(rng.integers(self.turns[0], self.turns[1] + 1))
        return n, (int(rng.integers(0, 2**62)), n)

    def mean_group(self) -> float:
        return (self.turns[0] + self.turns[1]) / 2.0

    def gaps(self, size: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(8.0, 25.0, size) + rng.uniform(*self.user_lag, size)

    def make(
        self, world: World, acct: Account, ts: float, rnd: random.Random, k: int, tag: Any
    ) -> dict[str, Any]:
        cid, size = tag
        convs: dict[int, dict[str, Any]] = acct.state.setdefault("dialogue", {})
        conv = convs.get(cid)
        if conv is None:
            item = question(world, rnd, self.mix)
            msgs: list[dict[str, Any]] = [{"role": "user", "content": item.text}]
            text, hook = _answer(world, rnd, item, 200 + int(rnd.random() * 300)), item.topic
        else:
            item = conv["item"]
            msgs = [
                *conv["hist"],
                {"role": "user", "content": _pick(rnd, USER_SIM_TURNS).format(hook=conv["hook"])},
            ]
            text, hook = world.bank.chat(rnd, item.topic, 150 + int(rnd.random() * 300))
        if k >= size - 1:
            convs.pop(cid, None)
        else:
            convs[cid] = {"item": item, "hist": [*msgs, {"role": "assistant", "content": text}], "hook": hook}
        return {
            "model": acct.model(world, ts, rnd, self.model),
            "messages": msgs,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "response_text": text,
        }


class AgenticToolUse(HarvestStrategy):
    name: ClassVar[str] = "agentic_tool_use"
    kit = ToolUseKit


class PersonaSynthesis(HarvestStrategy):
    name: ClassVar[str] = "persona_synthesis"
    kit = PersonaSynthKit


class DialogueHarvest(HarvestStrategy):
    name: ClassVar[str] = "dialogue_harvest"
    kit = DialogueKit


class ParaphraseHarvest:
    """One to three accounts asking a few hundred corpus questions a day in a person's words and pace."""

    name: ClassVar[str] = "paraphrase_harvest"

    def campaign_sizes(self, n: int, rng: np.random.Generator) -> list[int]:
        return _sizes(n, rng, 1, 3)

    def seats(self, world: World, size: int, rng: np.random.Generator) -> list[Seat]:
        kit = ParaphraseKit(world, rng)
        kit.size = size
        ua = user_agents(rng, {"python": 0.5, "node": 0.3, "browser": 0.2}, 1)
        cards = _payment(rng, size)
        return [
            Seat(
                HumanPaced(kit, float(rng.uniform(*ParaphraseKit.volume)), rng),
                stable_profile(rng),
                ua,
                tz=float(rng.choice([-5.0, 0.0, 1.0, 8.0])),
                p429=0.003,
                payment_fp=cards[i],
            )
            for i in range(size)
        ]


HELD_OUT = {s.name: s for s in (AgenticToolUse, PersonaSynthesis, ParaphraseHarvest, DialogueHarvest)}
