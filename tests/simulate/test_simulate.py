"""`distillguard simulate`: determinism, canonical lines, labels, population shape and persona behaviour."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import ipaddress
import itertools
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.exchange import validate
from distillguard.ingest.native import dump_line
from distillguard.simulate import PERSONAS, STRATEGIES, SimConfig, build, labels_path_for, simulate
from distillguard.simulate.base import DAY, RELEASE_MODEL
from distillguard.simulate.run import merged, plan_counts

SMALL = SimConfig(accounts=80, days=2, seed=11, volume=0.2)


@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict[str, Any]]]:
    d = tmp_path_factory.mktemp("sim")
    out = d / "log.jsonl"
    simulate(SMALL, out, workers=1)
    rows = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    return out, labels_path_for(out), rows


def read_labels(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        assert r.fieldnames == ["account_id", "label", "campaign_id", "strategy"]
        return {row["account_id"]: row for row in r}


def test_same_seed_same_bytes(tmp_path: Path, small_log: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    out, labels, _ = small_log
    again = tmp_path / "again.jsonl.gz"
    simulate(SMALL, again, workers=1)
    assert gzip.decompress(again.read_bytes()) == out.read_bytes()
    assert labels_path_for(again).read_bytes() == labels.read_bytes()
    other = tmp_path / "other.jsonl"
    simulate(SimConfig(accounts=60, days=1, seed=12, volume=0.1), other, workers=1)
    assert other.read_bytes()[:5000] != out.read_bytes()[:5000]


def test_worker_processes_write_the_same_bytes(tmp_path: Path) -> None:
    cfg = SimConfig(accounts=60, days=1, seed=3, volume=0.1)
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    simulate(cfg, one, workers=1)
    simulate(cfg, two, workers=2)
    assert one.read_bytes() == two.read_bytes()


def test_every_line_is_a_canonical_exchange(small_log: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    out, _, rows = small_log
    lines = out.read_bytes().splitlines(keepends=True)
    assert len(lines) > 5000
    ids = set()
    prev = validate(rows[0]).ts
    for line, row in zip(lines, rows, strict=True):
        ex = validate(row)
        # What the fast writer wrote is exactly what the native adapter's writer writes.
        assert dump_line(ex) == line
        assert ex.ts >= prev  # sorted by time
        prev = ex.ts
        ids.add(ex.exchange_id)
        assert ex.ts.date() in (date(2026, 11, 1), date(2026, 11, 2))
        ipaddress.ip_address(ex.client_ip)
    assert len(ids) == len(lines)


def test_labels_match_the_log(small_log: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    _, labels_path, rows = small_log
    labels = read_labels(labels_path)
    assert len(labels) == SMALL.accounts
    in_log = {r["account_id"] for r in rows}
    assert in_log <= set(labels)
    for row in labels.values():
        assert row["label"] in ("benign", "attack")
        if row["label"] == "benign":
            assert row["campaign_id"] == "" and row["strategy"] in PERSONAS
        else:
            assert row["campaign_id"] and row["strategy"] in STRATEGIES
    assert {r["strategy"] for r in labels.values()} == set(PERSONAS) | set(STRATEGIES)
    hydra = {r["campaign_id"] for r in labels.values() if r["strategy"] == "hydra"}
    assert len(hydra) == 1
    assert sum(r["strategy"] == "hydra" for r in labels.values()) >= 20


def test_nothing_in_the_log_names_the_label(small_log: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    _, _, rows = small_log
    assert all(r["account_id"].startswith("acct_") and len(r["account_id"]) == 21 for r in rows)
    for r in rows:
        for k in ("account_id", "org_id", "api_key_id", "user_agent", "exchange_id", "end_user"):
            v = (r.get(k) or "").lower()
            assert "attack" not in v and "hydra" not in v and "benign" not in v
        assert not r.get("attributes")


def test_population_shape() -> None:
    benign, attack = plan_counts(SimConfig(accounts=1000))
    assert attack["hydra"] >= 100
    assert 0.80 <= sum(benign.values()) / 1000 <= 0.88
    assert all(attack[s] >= 2 for s in STRATEGIES)
    benign, attack = plan_counts(SimConfig(accounts=700))
    assert attack["hydra"] >= 100
    benign, attack = plan_counts(SimConfig(accounts=200))
    assert 20 <= attack["hydra"] < 100
    assert 0.75 <= sum(benign.values()) / 200 <= 0.85
    benign, attack = plan_counts(SimConfig(accounts=5000))
    assert 0.84 <= sum(benign.values()) / 5000 <= 0.86
    with pytest.raises(ValueError):
        plan_counts(SimConfig(accounts=30))
    pop = build(SimConfig(accounts=1000, days=1))
    ids = [a.account_id for a in pop.accounts]
    assert len(set(ids)) == 1000
    # Ids are dealt at random: sorted by id, labels are mixed, not in blocks.
    order = [a.label for a in sorted(pop.accounts, key=lambda a: a.account_id)]
    assert sum(a != b for a, b in itertools.pairwise(order)) > 100


def test_hydra_many_small_accounts_on_rotating_proxies() -> None:
    pop = build(SimConfig(accounts=700, days=2, seed=5))
    hydra = [a for a in pop.accounts if a.strategy == "hydra"]
    assert len(hydra) >= 100
    per: Counter[tuple[int, int]] = Counter()
    nets: set[str] = set()
    uas: set[str] = set()
    for ts, idx, _, rec in merged(pop, hydra):
        per[idx, int((ts - pop.world.start) // DAY)] += 1
        nets.add(rec["client_ip"].rsplit(".", 1)[0])
        uas.add(rec["user_agent"])
    assert max(per.values()) < 50
    assert len({i for i, _ in per}) >= 90  # nearly every account is active
    assert len(nets) > 100  # many /24s
    assert len(uas) <= 2


def test_strategy_include_and_exclude() -> None:
    only = build(SimConfig(accounts=100, days=1, strategies=("orca_cot", "low_and_slow")))
    assert {a.strategy for a in only.accounts if a.label == "attack"} == {"orca_cot", "low_and_slow"}
    without = build(SimConfig(accounts=200, days=1, exclude=("hydra", "mixed")))
    got = {a.strategy for a in without.accounts if a.label == "attack"}
    assert got == set(STRATEGIES) - {"hydra", "mixed"}
    benign_only = build(SimConfig(accounts=50, days=1, strategies=()))
    assert {a.label for a in benign_only.accounts} == {"benign"}
    with pytest.raises(ValueError, match="unknown strategies"):
        build(SimConfig(accounts=100, strategies=("nope",)))


def _by_account(
    rows: list[dict[str, Any]], labels: dict[str, dict[str, str]]
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[r["account_id"]].append(r)
    return out


def test_follow_ups_carry_the_previous_answer(small_log: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    _, labels_path, rows = small_log
    labels = read_labels(labels_path)
    checked = Counter()
    for acct, rs in _by_account(rows, labels).items():
        strategy = labels[acct]["strategy"]
        answers = set()
        for r in rs:
            msgs = r["messages"]
            if len(msgs) > 1:
                assert [m["role"] for m in msgs][-1] == "user"
                prev = [m["content"] for m in msgs if m["role"] == "assistant"][-1]
                if strategy in ("chat", "power_user", "developer", "tutoring"):
                    # The answer the account got earlier, verbatim, as the API returned it.
                    assert prev in answers
                    checked[strategy] += 1
            if r.get("response_text"):
                answers.add(r["response_text"])
        if labels[acct]["label"] == "attack" and strategy not in ("mixed",):
            assert all(len(r["messages"]) == 1 for r in rs), strategy
    assert checked["tutoring"] > 20 and checked["chat"] + checked["power_user"] + checked["developer"] > 20


def test_tutoring_serves_many_end_users(small_log: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    _, labels_path, rows = small_log
    labels = read_labels(labels_path)
    users: dict[str, set[str]] = defaultdict(set)
    questions: Counter[str] = Counter()
    for r in rows:
        if labels[r["account_id"]]["strategy"] == "tutoring":
            users[r["account_id"]].add(r["end_user"])
            questions[r["account_id"]] += len(r["messages"]) == 1
            assert "step" in r["system_prompt"].lower()
    assert users
    for acct, u in users.items():
        # Thousands of students: most questions come from a student not seen before in the log.
        assert len(u) >= 20 and len(u) >= 0.5 * questions[acct], (len(u), questions[acct])


def test_harvest_styles_vary_their_wording(small_log: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    _, labels_path, rows = small_log
    labels = read_labels(labels_path)
    heads: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        s = labels[r["account_id"]]["strategy"]
        if s in ("orca_cot",):
            heads[s].add(r.get("system_prompt") or "")
        elif s in ("self_instruct", "evol_instruct", "reasoning_coercion", "rubric_grading"):
            heads[s].add(r["messages"][-1]["content"][:40])
    for s, h in heads.items():
        assert len(h) >= 2, s
    ms = [r for r in rows if labels[r["account_id"]]["strategy"] == "multi_sample"]
    assert ms and all(r.get("logprobs") for r in ms)


def test_release_chasers_move_fast_and_customers_do_not() -> None:
    pop = build(SimConfig(accounts=150, days=3, seed=2, strategies=("release_chaser",), volume=0.3))
    rel = pop.world.release_ts
    share: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for ts, idx, _, rec in merged(pop):
        if rel <= ts < rel + DAY:
            a = pop.accounts[idx]
            key = "chaser" if a.label == "attack" else "benign"
            share[key][0] += rec["model"] == RELEASE_MODEL
            share[key][1] += 1
    assert share["chaser"][0] / share["chaser"][1] >= 0.5
    assert share["benign"][0] / share["benign"][1] < 0.1


def run_cli(args: str, *paths: Any) -> Any:
    return CliRunner().invoke(app, ["simulate", *args.split(), *map(str, paths)])


def test_cli_writes_log_and_labels(tmp_path: Path) -> None:
    out = tmp_path / "cli.jsonl"
    res = run_cli("--accounts 60 --days 1 --seed 4 --start 2026-12-07 --volume 0.1 --out", out)
    assert res.exit_code == 0, res.output
    labels = read_labels(tmp_path / "cli.labels.csv")
    rows = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert rows and {r["account_id"] for r in rows} <= set(labels)
    assert rows[0]["ts"].startswith("2026-12-07")
    res = run_cli("--accounts 60 --strategies bogus --out", out)
    assert res.exit_code == 2 and "unknown strategies" in res.output
    res = run_cli("--accounts 60 --start yesterday --out", out)
    assert res.exit_code == 2 and "--start" in res.output
    lab = tmp_path / "x.csv"
    res = run_cli("--accounts 40 --days 1 --strategies none --volume 0.1 --out", out, "--labels", lab)
    assert res.exit_code == 0, res.output
    assert {r["label"] for r in read_labels(lab).values()} == {"benign"}


@pytest.mark.skipif(
    importlib.util.find_spec("distillguard.ingest.otel") is None, reason="OTLP writer missing"
)
def test_otlp_format_holds_the_same_exchanges(tmp_path: Path) -> None:
    from distillguard.ingest import IngestStats, Quarantine, read_exchanges
    from distillguard.ingest.otel import OtelGenAI

    cfg = SimConfig(accounts=50, days=1, seed=9, strategies=("orca_cot", "hydra"), volume=0.1)
    native, otlp = tmp_path / "n.jsonl", tmp_path / "o.jsonl"
    simulate(cfg, native, workers=1)
    res = run_cli(
        "--accounts 50 --days 1 --seed 9 --strategies orca_cot,hydra --format otlp --volume 0.1 --out", otlp
    )
    assert res.exit_code == 0, res.output
    with Quarantine(tmp_path / "q.jsonl") as q:
        got = [ex for _, ex in read_exchanges(otlp, OtelGenAI(), q, IngestStats())]
    want = [validate(orjson.loads(x)) for x in native.read_bytes().splitlines()]
    assert [e.exchange_id for e in got] == [e.exchange_id for e in want]
    assert [e.prompt() for e in got[:200]] == [e.prompt() for e in want[:200]]


def test_capability_sweeps_do_not_replay_answers_they_have(tmp_path: Path) -> None:
    """A sweep that has walked its whole dataset rephrases and samples on the next pass: it pays for new
    answers, never for the same deterministic answer twice (what a benchmark re-run does instead)."""
    out = tmp_path / "sweep.jsonl"
    cfg = SimConfig(accounts=60, days=2, seed=5, strategies=("capability_sweep",), attack_fraction=0.2)
    simulate(cfg, out, workers=1)
    labels = read_labels(labels_path_for(out))
    seen: Counter[tuple[str, str, str, float]] = Counter()
    passes: Counter[str] = Counter()
    for line in out.read_bytes().splitlines():
        r = orjson.loads(line)
        if labels[r["account_id"]]["strategy"] != "capability_sweep" or r.get("status", 200) >= 400:
            continue
        prompt = r["messages"][-1]["content"]
        temp = r.get("temperature")
        if temp is not None and temp <= 0.3:
            seen[(r["account_id"], r["model"], prompt, temp)] += 1
        passes[r["account_id"]] += temp is not None and temp >= 0.8
    assert seen and max(seen.values()) == 1
    # and some sweeps did go round again (at 1,000-3,000 requests a day over a 384-question code set)
    assert sum(1 for v in passes.values() if v) >= 1


def _simulate_canonical(
    cfg: SimConfig, out: Path
) -> tuple[dict[str, dict[str, str]], dict[str, list[dict[str, Any]]]]:
    """Simulate `cfg` to `out`, check every line is a canonical exchange; labels and rows by account."""
    simulate(cfg, out, workers=1)
    labels = read_labels(labels_path_for(out))
    rows = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    for line, row in zip(out.read_bytes().splitlines(keepends=True), rows, strict=True):
        assert dump_line(validate(row)) == line
    return labels, _by_account(rows, labels)


def test_held_out_strategies_run_only_when_named(tmp_path: Path) -> None:
    """The held-out strategies are never in the default mix (the detector's tuning never saw them); named,
    they write canonical exchanges (tool-call turns included) in both formats."""
    from distillguard.simulate import ALL_STRATEGIES
    from distillguard.simulate.held_out import HELD_OUT

    assert not set(HELD_OUT) & set(STRATEGIES) and set(ALL_STRATEGIES) == {*STRATEGIES, *HELD_OUT}
    default = build(SimConfig(accounts=300, days=1))
    assert not {a.strategy for a in default.accounts} & set(HELD_OUT)
    added = build(SimConfig(accounts=300, days=1, extra=tuple(HELD_OUT)))
    assert set(HELD_OUT) <= {a.strategy for a in added.accounts}
    cfg = SimConfig(accounts=60, days=1, seed=4, strategies=tuple(HELD_OUT), volume=0.1, exact=False)
    labels, by = _simulate_canonical(cfg, tmp_path / "h.jsonl")

    def rows_of(strategy: str) -> list[dict[str, Any]]:
        return [r for a, rs in by.items() if labels[a]["strategy"] == strategy for r in rs]

    tool_rows = rows_of("agentic_tool_use")
    assert tool_rows and all(r.get("n_tools", 0) >= 3 for r in tool_rows)
    # most requests continue a trajectory: the task again as the last user message, then tool turns
    assert sum(len(r["messages"]) > 1 for r in tool_rows) > len(tool_rows) / 3
    assert any(m["role"] == "tool" for r in tool_rows for m in r["messages"])
    persona = rows_of("persona_synthesis")
    assert sum("persona" in r["messages"][0]["content"] for r in persona) > len(persona) / 4
    dialogue = rows_of("dialogue_harvest")
    turns = [r for r in dialogue if len(r["messages"]) >= 3]
    assert dialogue and len(turns) > len(dialogue) / 3
    # a follow-up resends the history: its last assistant turn is an answer the account got before it
    got = {r["response_text"]: r["ts"] for r in dialogue if r.get("response_text")}
    prior = [r for r in turns if got.get(r["messages"][-2]["content"], "9999") < r["ts"]]
    assert len(prior) > 0.9 * len(turns)
    res = run_cli(
        "--accounts 300 --days 1 --volume 0.05 --add-strategies agentic_tool_use --out", tmp_path / "c.jsonl"
    )
    assert res.exit_code == 0, res.output
    assert "agentic_tool_use" in (tmp_path / "c.labels.csv").read_text()
    bad = run_cli("--accounts 300 --days 1 --add-strategies nope --out", tmp_path / "d.jsonl")
    assert bad.exit_code != 0 and "unknown strategies" in bad.output


def test_held_out_personas_run_only_when_named(tmp_path: Path) -> None:
    """The held-out benign personas are never in the default population; named, they write canonical
    exchanges with what makes each what it is."""
    from distillguard.simulate.held_out_personas import HELD_OUT_PERSONAS

    assert not set(HELD_OUT_PERSONAS) & set(PERSONAS)
    default = build(SimConfig(accounts=300, days=1))
    assert not {a.strategy for a in default.accounts} & set(HELD_OUT_PERSONAS)
    names = tuple(HELD_OUT_PERSONAS)
    cfg = SimConfig(accounts=400, days=1, seed=6, volume=0.2, extra_personas=names)
    added = build(cfg)
    counts = Counter(a.strategy for a in added.accounts)
    assert all(counts[n] >= 5 for n in names), counts
    assert all(a.label == "benign" for a in added.accounts if a.strategy in names)
    labels, by = _simulate_canonical(cfg, tmp_path / "p.jsonl")

    def of(persona: str) -> dict[str, list[dict[str, Any]]]:
        return {a: rs for a, rs in by.items() if labels[a]["strategy"] == persona}

    # a coding agent loops: tool calls and their results fed back, over the product's one set of tools
    for rs in of("coding_agent").values():
        assert len({r.get("tool_set") for r in rs}) == 1 and rs[0]["tool_set"]
        assert any(m["role"] == "tool" for r in rs for m in r["messages"])
    # a review bot sends diffs in one template; a translation job asks for one language or two
    for rs in of("code_review").values():
        assert all("\n+++ b/src/" in r["messages"][0]["content"] for r in rs)
    for rs in of("translation").values():
        asked = {
            w
            for r in rs
            for w in ("French", "German", "Japanese", "Spanish", "Korean", "Italian", "Brazilian Portuguese")
            if f"into {w}" in r["messages"][0]["content"] or f"for {w} users" in r["messages"][0]["content"]
        }
        assert 1 <= len(asked) <= 2
    # a grading job's grades are short JSON
    for rs in of("qa_grading").values():
        assert all(
            orjson.loads(r["response_text"])["score"] in range(1, 6) for r in rs if "response_text" in r
        )
    res = run_cli(
        "--accounts 300 --days 1 --volume 0.05 --add-personas code_review --out", tmp_path / "c.jsonl"
    )
    assert res.exit_code == 0, res.output
    assert "code_review" in (tmp_path / "c.labels.csv").read_text()
    bad = run_cli("--accounts 300 --days 1 --add-personas nope --out", tmp_path / "d.jsonl")
    assert bad.exit_code != 0 and "unknown held-out personas" in bad.output and "coding_agent" in bad.output
