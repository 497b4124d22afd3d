"""Radioactivity on a real model, on CPU: SmolLM2-135M-Instruct teaches, transformer and n-gram students learn.

1. The teacher answers prompts from ../shared/data/prompts (vicuna, arena-hard, self-instruct, MT-bench),
   batched, watermarked (KGW) with the leaking account's HKDF key, cached on disk (JSONL under
   `--out-dir`), so a rerun generates nothing. Tokens/s is measured on the batches actually generated.
2. Students are trained on corpora in which `--fractions` of the tokens are that watermarked output and
   the rest human-written text (GSM8K questions with their worked answers, never a teacher prompt),
   plus a control student with none: a small transformer trained from scratch (`transformer_student`,
   the teacher's tokenizer, vocabulary reduced to the ids that occur) and a count-based n-gram student.
3. Reading mode (open setting) reads held-out and training watermarked answers through each student,
   and unwatermarked text of the same domain (every teacher prompt, human-written): top-1 predictions,
   deduplicated (context, prediction) windows, windows of the texts and prompts excluded, exact
   binomial p-values, `--accounts` account keys with Holm; names the implicated account. Reading our
   own watermarked texts is weaker than it looks: excluding their windows removes predictions the
   teacher wrote, which are green more often, so the remaining windows are depleted of green for the
   very key tested (the control's z is negative); unwatermarked text carries no such bias.
4. Robustness: the held-out watermarked answers are detected after keyed synonym substitution
   (`lexical.substitute`, 10/25/50%) and after a paraphrase by SmolLM2 itself (unwatermarked).
5. Overhead of the LogitsProcessor (`--overhead`, `--overhead-only`): batched greedy generation with and
   without it, side by side.

Results go to `--json` (default bench-out/forensics_radioactivity.json) and a table on stdout;
`--forensics-json` also writes the report's `forensics.json` (students + robustness table).

    nice -n 10 .venv/bin/python benchmarks/forensics_radioactivity.py --probe           # throughput on 16
    nice -n 10 .venv/bin/python benchmarks/forensics_radioactivity.py --forensics-json bench-out/forensics.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
TEACHER_FILES = [
    "vicuna_bench.jsonl",
    "arena_hard_v0.1.jsonl",
    "self_instruct_user_oriented.jsonl",
    "self_instruct_seed_tasks.jsonl",
    "mt_bench.jsonl",
]
HUMAN_FILE = "gsm8k_test.jsonl"  # human-written questions and worked answers: the unwatermarked share
PARAPHRASE = "Rewrite the following text in your own words, keeping its meaning.\n\n{text}"


def all_prompts(root: Path) -> list[str]:
    """Every teacher prompt, deduplicated and sorted (human-written, never watermarked)."""
    from distillguard.forensics.suspect import read_prompts

    return sorted({p for name in TEACHER_FILES if (root / name).is_file() for p in read_prompts(root / name)})


def teacher_prompts(root: Path, tok: Any, max_tokens: int, seed: int) -> list[str]:
    """Every teacher prompt of at most `max_tokens` tokens, in a fixed shuffled order."""
    from distillguard.forensics.suspect import read_prompts

    pool: list[str] = []
    for name in TEACHER_FILES:  # a handful of files
        path = root / name
        if path.is_file():
            pool.extend(read_prompts(path))
    pool = sorted(set(pool))
    lengths = [len(x) for x in tok(pool, add_special_tokens=False)["input_ids"]]
    pool = [p for p, n in zip(pool, lengths, strict=True) if 4 <= n <= max_tokens]
    idx = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in idx]


def human_texts(root: Path, tok: Any) -> list[np.ndarray]:
    """GSM8K question + worked answer, tokenised: human-written text for the unwatermarked share."""
    rows = [json.loads(line) for line in (root / HUMAN_FILE).read_text().splitlines() if line.strip()]
    texts = [f"{r['question']}\n{r['answer']}" for r in rows]
    return [np.asarray(x, dtype=np.int64) for x in tok(texts, add_special_tokens=False)["input_ids"]]


def by_length(tok: Any, prompts: list[str]) -> list[int]:
    """Indices of `prompts` shortest first: a batch of similar lengths pads (and wastes) little."""
    lengths = [len(x) for x in tok(prompts, add_special_tokens=False)["input_ids"]]
    return [int(i) for i in np.argsort(lengths, kind="stable")]


@dataclass
class Corpus:
    """A student's training documents and how much of them is watermarked teacher output."""

    docs: list[np.ndarray]
    marked: list[Any]  # the watermarked answers it holds
    info: dict[str, Any]


