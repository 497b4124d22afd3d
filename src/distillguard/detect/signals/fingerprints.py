"""Known generator fingerprints: the meta-prompts and system prompts that published distillation
recipes use (Self-Instruct / Alpaca task generation, Evol-Instruct rewriting, Orca-style step-by-step
system prompts, reasoning-trace coercion, Persona Hub persona-driven synthesis, OSS-Instruct code problems
from snippets, self-chat transcripts (Baize, CAMEL), MetaMath backward questions, rubric grading).

Each fingerprint is a regular expression over the lower-cased system prompt and prompt. The
patterns describe the *recipe* (what the meta-prompt asks for), not one wording, so paraphrases of the
published prompts still match. Rubric grading is weak on its own: evaluation harnesses grade too.
"""

from __future__ import annotations

from typing import ClassVar

from distillguard.detect.signals.base import Columns, Finding, example_ids, ramp, register, safe_div, support
from distillguard.store.engine import sql_str

# name -> pattern (weights live with the other weights, in detect.scoring)
FINGERPRINTS: dict[str, str] = {
    "self_instruct": (
        r"(come up with|generate|brainstorm|create|write|produce|propose|list|give me)[^.\n]{0,40}\b\d+\s+"
        r"(\w+\s+){0,3}(task |)(instructions|tasks|prompts|questions|queries)\b"
        r"|instructions? will be (given|sent) to an? (gpt|language|ai|llm)"
        # the Self-Instruct paper's own generation prompt ("Come up with a series of tasks:", then Task 1..8)
        r"|come up with a (series|list|set) of (new |more |diverse )?tasks"
        r"|(diverse|varied|different) (task )?instructions?[^\n]{0,80}(gpt|language model|llm|ai model)"
    ),
    "evol_instruct": (
        r"prompt (rewriter|creator)|#\s?(given|created|rewritten) prompt\s?#"
        r"|rewrite (a|the) given prompt into a more (complex|difficult)"
        r"|(more complex|harder|more difficult) version[^\n]{0,60}(prompt|instruction)"
        r"|increase the (difficulty|complexity) of the (given|following) (\w+ ){0,2}(question|prompt|problem|instruction)"
        r"|(add|introduce) (\w+ )?(more )?(constraints|requirements|reasoning steps) (to|into) the (given )?(prompt|question|instruction)"
    ),
    "orca_system": (
        r"think step[- ]by[- ]step and justify"
        r"|user will (you )?give you a task"
        r"|complete the task as faithfully as you can"
        r"|explain (it )?(like|as if) (you are|you're) (talking|answering|explaining) to a (five|5)[- ]year[- ]old"
        r"|(provide|give|output) a (detailed|long) (and (long|detailed) )?answer so (the )?user"
        r"|you are a teacher. given a task, you explain in simple steps"
    ),
    "trace_coercion": (
        r"(reveal|show|output|print|write( out)?|include|expose|dump|transcribe|reproduce|share|give|display|copy)"
        r"\s+(me\s+)?(all\s+)?(of\s+)?(your|the)\s+(\w+\s+){0,2}"
        r"(reasoning|thought process|chain[- ]of[- ]thought|thinking|thoughts|scratch ?pad|deliberation|internal monologue)"
        r"|(do not|don't|never|without) (summari[sz]e|summari[sz]ing|skip|skipping|omit|omitting|hide|hiding|abbreviat\w*|condens\w*)"
        r"\s+(any\s+)?(of\s+)?(your\s+)?(\w+\s+)?(reasoning|thinking|thoughts|steps|deliberation)"
        r"|(verbatim|unabridged|unfiltered|raw|complete|full|entire) (internal )?(reasoning|chain[- ]of[- ]thought|thinking|thought process|scratch ?pad)"
        r"|(hidden|internal|private) (scratch ?pad|monologue|deliberation)"
        r"|(every|each|all) (of your )?intermediate (thoughts?|reasoning|steps)"
        r"|exactly as you (thought|reasoned|deliberated)"
        r"|(inside|in|within|between) <(think|thinking|reasoning|thoughts)> tags"
    ),
    # Persona Hub (Chan et al. 2024): a data item "related to the following persona", one persona per prompt
    "persona_synthesis": (
        r"related to the following persona"
        r"|(prompt|instruction|question|problem|request|task)s?\b[^\n]{0,30}\b(that|which) the (following|given|above) persona"
        r" (may|might|would|could|will)"
        r"|make full use of the persona"
        r"|(unique|specific) (and specific )?to the persona"
    ),
    # OSS-Instruct (Magicoder, Wei et al. 2023): a programming problem and solution from a random code snippet
    "code_instruct": (
        r"inspiration from the (following|given|above) (random )?(code )?snippet"
        r"|create an? (high[- ]quality |new |novel |self-contained )+(programming|coding) (problem|question|task)"
        r"[^\n]{0,200}(inspir|snippet)"
        r"|\[problem description\][^\n]{0,200}\[solution\]"
        r"|two distinct sections:? \[problem description\]"
    ),
    # Self-chat (Baize, CAMEL, UltraChat): the model writes both sides of a conversation, or plays a user
    "self_chat": (
        r"take turns (chatting|talking|conversing)"
        r"|complete the transcript in (exactly )?th(at|is|e following) format"
        r"|human statements start with"
        r"|never flip roles|never forget you are an? [^\n]{0,60}\band i am an? "
        r"|(generate|simulate|write|continue|produce) (a |an )?(\w+[- ]){0,3}(conversation|dialogue|dialog)s? between "
        r"an? (human|user)( \w+)? and an? (ai|assistant|chatbot)[^\n]{0,80}(\[human\]|\[ai\]|turns|format)"
    ),
    # MetaMath (Yu et al. 2023) backward reasoning: a solved question turned round into an unknown variable
    "math_augment": (
        r"if we know the answer (to|of) the above question is"
        r"|rephrase the (above|following|given) question[^\n]{0,40}(and|then) (answer|solve)"
    ),
    "rubric_judge": (
        r"act as an? (impartial|fair|strict|expert) (judge|grader|evaluator)"
        r"|rate (the|this|each) (response|answer|output)s? on a scale"
        r"|\[\[rating\]\]|\[\[[ab]\]\]"
        r"|(grading|scoring) rubric|according to the (following )?rubric|against the (following )?rubric"
        r"|(expert|strict|impartial|fair) (grader|judge|evaluator|teaching assistant|marker)"
        r"|on a scale (of|from) (1|one|0|zero)\b[^\n]{0,80}\b(rate|score|grade)"
        r"|(give|assign|output) (it )?a (score|grade|rating) (from|out of|between) "
        r"|rating: \[\["
    ),
}


