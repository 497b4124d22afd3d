"""Client slices: a harvesting client hidden among an account's ordinary traffic is scored on its own."""

from datetime import timedelta
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from distillguard.config import Config, ScanConfig
from distillguard.detect import features
from distillguard.detect.online import OnlineScorer
from distillguard.detect.pipeline import scan
from distillguard.detect.signals.base import signals
from distillguard.exchange import validate
from distillguard.store.engine import DuckDBEngine

from ..conftest import T0, LogBuilder


def _cot_client(builder: LogBuilder, account: str, questions: list[str], n: int) -> None:
    """A script: single-turn zero-shot-CoT prompts, a fixed 16k output budget, steady round the clock."""
    gap = 86400 / n
    for k in range(n):
        builder.add(
            account,
            T0 + timedelta(seconds=k * gap + builder.rng.random() * gap * 0.3),
            f"Q: {questions[k % len(questions)]} A: Let's think step by step.",
            max_tokens=16384,
            response="Step 1: ... Step 2: ... " * 60,
            completion_tokens=700,
        )


def _proxy_log(builder: LogBuilder, corpora: dict[str, list[str]], tmp_path: Path) -> Path:
    for i in range(30):
        builder.chat_user(f"user{i:02d}", corpora["arena"], 10 + i % 15, ip=f"198.51.100.{i}")
    # One account: a person's chat (follow-ups that quote the answers) and a harvesting script.
    builder.chat_user("proxy", corpora["arena"], 250, ip="192.0.2.7")
    _cot_client(builder, "proxy", corpora["gsm8k"] + corpora["arena"], 250)
    return builder.write(tmp_path / "log.jsonl")


def test_harvest_slice_is_not_diluted(builder: LogBuilder, corpora, tmp_path: Path) -> None:
    log = _proxy_log(builder, corpora, tmp_path)
    res, _ = scan([log], tmp_path / "out")
    off, _ = scan([log], tmp_path / "off", cfg=Config(scan=ScanConfig(slice_min_exchanges=0)))
    i = res.accounts.ids.tolist().index("proxy")
    # Scored as one account, the chat's follow-ups explain the script away.
    assert off.levels[i] in ("ok", "watch")
    assert not any(e.signal == "slice.client" for e in off.evidence[i])
    # Its client slice, scored alone, is a harvest.
    assert res.levels[i] in ("suspect", "block")
    ev = res.evidence[i][0]
    assert ev.signal == "slice.client"
    assert abs(ev.value - res.accounts.score[i]) < 1e-6 and ev.value > off.accounts.score[i]
    assert ev.weight > 0 and ev.threshold == 0.5 and ev.examples
    assert "250 of its" in ev.detail and "max_tokens 16384" in ev.detail and "cot.elicitation" in ev.detail
    # The slice's example exchanges are the script's, not the chat's.
    rows = {r["exchange_id"]: r for r in builder.rows}
    assert all(rows[x]["max_tokens"] == 16384 for x in ev.examples)
    # The evidence is written out like any other.
    line = next(
        orjson.loads(x)
        for x in (tmp_path / "out" / "evidence.jsonl").read_bytes().splitlines()
        if b'"proxy"' in x
    )
    assert line["evidence"][0]["signal"] == "slice.client"
    # People with one client are not rescored: their slice is the account.
    for u in range(30):
        j = res.accounts.ids.tolist().index(f"user{u:02d}")
        assert res.levels[j] == "ok" and res.accounts.score[j] == off.accounts.score[j]


def _team(builder: LogBuilder, corpora: dict[str, list[str]], temps: tuple[float, ...]) -> None:
    """A person's chat, and a small summarising job at the given temperatures (in turn)."""
    builder.chat_user("team", corpora["arena"], 120, ip="192.0.2.8")
    for k in range(60):
        builder.add(
            "team",
            T0 + timedelta(hours=2, seconds=k * 40),
            f"Summarise this support ticket in two sentences: {corpora['arena'][k % len(corpora['arena'])]}",
            max_tokens=200,
            temperature=temps[k % len(temps)],
            response="The customer reports a problem. They want a fix.",
            completion_tokens=25,
        )


def _rows_query(out: Path, sql: str) -> pa.Table:
    """`sql` over the materialised row columns (`dg_rows`) of a scan's exchanges."""
    eng = DuckDBEngine()
    try:
        eng.register_parquet("exchanges", out / "exchanges.parquet")
        features.materialize_rows(eng, [cls() for cls in signals().values()])
        return eng.query(sql)
    finally:
        eng.close()


def test_two_benign_clients_stay_ok(builder: LogBuilder, corpora, tmp_path: Path) -> None:
    """A person's chat plus a small nightly summarising job: each slice is ordinary on its own."""
    for i in range(30):
        builder.chat_user(f"user{i:02d}", corpora["arena"], 10 + i % 15, ip=f"198.51.100.{i}")
    _team(builder, corpora, (0.0,))
    log = builder.write(tmp_path / "log.jsonl")
    res, _ = scan([log], tmp_path / "out")
    i = res.accounts.ids.tolist().index("team")
    assert res.levels[i] == "ok"