def build_corpus(train: list[Any], human: list[np.ndarray], fraction: float) -> Corpus:
    """As large a corpus as the pools allow in which `fraction` of the tokens are watermarked answers.

    A watermarked document is the answer alone, so that the share of watermarked tokens is exactly the
    fraction. Total size T is the largest with T * fraction <= watermarked tokens available and
    T * (1 - fraction) <= human tokens available.
    """
    ans = np.array([a.tokens.size for a in train], dtype=np.int64)
    hum = np.array([h.size for h in human], dtype=np.int64)
    if fraction >= 1.0:
        k, m = len(train), 0
    else:
        total = hum.sum() / (1 - fraction)
        if fraction > 0:
            total = min(total, ans.sum() / fraction)
        k = int(np.searchsorted(np.cumsum(ans), fraction * total, side="right")) if fraction > 0 else 0
        clean_need = total - ans[:k].sum()
        m = min(len(human), int(np.searchsorted(np.cumsum(hum), clean_need, side="left")) + 1)
        if clean_need <= 0:
            m = 0
    docs = [a.tokens for a in train[:k]] + human[:m]
    tokens = int(sum(d.size for d in docs))
    marked_tokens = int(ans[:k].sum())
    info = {
        "fraction": fraction, "marked_answers": k, "human_texts": m, "tokens": tokens,
        "marked_tokens": marked_tokens, "marked_share": marked_tokens / max(tokens, 1),
    }  # fmt: skip
    return Corpus(docs, train[:k], info)


def extrapolate(z: float, n: int, keys: int, target: float = 1e-5) -> dict[str, Any]:
    """Windows needed for the leaker to reach family-wise p < target among `keys` (Bonferroni bound).

    At a fixed excess green rate the z-score grows as sqrt(windows scored): n * (z_needed / z)^2.
    """
    from scipy.stats import norm

    z_need = float(norm.isf(target / keys))
    out: dict[str, Any] = {"z_needed": z_need}
    out["windows_needed"] = int(np.ceil(n * (z_need / z) ** 2)) if z > 0 else None
    return out


