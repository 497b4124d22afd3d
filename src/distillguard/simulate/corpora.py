"""The real prompt corpora the simulator draws from, packaged as gzip JSONL under `distillguard/data/prompts`.

They ship inside the package (see `data/prompts/ATTRIBUTION.md` for sources and licences) so that
`distillguard simulate` works on any machine. Loading takes a fraction of a second and is cached.
"""

from __future__ import annotations

import functools
import gzip
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson

_DATA = ("data", "prompts")

# Arena-hard topic clusters that are about writing or fixing code: the developers' and the code sweeps' pool.
_CODE_CLUSTER = re.compile(
    r"python|code|coding|sql|javascript|typescript|react|rust|c\+\+|kotlin|django|flask|docker|kubernetes|"
    r"linux|regex|css|php|laravel|node|swift|android|vba|matplotlib|pandas|pytorch|jax|cuda|algorithm|"
    r"linked list|array|string|fibonacci|script|gradio|streamlit|shiny|tkinter|wpf|hdl|assembly|bot|"
    r"scraping|api|web|ffmpeg|awk|nix|symfony|odoo|roblox|yolo|tidyverse|testing|mock|concurrency|json|"
    r"hlsl|gis|huggingface|rnn|autoencoder|monads|kernel|extension|development|integration|excel",
    re.IGNORECASE,
)
_CALC = re.compile(r"<<[^>]*>>")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_STOP = frozenset(
    re.findall(
        r"\w+",
        "what which when where with that this these those from have your about into they them their there "
        "would could should please write given following each some many more most make using used than then "
        "also does will been being were explain describe provide create",
    )
)


@dataclass(frozen=True)
class Item:
    """One prompt of a corpus with the few things the simulator needs precomputed."""

    text: str
    topic: str  # a few content words of the prompt, used to make answers and follow-ups refer to it
    group: str = ""  # cluster / category / app
    answer: str = ""  # gsm8k worked answer (calculator annotations removed); seed/app instance output
    final: str = ""  # gsm8k final number
    extra: tuple[str, ...] = ()  # mt_bench later turns; seed/app instance inputs
    code: bool = False  # asks for code (answered with a code block)


@dataclass(frozen=True)
class Corpora:
    arena: tuple[Item, ...]
    arena_code: tuple[Item, ...]
    arena_general: tuple[Item, ...]
    mt_bench: tuple[Item, ...]
    vicuna: tuple[Item, ...]
    user_oriented: tuple[Item, ...]
    seed_tasks: tuple[Item, ...]
    gsm8k: tuple[Item, ...]
    alpaca_prompt: str


def topic_of(text: str, k: int = 4) -> str:
    """A short phrase of content words from a prompt ("memory mapping kernel module")."""
    out: list[str] = []
    for w in _WORD.findall(text[:400]):
        lw = w.lower()
        if lw not in _STOP and lw not in out:
            out.append(lw)
            if len(out) == k:
                break
    return " ".join(out) or "this"


def _lines(name: str) -> list[dict[str, Any]]:
    raw = gzip.decompress(resources.files("distillguard").joinpath(*_DATA, name).read_bytes())
    return [orjson.loads(x) for x in raw.splitlines() if x.strip()]


@functools.lru_cache(maxsize=1)
def load() -> Corpora:
    """All corpora, parsed once per process."""
    arena = tuple(
        Item(d["prompt"], topic_of(d["prompt"]), c, code=bool(_CODE_CLUSTER.search(c)))
        for d in _lines("arena_hard_v0.1.jsonl.gz")
        for c in (d.get("cluster", ""),)
    )
    code = tuple(i for i in arena if i.code)
    general = tuple(i for i in arena if not i.code)
    mt = tuple(
        Item(
            d["turns"][0],
            topic_of(d["turns"][0]),
            d.get("category", ""),
            extra=tuple(d["turns"][1:]),
            code=d.get("category") == "coding",
        )
        for d in _lines("mt_bench.jsonl.gz")
    )
    vic = tuple(
        Item(d["turns"][0], topic_of(d["turns"][0]), d.get("category", ""))
        for d in _lines("vicuna_bench.jsonl.gz")
    )

    def _task(d: dict[str, Any], group: str) -> Item:
        inst = d.get("instances") or [{}]
        return Item(
            d["instruction"],
            topic_of(d["instruction"]),
            group,
            answer=str(inst[0].get("output", "")),
            extra=tuple(str(i.get("input", "")) for i in inst),
        )

    uo = tuple(_task(d, d.get("motivation_app", "")) for d in _lines("self_instruct_user_oriented.jsonl.gz"))
    seed = tuple(_task(d, d.get("name", "")) for d in _lines("self_instruct_seed_tasks.jsonl.gz"))
    gsm = []
    for d in _lines("gsm8k_test.jsonl.gz"):
        work, _, final = d["answer"].rpartition("####")
        gsm.append(
            Item(d["question"], topic_of(d["question"]), "", _CALC.sub("", work).strip(), final.strip())
        )
    alpaca = gzip.decompress(
        resources.files("distillguard").joinpath(*_DATA, "alpaca_generation_prompt.txt.gz").read_bytes()
    )
    return Corpora(arena, code, general, mt, vic, uo, seed, tuple(gsm), alpaca.decode().strip())