def test_harness_comparison_spans_its_slices(builder: LogBuilder, corpora, tmp_path: Path) -> None:
    """Evaluation harnesses send each model its own parameters. Reasoning effort (only some models take
    it) is not part of the client key; a per-model output budget is, but the same prompts put to another
    model still count as a comparison in each slice, so the harness stays explained away (its slice may
    score like a one-budget harness, no higher)."""
    for i in range(30):
        builder.chat_user(f"user{i:02d}", corpora["arena"], 10 + i % 15, ip=f"198.51.100.{i}")
    qs = corpora["gsm8k"][:300]
    t = T0 + timedelta(hours=9)
    runs = [("harness", "acme-large-2", 2048, None), ("harness", "acme-reason-1", 2048, "medium")]
    runs += [("harness2", "acme-large-2", 2048, None), ("harness2", "acme-mini-2", 4096, None)]
    for acct, model, budget, effort in runs:
        for q in qs:
            t += timedelta(seconds=1.5)
            kw = {"reasoning_effort": effort} if effort else {}
            builder.add(
                acct,
                t,
                f"{q}\nLet's think step by step.",
                model=model,
                max_tokens=budget,
                temperature=0.0,
                **kw,
            )
    log = builder.write(tmp_path / "log.jsonl")
    res, _ = scan([log], tmp_path / "out")
    keys = _rows_query(
        tmp_path / "out", "SELECT account_id, count(DISTINCT ckey) AS k FROM dg_rows GROUP BY account_id"
    )
    k = dict(zip(keys.column("account_id").to_pylist(), keys.column("k").to_pylist(), strict=True))
    assert k["harness"] == 1 and k["harness2"] == 2
    for acct in ("harness", "harness2"):
        i = res.accounts.ids.tolist().index(acct)
        assert res.levels[i] in ("ok", "watch"), acct
        assert all(e.signal != "slice.client" or e.value < 0.3 for e in res.evidence[i]), acct


def test_online_scores_slices_like_the_batch(builder: LogBuilder, corpora, tmp_path: Path) -> None:
    log = _proxy_log(builder, corpora, tmp_path)
    res, _ = scan([log], tmp_path / "out")
    cols = res.accounts.cols
    days = np.maximum(cols["days_active"], 1)
    sc = OnlineScorer(
        peer_per_day=float(np.median(cols["n_exchanges"] / days)),
        peer_tok_per_day=float(np.median(cols["out_tokens_sum"] / days)),
    )
    for line in log.read_bytes().splitlines():
        sc.learn_one(validate(orjson.loads(line)))
    v = sc.score_one("proxy")
    i = res.accounts.ids.tolist().index("proxy")
    assert abs(v.score - res.accounts.score[i]) < 1e-9
    assert v.evidence[0].signal == "slice.client"
    sc.close()


def _sweep_client(builder: LogBuilder, account: str, questions: list[str], n_prompts: int) -> None:
    """A script that samples each prompt at three temperatures (0.0 to 1.0 in steps of 0.05) with
    log-probabilities and a fixed budget: one program, a dozen request configurations."""
    temps = [k / 20 for k in range(21)]
    gap = 86400 / (3 * n_prompts)
    t = T0
    for q in questions[:n_prompts]:
        for temp in builder.rng.sample(temps, 3):
            t += timedelta(seconds=gap * (0.9 + 0.2 * builder.rng.random()))
            builder.add(
                account,
                t,
                q,
                max_tokens=4096,
                temperature=temp,
                logprobs=True,
                top_logprobs=5,
                response="A long answer in the teacher's words. " * 40,
                completion_tokens=400,
            )


def test_a_sweeping_program_is_one_slice(builder: LogBuilder, corpora, tmp_path: Path) -> None:
    """A program that varies its sampling parameters (a temperature sweep) sends a dozen configurations,
    each too small to be scored alone; its output settings (budget, log-probabilities) are one, and that
    slice is scored. A person's chat and a small job at two temperatures in another account stay ok."""
    for i in range(30):
        builder.chat_user(f"user{i:02d}", corpora["arena"], 10 + i % 15, ip=f"198.51.100.{i}")
    builder.chat_user("proxy", corpora["arena"], 150, ip="192.0.2.7")
    _sweep_client(builder, "proxy", corpora["gsm8k"] + corpora["arena"], 60)
    _team(builder, corpora, (0.0, 0.3))
    log = builder.write(tmp_path / "log.jsonl")
    res, _ = scan([log], tmp_path / "out")
    biggest = _rows_query(
        tmp_path / "out",
        "SELECT max(c) AS c FROM (SELECT count(*) AS c FROM dg_rows WHERE account_id = 'proxy' "
        "AND max_tokens = 4096 GROUP BY ckey)",
    )
    # No one configuration of the script is big enough to be a client slice ...
    assert biggest.column("c")[0].as_py() < ScanConfig().slice_min_exchanges
    # ... but the program is.
    i = res.accounts.ids.tolist().index("proxy")
    assert res.levels[i] in ("suspect", "block")
    ev = res.evidence[i][0]
    assert ev.signal == "slice.client"
    assert "180 of its" in ev.detail and "temperatures 0" in ev.detail and "temperature_sweep" in ev.detail
    rows = {r["exchange_id"]: r for r in builder.rows}
    assert all(rows[x]["max_tokens"] == 4096 for x in ev.examples)
    for acct in ("team", *(f"user{u:02d}" for u in range(30))):
        assert res.levels[res.accounts.ids.tolist().index(acct)] == "ok", acct