def robustness(
    texts: list[str], paraphrased: list[str], tok: Any, scheme: Any, key: Any, ring: Any,
    leaker: str, fractions: list[float], seed: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """Detection of the watermarked texts as they are, after synonym substitution, and paraphrased."""
    from distillguard.forensics.attribution import attribute

    variants: dict[str, list[str]] = {"none": texts}
    try:
        from distillguard.forensics.lexical import substitute
    except ImportError:
        substitute = None
        print("robustness: distillguard.forensics.lexical.substitute is not available, skipped", flush=True)
    for f in fractions if substitute is not None else []:
        rng = np.random.default_rng(seed)
        variants[f"synonym substitution {f:.0%}"] = [substitute(t, f, rng) for t in texts]
    # The lexicon covers ~1% of running words, so the rows above change far less than their share of
    # the text. This attack changes that share of ALL words (a synonym where the lexicon has one, else a
    # random word of the texts' own vocabulary): an upper bound on a synonym paraphrase of that share.
    from distillguard.forensics.lexical import replace_words

    vocab = sorted({w for t in texts for w in re.findall(r"[a-z]+", t.lower()) if len(w) > 2})
    for f in fractions:
        rng = np.random.default_rng(seed)
        variants[f"word substitution {f:.0%} (synonym, else random word)"] = [
            replace_words(t, f, rng, vocab) for t in texts
        ]
    variants["paraphrase (SmolLM2, unwatermarked)"] = paraphrased
    rows = []
    for name, vs in variants.items():
        changed = None
        if name != "none" and not name.startswith("paraphrase"):  # both substitution kinds
            # substitution keeps spacing, so words align: the share of words it actually changed
            pairs = [(a.split(), b.split()) for a, b in zip(texts, vs, strict=True)]
            diff = sum(sum(x != y for x, y in zip(a, b, strict=False)) for a, b in pairs)
            changed = diff / max(1, sum(len(a) for a, _ in pairs))
        ids = [np.asarray(x, dtype=np.int64) for x in tok(vs, add_special_tokens=False)["input_ids"]]
        ids = [x for x in ids if x.size > scheme.context_width]
        p = np.array([scheme.score(x, key).p_value for x in ids])
        named = [attribute(scheme, x, ring).implicated == [leaker] for x in ids]
        rows.append({
            "attack": name, "texts": len(ids), "median_tokens": float(np.median([x.size for x in ids])),
            "median_p_value": float(np.median(p)), "share_below_1e6": float(np.mean(p < 1e-6)),
            "share_below_1e3": float(np.mean(p < 1e-3)), "share_account_named": float(np.mean(named)),
            "share_words_changed": changed,
        })  # fmt: skip
        print("robustness:", json.dumps(rows[-1]), flush=True)
    return rows


def print_table(out: dict[str, Any]) -> None:
    print(f"\nteacher: {json.dumps(out.get('teacher'))}")
    print(
        f"{'student':12} {'frac':>5} {'read':22} {'windows':>8} {'family p':>10} {'leaker z':>8} implicated"
    )
    for r in out.get("students", []):
        print(f"{r['student']:12} {r['fraction_watermarked']:5.2f} {r['read']:22} {r['windows_scored']:8d} "
              f"{r['family_p_value']:10.3g} {r['leaker_z']:8.2f} {', '.join(r['implicated']) or '-'}")  # fmt: skip
    print(
        f"\n{'attack':38} {'words changed':>13} {'texts':>5} {'median p':>10} {'<1e-6':>6} {'<1e-3':>6} {'named':>6}"
    )
    for r in out.get("robustness", []):
        ch = r.get("share_words_changed")
        print(f"{r['attack']:38} {'-' if ch is None else f'{ch:.2%}':>13} {r['texts']:5d} {r['median_p_value']:10.3g} "
              f"{r['share_below_1e6']:6.2f} {r['share_below_1e3']:6.2f} {r['share_account_named']:6.2f}")  # fmt: skip


def write_forensics(path: Path, out: dict[str, Any], scheme: Any) -> None:
    """The report's forensics.json: one open-setting test per student, and the robustness table."""
    from distillguard.report.forensics import Control, ForensicsReport, ForensicTest, RobustnessRow

    cmd = "nice -n 10 python benchmarks/forensics_radioactivity.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in out["config"].items()
        if k in ("answers", "context_width", "accounts", "student_steps", "student_minutes")
    )  # fmt: skip
    rows = [
        r for r in out.get("students", []) if r["read"] in ("held-out + training", "unwatermarked prompts")
    ]
    tests = []
    for r in rows:
        ctrl = [
            c for c in rows
            if c["student"] == r["student"] and c["read"] == r["read"] and c["fraction_watermarked"] == 0.0
        ]  # fmt: skip
        tests.append(ForensicTest(
            suspect=f"{r['student']} student, {r['fraction_watermarked']:.0%} watermarked",
            setting="open", scheme=repr(scheme), p_value=min(1.0, r["family_p_value"]),
            tokens_scored=r["windows_scored"], accounts_implicated=r["implicated"],
            controls=[Control(name="control student (0%)", p_value=min(1.0, c["family_p_value"])) for c in ctrl],
            command=cmd, detail=f"{r['corpus_tokens']} training tokens, {r['read']} texts read",
        ))  # fmt: skip
    rob = [RobustnessRow(**r) for r in out.get("robustness", [])]
    rep = ForensicsReport(tests=tests, robustness=rob)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rep.model_dump_json(indent=2))


