"""The streaming scorer uses the batch signals: same account, same log, same score."""

from pathlib import Path

import orjson

from distillguard.detect.online import OnlineScorer
from distillguard.detect.pipeline import scan
from distillguard.exchange import validate

from ..conftest import LogBuilder


def test_online_matches_batch_own_score(builder: LogBuilder, corpora, tmp_path: Path) -> None:
    for i in range(20):
        builder.chat_user(f"user{i:02d}", corpora["arena"], 15, ip=f"198.51.100.{i}")
    builder.orca_harvester("farm", corpora["gsm8k"], 300, ["203.0.113.9"])
    log = builder.write(tmp_path / "log.jsonl")
    res, _ = scan([log], tmp_path / "out")
    batch = dict(zip(res.accounts.ids.tolist(), res.accounts.score.tolist(), strict=True))
    peers = res.accounts.cols
    import numpy as np

    days = np.maximum(peers["days_active"], 1)
    sc = OnlineScorer(
        peer_per_day=float(np.median(peers["n_exchanges"] / days)),
        peer_tok_per_day=float(np.median(peers["out_tokens_sum"] / days)),
    )
    for line in log.read_bytes().splitlines():
        sc.learn_one(validate(orjson.loads(line)))
    for acc in ("farm", "user03"):
        v = sc.score_one(acc)
        assert abs(v.score - batch[acc]) < 1e-9, acc
    assert sc.score_one("farm").level == "block"
    assert sc.score_one("farm").evidence[0].signal.startswith("fingerprint.")
    assert sc.score_one("nobody").level == "ok"
    sc.close()


def test_online_flags_early_and_caches(builder: LogBuilder, corpora) -> None:
    builder.orca_harvester("farm", corpora["gsm8k"], 200, ["203.0.113.9"])
    sc = OnlineScorer()
    flagged_at = None
    for k, row in enumerate(sorted(builder.rows, key=lambda r: r["ts"]), start=1):
        sc.learn_one(validate(row))
        if flagged_at is None and sc.score_one("farm").level in ("suspect", "block"):
            flagged_at = k
    assert flagged_at is not None and flagged_at <= 30
    v1 = sc.score_one("farm")
    assert sc.score_one("farm") is v1  # cached until enough new exchanges arrive
    sc.close()


def test_online_state_is_bounded_and_keeps_the_busiest(builder: LogBuilder, corpora) -> None:
    builder.orca_harvester("farm", corpora["gsm8k"], 60, ["203.0.113.9"])
    for i in range(12):
        builder.chat_user(f"user{i:02d}", corpora["arena"], 3, ip=f"198.51.100.{i}")
    sc = OnlineScorer(max_accounts=5)
    for row in sorted(builder.rows, key=lambda r: r["ts"]):
        sc.learn_one(validate(row))
    # The harvester, learnt all day, stays; of thirteen accounts only the five most recent are held.
    assert len(sc) == 5 and "farm" in sc
    assert sc.score_one("farm").level in ("suspect", "block")
    # Scoring a given window keeps no state of its own.
    rows = [r for r in builder.rows if r["account_id"] == "farm"]
    from distillguard.exchange import to_row

    v = OnlineScorer().score_rows("farm", [to_row(validate(r)) for r in rows], (10.0, 1000.0))
    assert v.level in ("suspect", "block") and v.evidence
    sc.close()
