"""Campaign linking and inheritance: a many-account operation whose template wraps long variable content
is one campaign and flagged, while benign users behind the same addresses keep their own verdicts."""

import random
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from distillguard.detect.campaigns import _word_pairs
from distillguard.detect.pipeline import scan

from ..conftest import T0, LogBuilder

# A template wrapped around fillers as long as itself: whole prompts of two accounts differ too much to
# fall into one MinHash cluster, but the frame they repeat is the same.
FRAME = (
    "The following item comes from our evaluation set. {q} Work it out carefully, writing down each "
    "intermediate result, and end with the number alone on the last line of your reply."
)
NAT_IPS = [f"198.18.20.{k}" for k in range(8)]
BUCKETS = 30  # ten-minute buckets of the working morning both groups are active in


def _log(
    corpora: dict[str, list[str]], tmp_path: Path, n_op: int = 120, per: int = 20
) -> tuple[Path, list, list]:
    rng = random.Random(7)
    b = LogBuilder(seed=3)
    ops = [f"op{j:03d}" for j in range(n_op)]
    for acc in ops:
        # a few requests each, in some of the morning's buckets: no account is much on its own
        for k in sorted(rng.sample(range(BUCKETS), per)):
            b.add(
                acc,
                T0 + timedelta(hours=8, seconds=k * 600 + rng.random() * 300),
                FRAME.format(q=rng.choice(corpora["gsm8k"])),
                client_ip=rng.choice(NAT_IPS),
                user_agent="python-httpx/0.27.0",
                temperature=0.7,
                max_tokens=2048,
            )
    # Colleagues behind the same egress addresses (a shared NAT), busy in the same hours: linked to the
    # operation by addresses and timing, but they send nothing of its job.
    nat = [f"colleague{i:02d}" for i in range(12)]
    for acc in nat:
        for k in range(BUCKETS):
            b.add(
                acc,
                T0 + timedelta(hours=8, seconds=k * 600 + rng.random() * 300),
                rng.choice(corpora["arena"]),
                client_ip=rng.choice(NAT_IPS),
                user_agent="python-httpx/0.27.0",
                temperature=0.7,
                max_tokens=800,
            )
    for i in range(40):
        b.chat_user(f"user{i:02d}", corpora["arena"], 10 + i % 15, ip=f"192.0.2.{i}")
    return b.write(tmp_path / "log.jsonl"), ops, nat


def test_template_frame_links_and_flags_an_operation_but_not_its_nat(corpora, tmp_path: Path) -> None:
    log, ops, nat = _log(corpora, tmp_path)
    res, _ = scan([log], tmp_path / "out")
    pos = {a: i for i, a in enumerate(res.accounts.ids.tolist())}
    oi = np.array([pos[a] for a in ops])
    ni = np.array([pos[a] for a in nat])
    lab = res.campaigns.label
    # one campaign holds the whole operation, linked by the template frame they repeat
    assert (lab[oi] >= 0).all() and len(set(lab[oi].tolist())) == 1
    c = int(lab[oi[0]])
    assert res.campaigns.links[c].get("frame", 0) > 0
    assert res.campaigns.job_linked[oi].all()
    # no member is much on its own; the campaign is, and the members that run its job inherit it
    assert np.median(res.accounts.score[oi]) < 0.05
    assert res.campaign_scores is not None and res.campaign_scores.score[c] >= 0.5
    flagged = np.isin(np.array(res.levels, dtype=object)[oi], ["suspect", "block"])
    assert flagged.mean() >= 0.9
    ev = {e.signal: e for e in res.evidence[oi[0]]}
    assert "prompt template" in ev["campaign.member"].detail
    # the colleagues behind the NAT share addresses and hours with it (they are linked into the campaign),
    # not its job: they keep their own scores
    assert (lab[ni] == c).all()
    assert not res.campaigns.job_linked[ni].any()
    assert np.array_equal(res.final_score[ni], res.accounts.score[ni])
    assert all(res.levels[i] == "ok" for i in ni)
    assert all(
        lvl == "ok" for a, lvl in zip(res.accounts.ids, res.levels, strict=True) if a.startswith("user")
    )


def test_word_pairs_do_not_depend_on_the_batch() -> None:
    """A text's word pairs are the same alone or among others (frames of accounts compare across batches)."""
    texts = ["the quick brown fox jumps over", "a b c", "", " grade this answer step by step", "x"]
    d, h = _word_pairs(pa.array(texts))
    for i, t in enumerate(texts):
        _, h1 = _word_pairs(pa.array([t]))
        assert set(h[d == i].tolist()) == set(h1.tolist())
    assert len(set(h[d == 0].tolist())) == 5 and not (d == 2).any()
