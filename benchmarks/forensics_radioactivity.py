"""Radioactivity on a real model, on CPU: SmolLM2-135M-Instruct teaches, n-gram students learn, reading mode tests.

1. Overhead of the watermark LogitsProcessor: the same batched greedy generation with and without it,
   run side by side (alternating, best of `--repeats`), reported as a ratio of time per generated token.
2. The teacher answers prompts from ../shared/data/prompts: one set watermarked with the leaking
   account's key (KGW), another without (the non-watermarked share of a student's corpus), and held-out
   watermarked answers to read through the students.
3. Students (count-based n-gram models over the teacher's token ids) are trained on corpora in which
   `--fractions` of the texts are watermarked, plus a control with none; reading mode tests each against
   `--accounts` account keys (Holm) and names the implicated account.

Sizes are flags: the default is a SMALL end-to-end run for 2 shared cores; the issue's full demonstration
(thousands of answers, a transformer student) needs far more teacher tokens than a shared CPU makes in
an hour, so this script is also the harness for that run on a bigger machine.

    nice -n 10 .venv/bin/python benchmarks/forensics_radioactivity.py --prompts 48 --read 16 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT_FILES = [
    "vicuna_bench.jsonl",
    "arena_hard_v0.1.jsonl",
    "self_instruct_user_oriented.jsonl",
    "self_instruct_seed_tasks.jsonl",
    "gsm8k_test.jsonl",
]


def load_prompts(root: Path, n: int, seed: int) -> list[str]:
    from distillguard.forensics.suspect import read_prompts

    pool: list[str] = []
    for name in PROMPT_FILES:  # a handful of files
        path = root / name
        if path.is_file():
            pool.extend(read_prompts(path))
    if len(pool) < n:
        raise SystemExit(f"only {len(pool)} prompts under {root}, asked for {n}")
    idx = np.random.default_rng(seed).permutation(len(pool))[:n]
    return [pool[i] for i in idx]


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--prompts", type=int, default=48, help="teacher answers per corpus (watermarked and clean)"
    )
    ap.add_argument("--read", type=int, default=16, help="held-out watermarked answers read through students")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--fractions", default="0.05,0.25,1.0")
    ap.add_argument("--accounts", type=int, default=100, help="account keys tested (one of them leaked)")
    ap.add_argument("--order", type=int, default=3, help="n-gram student order")
    ap.add_argument("--context-width", type=int, default=2, help="KGW context width h")
    ap.add_argument("--overhead-batch", type=int, default=4)
    ap.add_argument("--overhead-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--overhead-only", action="store_true", help="measure the processor overhead and stop")
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()

    import torch

    from distillguard.forensics.hf import load_causal_lm
    from distillguard.forensics.keys import KeyRing, ProviderSecret
    from distillguard.forensics.kgw import KGW
    from distillguard.forensics.reading import read_suspect
    from distillguard.forensics.student import NGramStudent
    from distillguard.forensics.teacher import hf_generate

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    secret = ProviderSecret(np.random.default_rng(args.seed).bytes(32))
    accounts = [f"acct-{i:04d}" for i in range(args.accounts)]
    leaker = accounts[args.accounts // 3]
    ring = KeyRing.derive(secret, accounts)
    key = secret.account_key(leaker)
    scheme = KGW(gamma=0.25, delta=2.0, context_width=args.context_width)
    out: dict = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}

    t0 = time.perf_counter()
    model, tok = load_causal_lm("smollm2")
    out["load_s"] = time.perf_counter() - t0
    print(f"loaded SmolLM2 in {out['load_s']:.1f} s", flush=True)

    n = args.prompts
    prompts = load_prompts(
        args.shared / "data" / "prompts", 2 * n + args.read + args.overhead_batch, args.seed
    )
    if not args.skip_overhead:
        out["overhead"] = measure_overhead(
            model, tok, scheme, key, prompts[-args.overhead_batch :], args.overhead_tokens, args.repeats
        )
        print("overhead:", json.dumps(out["overhead"]), flush=True)
    if args.overhead_only:
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
        return

    def gen(ps: list[str], marked: bool, seed: int) -> tuple[list, float]:
        t = time.perf_counter()
        ans = hf_generate(
            model, tok, ps, scheme=scheme if marked else None, key=key if marked else None,
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=seed,
        )  # fmt: skip
        return ans, time.perf_counter() - t

    marked, t_m = gen(prompts[:n], True, 1)
    clean, t_c = gen(prompts[n : 2 * n], False, 2)
    read, t_r = gen(prompts[2 * n : 2 * n + args.read], True, 3)
    n_tok = sum(a.tokens.size for a in marked + clean + read)
    out["teacher"] = {"answers": len(marked) + len(clean) + len(read), "tokens": n_tok, "s": t_m + t_c + t_r}
    out["teacher"]["tokens_per_s"] = n_tok / out["teacher"]["s"]
    det = scheme.score([a.tokens for a in read], key)
    out["teacher"]["read_texts_p_value"] = det.p_value
    print("teacher:", json.dumps(out["teacher"]), flush=True)

    students = []
    for frac in [0.0] + [float(f) for f in args.fractions.split(",") if f.strip()]:
        k = round(frac * n)
        corpus = [a.tokens for a in marked[:k]] + [a.tokens for a in clean[k:]]
        corpus = [c for c in corpus if c.size]
        st = NGramStudent.fit(corpus, order=args.order)
        r = read_suspect(st, scheme, [a.tokens for a in read], prompts=[a.prompt for a in read], ring=ring)
        assert r.attribution is not None
        row = {
            "fraction_watermarked": frac,
            "corpus_tokens": int(sum(c.size for c in corpus)),
            "windows_scored": r.windows_scored,
            "family_p_value": r.p_value,
            "leaker_raw_p_value": float(r.attribution.p_values[accounts.index(leaker)]),
            "implicated": r.attribution.implicated,
            "leaker": f"{leaker}@0",
        }
        students.append(row)
        print("student:", json.dumps(row), flush=True)
    out["students"] = students
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
