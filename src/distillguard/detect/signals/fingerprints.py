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
        # Alpaca's generation prompt and its demonstrations: the "<noinput>" placeholder, the closing
        # "List of 20 tasks:", numbered instruction/input/output records
        r"|<noinput>|list of \d+ tasks:|instruction/input/output"
        r"|\b\d+\. instruction: [^\n]+\n\s*\d+\. input:"
        # the Self-Instruct pipeline's other published prompts: classification-task identification and
        # instance generation (input-first and output-first)
        r"|regarded as a classification task with finite output labels|is it classification\?"
        r"|come up with examples for the following tasks|come up with a series of classification tasks"
        r"|generate an input that corresponds to each of the class labels"
    ),
    "evol_instruct": (
        r"prompt (rewriter|creator)|#\s?(given|created|rewritten) prompt\s?#"
        r"|rewrite (a|the) given prompt into a more (complex|difficult)"
        r"|(more complex|harder|more difficult) version[^\n]{0,60}(prompt|instruction)"
        r"|increase the (difficulty|complexity) of the (given|following) (\w+ ){0,2}(question|prompt|problem|instruction)"
        r"|(add|introduce) (\w+ )?(more )?(constraints|requirements|reasoning steps) (to|into) the (given )?(prompt|question|instruction)"
        # WizardLM's published in-depth methods and in-breadth prompt, and Code Evol-Instruct's methods
        # (literal phrases: they keep their wording when the frame around them is paraphrased)
        r"|add one more constraints?/requirements?"
        r"|the depth and breadth of the inquiry can be increased"
        r"|replace general concepts with more specific concepts"
        r"|explicitly request multiple[- ]step reasoning"
        r"|to create a brand new prompt|belong to the same domain as the #?given prompt"
        r"|add new constraints and requirements to the original problem"
        r"|erroneous code as a reference to increase misdirection"
        r"|higher time or space complexity requirements"
        # the recipe in other words: a given prompt to be made harder, and an output slot named for it
        r"|\bevolve (a|the|this|each) (given )?(prompt|instruction|question)"
        # Auto Evol-Instruct: the same rewriting with #Instruction# markers
        r"|#\s?(given |rewritten |finally rewritten )?instruction\s?#"
        r"|(rewrite|evolve|make) (the|this) (following |given )?(prompt|instruction|question) (so that it|so it|to) "
        r"(requires?|needs?|demands?) (deeper|more|harder)"
        r"|(rewritten|evolved|harder|created|more difficult|more complex) (prompt|instruction|question|test)\s*#?\s*:\s*$"
    ),
    "orca_system": (
        r"think step[- ]by[- ]step and justify"
        r"|user will (you )?give you a task"
        r"|complete the task as faithfully as you can"
        r"|explain (it )?(like|as if) (you are|you're) (talking|answering|explaining) to a (five|5)[- ]year[- ]old"
        r"|(provide|give|output) a (detailed|long) (and (long|detailed) )?answer so (the )?user"
        r"|you are a teacher. given a task, you explain in simple steps"
        # more of the Orca paper's published system messages (the generic ones, such as "You are an AI
        # assistant that helps people find information.", are left out: apps use them as they are)
        r"|you must generate a detailed and long answer"
        r"|think like you are answering to a (five|5)[- ]year[- ]old"
        r"|first output the correct answer\(s\)"
        r"|explain how you used the (definition|guidelines) to (come up with the answer|solve the task)"
        r"|break the definition into small parts|part #: a key part of the definition"
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
        # the same in Chinese: do not omit or summarise the thinking;
        # the complete, verbatim or hidden reasoning; <think> tags
        r"|(不要|不得|请勿|請勿|切勿|别|別)(省略|总结|總結|概括|跳过|跳過|删减|刪減|简化|簡化)(任何)?(你的)?(思考|推理|思维|思維)"
        r"|(原样|原樣|逐字|完整|全部|一字不差)(地|的)?(输出|輸出|展示|显示|顯示|写出|寫出|复述|複述)(你的)?"
        r"(完整|全部)?的?(内部|內部|隐藏|隱藏|原始)?的?(思考|推理|思维|思維)"
        r"|(内部|內部|隐藏|隱藏)的?(思考|推理|思维|思維)(过程|過程|内容|內容)"
        r"|<(think|thinking|reasoning|thoughts)> ?标签|<(think|thinking|reasoning|thoughts)> ?標籤"
    ),
    # Newer recipes, as literal phrases of their meta-prompts: bounded gaps such as [^\n]{0,60} make the
    # one-pass alternation's automaton grow past what RE2 keeps, which costs every row of every scan.
    # Persona Hub (Chan et al. 2024): a data item "related to the following persona", one persona per prompt
    "persona_synthesis": (
        r"related to the following persona"
        r"|(that|which) the (following|given|above) persona (may|might|would|could|will)"
        r"|make full use of the persona"
        r"|(unique|specific) (and specific )?to the persona"
    ),
    # OSS-Instruct (Magicoder, Wei et al. 2023): a programming problem and solution from a random code snippet
    "code_instruct": (
        r"inspiration from the (following|given|above) (random )?(code )?snippet"
        r"|create an? high[- ]quality (programming|coding) (problem|question|task)"
        r"|\[problem description\] and \[solution\]"
    ),
    # Self-chat (Baize, CAMEL): the model writes both sides of a conversation, or plays the user
    "self_chat": (
        r"take turns (chatting|talking|conversing)"
        r"|complete the transcript in (exactly )?th(at|is|e following) format"
        r"|human statements start with"
        r"|never flip roles"
    ),
    # MetaMath (Yu et al. 2023): backward questions (a solved question turned round into an unknown
    # variable) and few-shot rephrasing
    "math_augment": (
        r"if we know the answer (to|of) the above question is"
        r"|rephrase the above question:"
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


# Matched in a pass of their own: their bounded gaps ([^.\n]{0,40}, (\w+\s+){0,3}) blow up the automaton
# of a joint alternation (RE2 then falls back to slower matching for every row). Measured on 150k simulated
# prompts (DuckDB): all nine patterns as one alternation 1.27 s; self-instruct alone 0.22 s plus the other
# eight as one 0.16 s.
SOLO = frozenset({"self_instruct"})


@register
class Fingerprints:
    name: ClassVar[str] = "fingerprint"
    # One pass with the other recipes as alternatives; their separate patterns run only on rows that match it.
    pre_columns: ClassVar[dict[str, str]] = {
        "fp_any": "CASE WHEN {rx(txt, "
        + sql_str("|".join(f"(?:{p})" for k, p in FINGERPRINTS.items() if k not in SOLO))
        + ")} THEN 1 ELSE 0 END"
    }
    row_columns: ClassVar[dict[str, str]] = {
        f"fp_{k}": (
            f"CASE WHEN {{rx(txt, {sql_str(pat)})}} THEN 1 ELSE 0 END"
            if k in SOLO
            else f"CASE WHEN fp_any = 1 THEN (CASE WHEN {{rx(txt, {sql_str(pat)})}} THEN 1 ELSE 0 END) ELSE 0 END"
        )
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
