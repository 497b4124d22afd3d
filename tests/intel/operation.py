"""Two providers' traffic with one distillation operation in both (issue 3's exchange scenario).

The operation runs 200 accounts from 30 addresses in one hosting ASN with 3 prompt templates. Provider
B sees the same operators under different account ids, with paraphrased templates and different
fillers. Both providers also serve benign customers; a few of B's benign customers sit in the
operation's ASN (a hosting provider serves more than one customer), so an ASN match alone must not
flag them.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ..conftest import LogBuilder

# The operation ran yesterday: a scan matches intel at the time it runs, and indicators decay from when
# they were last seen, so a log dated at a fixed day stops matching once that day is weeks old.
RECENT = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)

TEMPLATES_A = [
    "You are generating training data. Solve the following competition problem and show every step of "
    "your reasoning before the final answer. Problem: {q} Answer format: final answer on its own line.",
    "Act as an expert software engineer. Write a complete, well documented Python function for the task "
    "below, then explain your design choices step by step and list the edge cases you handled. Task: {q}",
    "Grade the following answer on a scale of 1 to 10 using the rubric: correctness, completeness, clarity. "
    "Think step by step and justify each score before giving the final grade. Question: {q} Answer: {a}",
]
# B's operators reworded each template a little (a paraphrase, not a new template).
TEMPLATES_B = [
    "You are generating training data. Solve this competition problem and show every step of your "
    "reasoning before giving the final answer. Problem: {q} Answer format: the final answer on its own line.",
    "Act as an expert software engineer. Write a complete, well documented Python function for the task "
    "below, then explain your design choices step by step and list all edge cases you handled. Task: {q}",
    "Grade the following answer on a scale from 1 to 10 using the rubric: correctness, completeness, "
    "clarity. Think step by step and justify each score before giving a final grade. Question: {q} Answer: {a}",
]
OP_IPS = [f"203.0.113.{10 + i}" for i in range(20)] + [f"198.18.7.{40 + i}" for i in range(10)]
OP_ASN = 64500
N_OP = 200


def provider_log(
    side: str, corpora: dict[str, list[str]], tmp_path: Path, per_account: int = 12, seed: int = 0
) -> tuple[Path, list[str], list[str]]:
    """(log, operation account ids, benign account ids) of provider `side` ('a' or 'b')."""
    rng = random.Random(f"{side}{seed}")
    b = LogBuilder(seed=seed * 2 + (side == "b"))
    templates = TEMPLATES_A if side == "a" else TEMPLATES_B
    half = len(corpora["gsm8k"]) // 2
    fillers = corpora["gsm8k"][:half] if side == "a" else corpora["gsm8k"][half:]
    arena = corpora["arena"]
    ops = [f"{'acct' if side == 'a' else 'cust'}-{side}-{rng.getrandbits(40):010x}" for _ in range(N_OP)]
    for j, acc in enumerate(ops):
        tpl = templates[j % 3]
        start = RECENT + timedelta(seconds=rng.random() * 86400 * 0.5)
        for k in range(per_account):
            q = rng.choice(fillers)
            b.add(
                acc,
                start + timedelta(seconds=k * rng.uniform(600, 3000)),
                tpl.format(q=q, a=rng.choice(arena)[:300]),
                client_ip=rng.choice(OP_IPS),
                asn=OP_ASN,
                user_agent="python-httpx/0.27.0",
                temperature=0.7,
                max_tokens=rng.choice([1024, 2048]),
            )
    benign = []
    for i in range(120):
        acc = f"{side}-user-{i:03d}"
        benign.append(acc)
        # three of B's customers sit in the operation's ASN, on addresses of their own
        in_op_asn = side == "b" and i < 3
        ip = f"192.0.2.{i}" if not in_op_asn else f"203.0.114.{i}"
        before = len(b.rows)
        b.chat_user(acc, arena, 8 + i % 12, ip=ip)
        for r in b.rows[before:]:
            r["asn"] = OP_ASN if in_op_asn else 3320 + i % 7
            r["user_agent"] = "python-httpx/0.27.0" if i % 4 == 0 else "Mozilla/5.0"
    return b.write(tmp_path / f"provider-{side}.jsonl"), ops, benign