@register
class Fingerprints:
    name: ClassVar[str] = "fingerprint"
    # One pass with all recipes as alternatives; the separate patterns run only on rows that match it.
    pre_columns: ClassVar[dict[str, str]] = {
        "fp_any": "CASE WHEN {rx(txt, "
        + sql_str("|".join(f"(?:{p})" for p in FINGERPRINTS.values()))
        + ")} THEN 1 ELSE 0 END"
    }
    row_columns: ClassVar[dict[str, str]] = {
        f"fp_{k}": f"CASE WHEN fp_any = 1 THEN (CASE WHEN {{rx(txt, {sql_str(pat)})}} THEN 1 ELSE 0 END) ELSE 0 END"
        for k, pat in FINGERPRINTS.items()
    }
    extra_sql: ClassVar[str | None] = None
    account_columns: ClassVar[dict[str, str]] = {
        **{f"fp_{k}_n": f"sum(fp_{k})" for k in FINGERPRINTS},
        **{f"fp_{k}_ex": f"min(CASE WHEN fp_{k} = 1 THEN exchange_id END)" for k in FINGERPRINTS},
    }

    def evaluate(self, cols: Columns) -> list[Finding]:
        n = cols["n_exchanges"]
        out = []
        for k in FINGERPRINTS:
            hits = cols[f"fp_{k}_n"]
            share = safe_div(hits, n)
            # A few hits in a big account are noise; a recipe shows up as a share of the traffic.
            strength = ramp(share, 0.01, 0.10) * support(hits, 8)
            ex = example_ids(cols[f"fp_{k}_ex"])
            out.append(
                Finding(
                    name=f"fingerprint.{k}",
                    value=share,
                    strength=strength,
                    threshold=0.10,
                    describe="{value:.1%} of exchanges match the "
                    + k.replace("_", "-")
                    + " generator fingerprint",
                    examples=ex,
                )
            )
        return out