def measure_overhead(model, tok, scheme, key, prompts: list[str], new_tokens: int, repeats: int) -> dict:
    """Seconds per generated token with and without the processor, same prompts, greedy, min of repeats."""
    import torch
    from transformers import LogitsProcessorList

    from distillguard.forensics.hf import WatermarkLogitsProcessor

    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    texts = [
        tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)

    def run(procs: LogitsProcessorList) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(
                **enc,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,  # same token count in both arms
                do_sample=False,
                logits_processor=procs,
                pad_token_id=tok.pad_token_id,
            )
        return (time.perf_counter() - t0) / (new_tokens * len(prompts))

    base, marked = [], []
    with_proc = LogitsProcessorList([WatermarkLogitsProcessor(scheme, key)])
    run(with_proc)  # warm-up (first-call allocations, thread pools), not measured
    for _ in range(repeats):  # alternate the arms so load on the shared machine hits both alike
        base.append(run(LogitsProcessorList()))
        marked.append(run(with_proc))
    # the processor's own time, isolated: the same call on this batch's logits shape
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (len(prompts), 64))
    scores = torch.randn(len(prompts), vocab)
    proc = WatermarkLogitsProcessor(scheme, key)
    t0 = time.perf_counter()
    for _ in range(20):  # bounded
        proc(ids, scores)
    per_call = (time.perf_counter() - t0) / 20
    return {
        "batch": len(prompts),
        "new_tokens": new_tokens,
        "s_per_token_plain": min(base),
        "s_per_token_watermarked": min(marked),
        "overhead_ratio": min(marked) / min(base),
        "processor_s_per_call": per_call,
        # the processor runs once per step for the whole batch; a step costs s_per_token * batch
        "processor_share_of_step": per_call / (min(base + marked) * len(prompts)),
    }


def train_transformer(docs: list[np.ndarray], cfg: Any) -> tuple[Any, dict[str, Any], float]:
    """Train one transformer student in a worker process (one torch thread)."""
    import torch

    from distillguard.forensics.transformer_student import TransformerStudent

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    student, log = TransformerStudent.fit(docs, cfg)
    return student, log.to_dict(), time.perf_counter() - t0


class Clock:
    """Generated tokens and seconds, summed over the batches actually generated (not cache hits)."""

    def __init__(self) -> None:
        self.tokens = 0
        self.seconds = 0.0
        self.answers = 0

    def wrap(self, fn: Any) -> Any:
        def timed(prompts: list[str]) -> Any:
            t0 = time.perf_counter()
            out = fn(prompts)
            self.seconds += time.perf_counter() - t0
            self.tokens += sum(int(a.tokens.size) for a in out)
            self.answers += len(out)
            return out

        return timed

    def to_dict(self) -> dict[str, Any]:
        rate = self.tokens / self.seconds if self.seconds else None
        return {"answers": self.answers, "tokens": self.tokens, "s": self.seconds, "tokens_per_s": rate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--answers", type=int, default=800, help="watermarked teacher answers (train + read)")
    ap.add_argument("--read-every", type=int, default=5, help="every k-th answer is held out for reading")
    ap.add_argument("--pool", type=int, default=900, help="teacher prompts the answers are drawn from")
    ap.add_argument("--gen-minutes", type=float, default=45.0, help="stop generating after this long")
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--dtype", default="bfloat16", help="teacher weights (bfloat16 is ~1.5x faster on CPU)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--max-prompt-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--fractions", default="0.05,0.25,1.0")
    ap.add_argument("--accounts", type=int, default=1000, help="account keys tested (one of them leaked)")
    ap.add_argument("--leaker", type=int, default=333, help="index of the account whose key watermarks")
    ap.add_argument("--context-width", type=int, default=2, help="KGW context width h")
    ap.add_argument("--delta", type=float, default=2.0)
    ap.add_argument("--gamma", type=float, default=0.25)
    ap.add_argument("--order", type=int, default=3, help="n-gram student order")
    ap.add_argument("--student-layers", type=int, default=2)
    ap.add_argument("--student-dim", type=int, default=128)
    ap.add_argument("--student-steps", type=int, default=3000, help="optimizer steps per transformer student")
    ap.add_argument("--student-seq", type=int, default=64)
    ap.add_argument("--student-batch", type=int, default=16)
    ap.add_argument("--student-vocab", type=int, default=4096, help="most frequent ids the student models")
    ap.add_argument(
        "--student-minutes", type=float, default=6.0, help="wall-clock cap per transformer student"
    )
    ap.add_argument("--no-transformer", action="store_true", help="n-gram students only (fast)")
    ap.add_argument(
        "--robustness-only",
        action="store_true",
        help="keep the students of an earlier --json, redo robustness",
    )
    ap.add_argument("--paraphrase", type=int, default=24, help="held-out answers paraphrased by SmolLM2")
    ap.add_argument("--substitution", default="0.1,0.25,0.5", help="synonym substitution fractions")
    ap.add_argument("--probe", action="store_true", help="measure teacher throughput on 16 prompts and stop")
    ap.add_argument("--overhead", action="store_true", help="also measure the LogitsProcessor's overhead")
    ap.add_argument("--overhead-only", action="store_true", help="measure the processor overhead and stop")
    ap.add_argument("--overhead-batch", type=int, default=4)
    ap.add_argument("--overhead-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--threads", type=int, default=2, help="transformer students trained at once (1 thread each)"
    )
    ap.add_argument("--shared", type=Path, default=ROOT / ".." / "shared")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "bench-out" / "forensics_radioactivity")
    ap.add_argument("--json", type=Path, default=ROOT / "bench-out" / "forensics_radioactivity.json")
    ap.add_argument(
        "--forensics-json", type=Path, default=None, help="also write the report's forensics.json"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from distillguard.forensics.hf import load_causal_lm
    from distillguard.forensics.keys import KeyRing, ProviderSecret
    from distillguard.forensics.kgw import KGW
    from distillguard.forensics.reading import read_suspect
    from distillguard.forensics.student import NGramStudent
    from distillguard.forensics.teacher import Answer, cached_generate, hf_generate
    from distillguard.forensics.transformer_student import StudentConfig

    torch.set_num_threads(1)  # see `train_transformer`: single-threaded processes do better on shared cores
    secret = ProviderSecret(np.random.default_rng(args.seed).bytes(32))
    accounts = [f"acct-{i:04d}" for i in range(args.accounts)]
    if not 0 <= args.leaker < args.accounts:
        raise SystemExit(f"--leaker {args.leaker} must be one of the {args.accounts} accounts")
    leaker = accounts[args.leaker]
    key = secret.account_key(leaker)
    scheme = KGW(gamma=args.gamma, delta=args.delta, context_width=args.context_width)
    out: dict[str, Any] = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    }
    out["leaker"] = f"{leaker}@0"

    t0 = time.perf_counter()
    model, tok = load_causal_lm("smollm2")
    model = model.to(getattr(torch, args.dtype))
    out["load_s"] = time.perf_counter() - t0
    print(f"loaded SmolLM2 in {out['load_s']:.1f} s", flush=True)
    prompts = teacher_prompts(args.shared / "data" / "prompts", tok, args.max_prompt_tokens, args.seed)
    if len(prompts) < args.pool + 16:
        raise SystemExit(f"only {len(prompts)} teacher prompts fit, asked for a pool of {args.pool}")
    clock = Clock()
    if args.overhead or args.overhead_only:
        out["overhead"] = measure_overhead(
            model, tok, scheme, key, prompts[-args.overhead_batch :], args.overhead_tokens, args.repeats
        )
        print("overhead:", json.dumps(out["overhead"]), flush=True)
        if args.overhead_only:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=2))
            return

    def teacher(marked: bool, seed: int) -> Any:
        def gen(ps: list[str]) -> Any:
            return hf_generate(
                model, tok, ps, scheme=scheme if marked else None, key=key if marked else None,
                max_new_tokens=args.max_new_tokens, batch_size=len(ps), temperature=args.temperature,
                seed=seed + clock.answers,
            )  # fmt: skip

        return clock.wrap(gen)

    tag = f"{leaker}-{args.dtype}-p{args.pool}-h{args.context_width}-d{args.delta}-g{args.gamma}-t{args.temperature}-n{args.max_new_tokens}-s{args.seed}"
    if args.probe:
        probe = prompts[-16:]
        cached_generate(teacher(True, 99), probe, args.out_dir / f"probe-{tag}.jsonl", batch_size=16)
        print("probe:", json.dumps(clock.to_dict()), flush=True)
        return
    pool = prompts[: args.pool]
    log_t = time.perf_counter()

    def log(done: int, total: int) -> None:
        el = time.perf_counter() - log_t
        print(f"teacher {done}/{total} answers, {clock.tokens} new tokens, {el:.0f} s, "
              f"{clock.tokens / max(clock.seconds, 1e-9):.1f} tok/s", flush=True)  # fmt: skip

    order = by_length(tok, pool)
    done = cached_generate(
        teacher(True, 1), pool, args.out_dir / f"marked-{tag}.jsonl", batch_size=args.batch_size,
        order=order, limit=args.answers, deadline=time.monotonic() + 60 * args.gen_minutes, log=log,
    )  # fmt: skip
    # the first `--answers` in generation order (a larger cache from an earlier run is not all used)
    answered = sorted([i for i in order if i in done][: args.answers])
    out["teacher"] = clock.to_dict()
    out["teacher"]["answers_total"] = len(answered)
    out["teacher"]["tokens_total"] = int(sum(done[i].tokens.size for i in answered))
    print("teacher:", json.dumps(out["teacher"]), flush=True)
    if args.generate_only:
        return
    ring = KeyRing.derive(secret, accounts)
    read_idx = answered[:: args.read_every]
    held = set(read_idx)
    read = [done[i] for i in read_idx]
    train = [done[i] for i in answered if i not in held]
    human = human_texts(args.shared / "data" / "prompts", tok)
    human = [human[i] for i in np.random.default_rng(args.seed).permutation(len(human))]
    fractions = [0.0] + [float(f) for f in args.fractions.split(",") if f.strip()]
    corpora = {f: build_corpus(train, human, f) for f in fractions}
    out["corpora"] = {str(f): c.info for f, c in corpora.items()}
    smallest = min(f for f in fractions if f > 0)
    read_sets = {
        "held-out": read,
        # the watermarked answers in the smallest-fraction corpus: in every watermarked student's corpus
        "training": corpora[smallest].marked,
    }
    read_sets["held-out + training"] = read_sets["held-out"] + read_sets["training"]
    # unwatermarked text in the teacher's domain: every teacher prompt, read as plain text (no prompt).
    # Reading our own watermarked texts excludes their windows, and a prediction the teacher could have
    # written but did not is then more often red (the teacher favoured green): that depletes the green
    # rate for the very key tested. Text that never carried the key has no such bias, and a radioactive
    # student still prefers green continuations in it.
    unmarked = [
        Answer(np.zeros(0, np.int64), np.asarray(x[: args.student_seq * 8], dtype=np.int64))
        for x in tok(all_prompts(args.shared / "data" / "prompts"), add_special_tokens=False)["input_ids"]
    ]
    read_sets["unwatermarked prompts"] = unmarked
    out["read_sets"] = {
        k: {"texts": len(v), "tokens": int(sum(a.tokens.size for a in v))} for k, v in read_sets.items()
    }
    print("corpora:", json.dumps(out["corpora"]), "\nread sets:", json.dumps(out["read_sets"]), flush=True)

    cfg = StudentConfig(
        layers=args.student_layers, d_model=args.student_dim, seq_len=args.student_seq,
        batch_size=args.student_batch, max_vocab=args.student_vocab, steps=args.student_steps, max_seconds=60 * args.student_minutes,
        seed=args.seed,
    )  # fmt: skip
    rows: list[dict[str, Any]] = []
    li = accounts.index(leaker)

    def read_student(kind: str, f: float, student: Any, train_log: dict[str, Any], train_s: float) -> None:
        for name, texts in read_sets.items():
            t1 = time.perf_counter()
            has_prompts = all(a.prompt.size for a in texts)
            r = read_suspect(
                student, scheme, [a.tokens for a in texts],
                prompts=[a.prompt for a in texts] if has_prompts else None, ring=ring,
            )  # fmt: skip
            assert r.attribution is not None
            row = {
                "student": kind, "fraction_watermarked": f, "read": name,
                "corpus_tokens": corpora[f].info["tokens"], "train_s": train_s, **train_log,
                "positions_read": r.positions_read, "windows_scored": r.windows_scored,
                "family_p_value": r.p_value, "leaker_raw_p_value": float(r.attribution.p_values[li]),
                "leaker_z": float(r.attribution.z[li]), "implicated": r.attribution.implicated,
                "read_s": time.perf_counter() - t1,
            }  # fmt: skip
            row.update(extrapolate(row["leaker_z"], r.windows_scored, args.accounts))
            rows.append(row)
            print("student:", json.dumps(row), flush=True)
        out["students"] = rows
        args.json.write_text(json.dumps(out, indent=2))  # partial results survive an interrupted run

    # transformer students train in worker processes while the n-gram students and the robustness
    # table are computed here: one single-threaded process per student, `--threads` at a time (on
    # shared cores one torch process with several threads waits at every barrier for a descheduled one)
    pool_ex = ProcessPoolExecutor(max_workers=args.threads, mp_context=mp.get_context("spawn"))
    futures = {} if args.no_transformer or args.robustness_only else {
        f: pool_ex.submit(train_transformer, corpora[f].docs, cfg) for f in fractions
    }  # fmt: skip
    if args.robustness_only:
        rows.extend(json.loads(args.json.read_text())["students"])
        out["students"] = rows  # kept as they were: only the robustness table is redone
    for f in fractions if not args.robustness_only else []:
        t0 = time.perf_counter()
        ngram = NGramStudent.fit(corpora[f].docs, order=args.order)
        read_student("ngram", f, ngram, {}, time.perf_counter() - t0)

    # robustness of text detection: synonym substitution and a paraphrase by the teacher itself
    para_prompts = [PARAPHRASE.format(text=tok.decode(a.tokens, skip_special_tokens=True)) for a in read]
    para_prompts = para_prompts[: args.paraphrase]
    para_clock = Clock()

    def para_gen(ps: list[str]) -> Any:
        return hf_generate(
            model, tok, ps, scheme=None, key=None, max_new_tokens=args.max_new_tokens + 32,
            batch_size=len(ps), temperature=0.7, seed=7 + para_clock.answers,
        )  # fmt: skip

    para = cached_generate(
        para_clock.wrap(para_gen), para_prompts, args.out_dir / f"paraphrase-{tag}-r{args.read_every}.jsonl",
        batch_size=args.batch_size,
    )  # fmt: skip
    out["paraphrase_generation"] = para_clock.to_dict()
    paraphrased = [tok.decode(para[i].tokens, skip_special_tokens=True) for i in range(len(para_prompts))]
    out["robustness"] = robustness(
        [tok.decode(a.tokens, skip_special_tokens=True) for a in read], paraphrased, tok, scheme, key, ring,
        f"{leaker}@0", [float(x) for x in args.substitution.split(",") if x.strip()], args.seed,
    )  # fmt: skip
    args.json.write_text(json.dumps(out, indent=2))
    for f, fut in futures.items():
        student, tl, secs = fut.result()
        print(f"transformer student {f:.0%}: {json.dumps(tl)}", flush=True)
        read_student("transformer", f, student, tl, secs)
    pool_ex.shutdown()
    print_table(out)
    if args.forensics_json is not None:
        write_forensics(args.forensics_json, out, scheme)


if __name__ == "__main__":
    main()
