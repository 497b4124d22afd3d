"""The batch scan: logs -> Parquet -> account features -> findings -> scores -> campaigns -> outputs.

Each step is a function of the one before, so the same steps serve `scan` (files in, files out) and
tests (tables in, verdicts out).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.config import Config
from distillguard.detect import calibration, features, scoring, skeletons, slices
from distillguard.detect.campaigns import Campaigns, link
from distillguard.detect.evidence import Evidence, Level
from distillguard.detect.signals.base import Finding, Signal, ramp, signals
from distillguard.intel.match import KINDS, Matcher, Matches
from distillguard.store.engine import Engine, make_engine, release_memory

Progress = Callable[[str], None]


@dataclass
class Scored:
    """Scores for a set of units (accounts or campaigns), aligned by index."""

    ids: np.ndarray
    cols: dict[str, np.ndarray]
    findings: list[Finding]
    score: np.ndarray
    contrib: np.ndarray


@dataclass
class ScanResult:
    accounts: Scored
    campaigns: Campaigns
    campaign_scores: Scored | None
    final_score: np.ndarray
    levels: list[Level]
    evidence: list[list[Evidence]]
    campaign_evidence: list[list[Evidence]]
    timings: dict[str, float] = field(default_factory=dict)
    intel: Matches | None = None
    templates: skeletons.Templates | None = None


def _columns(t: pa.Table) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in t.column_names:
        col = t.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            out[name] = np.asarray(col.to_pylist(), dtype=object)
        else:
            out[name] = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
    return out


def score_accounts(
    engine: Engine,
    sigs: list[Signal],
    cfg: Config,
    tpl: skeletons.Templates,
    extra: dict[str, Any] | Callable[[np.ndarray], dict[str, Any]],
    rows: str = "dg_rows",
    source: str = "exchanges",
) -> Scored:
    """Findings and scores for every group of the materialised `rows` (extra columns merged in first).

    `source` is the exchange table or view the signals' `extra_sql` reads, with the same grouping.
    """
    table = features.compute(engine, sigs, rows)
    cols = _columns(table)
    ids = cols["account_id"]
    cols.update(skeletons.account_columns(tpl, ids))
    for sig in sigs:
        if sig.extra_sql:
            cols.update(_aligned(engine.query(sig.extra_sql.replace("{source}", source)), ids))
    # `extra` may need the account order, which is only known now (features come back sorted by id)
    cols.update(extra(ids) if callable(extra) else extra)
    findings = [f for s in sigs for f in s.evaluate(cols)]
    score, contrib = scoring.combine(findings, cfg.scoring)
    return Scored(ids=ids, cols=cols, findings=findings, score=score, contrib=contrib)


# A hard sampling trick (resampling, temperature sweeps) is an account's recipe when its finding is at least
# this strong: a chat user who presses "regenerate" now and then resamples a few prompts, not half of them.
TRICK_STRENGTH = 0.5


def _recipe_hits(acc: Scored, cfg: Config) -> np.ndarray | None:
    """Per account, its matches of each recipe campaigns link on: the hard generator fingerprints (matches
    counted), and the hard sampling tricks, which count as every exchange of an account that runs one (its
    finding at TRICK_STRENGTH or more). An operation that sweeps temperatures or resamples over many small
    accounts shares no template and no fixed configuration (the temperature varies), but it runs the trick
    in each."""
    cols = acc.cols
    names = [h.split(".", 1)[1] for h in cfg.scoring.hard if h.startswith("fingerprint.")]
    have = [
        np.nan_to_num(np.asarray(cols[f"fp_{k}_n"], dtype=np.float64)) for k in names if f"fp_{k}_n" in cols
    ]
    vol = np.nan_to_num(np.asarray(cols["n_exchanges"], dtype=np.float64))
    have += [
        np.where(f.strength >= TRICK_STRENGTH, vol, 0.0)
        for f in acc.findings
        if f.name.startswith("shape.") and f.name in cfg.scoring.hard
    ]
    return np.stack(have, axis=1) if have else None


def _aligned(t: pa.Table, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Columns of a per-account table, aligned to `ids` (NaN where an account has no row)."""
    pos = {a: i for i, a in enumerate(t.column("account_id").to_pylist())}
    at = np.array([pos.get(a, -1) for a in ids], dtype=np.int64)
    out = {}
    for name in t.column_names:
        if name == "account_id":
            continue
        v = np.asarray(t.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
        out[name] = np.where(at >= 0, v[np.maximum(at, 0)] if len(v) else np.nan, np.nan)
    return out


def _relabel_sql(table: str, names: list[str]) -> str:
    """Rows of campaign members from `table`, with the campaign id standing in for the account id."""
    cols = ", ".join(f"e.{c}" if c != "account_id" else "c.campaign_id AS account_id" for c in names)
    return f"SELECT {cols} FROM {table} e JOIN campaign_map c ON e.account_id = c.account_id"


def score_exchanges(
    engine: Engine,
    cfg: Config | None = None,
    progress: Progress | None = None,
    matcher: Matcher | None = None,
) -> ScanResult:
    """Score every account of the `exchanges` table registered in `engine` (and match it against
    threat-intel indicators when a `matcher` is given)."""
    cfg = cfg or Config()
    say = progress or (lambda _m: None)
    sigs: list[Signal] = [cls() for cls in signals().values()]
    tm: dict[str, float] = {}

    t0 = time.perf_counter()
    say("computing row features")
    features.materialize_rows(engine, sigs)
    tm["rows"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("sketching prompt skeletons")
    tpl = skeletons.templates(
        engine, cfg.scan.skeleton_sample, cfg.scan.skeleton_threshold, budget=cfg.scan.skeleton_budget
    )
    tm["skeletons"] = time.perf_counter() - t0

    matches: Matches | None = None
    extra: dict[str, Any] | Callable[[np.ndarray], dict[str, Any]] = {}
    if matcher is not None and len(matcher):
        t0 = time.perf_counter()
        say(f"matching against {len(matcher):,} intel indicators")
        matches = matcher.match(engine, tpl)
        extra = matches.aligned
        tm["intel"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("computing account features")
    acc = score_accounts(engine, sigs, cfg, tpl, extra)
    tm["features"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("scoring client slices")
    # Before campaigns: a slice's score is the account's own evidence.
    slice_evidence = slices.lift(acc, slices.score_slices(engine, sigs, cfg, acc, tpl), cfg)
    tm["slices"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("linking accounts into campaigns")
    release_memory(engine)  # the account graphs are built here, beside the engine
    topics = np.stack([v for k, v in sorted(acc.cols.items()) if k.startswith("topic_")], axis=1)
    camp = link(
        engine,
        acc.ids,
        tpl,
        cfg.scan.campaign_max_key_accounts,
        cfg.scan.campaign_min_link_types,
        topics=topics,
        volume=acc.cols["n_exchanges"],
        recipes=_recipe_hits(acc, cfg),
    )
    tm["campaigns"] = time.perf_counter() - t0

    final = acc.score.copy()
    camp_scored: Scored | None = None
    camp_evidence: list[list[Evidence]] = []
    if camp.ids:
        t0 = time.perf_counter()
        say("scoring campaigns")
        in_c = camp.label >= 0
        runs_job = in_c & (camp.job_linked | (camp.client_job & _scripted(acc)))
        # The campaign is scored over the members that run its job when most of them (two or more) do: the
        # others share its addresses (a proxy exit's other customers, colleagues behind a NAT), and their
        # traffic would dilute the job's evidence with theirs. A few that match by chance decide nothing.
        n_job = np.bincount(camp.label[runs_job], minlength=len(camp.ids))
        n_mem = np.bincount(camp.label[in_c], minlength=len(camp.ids))
        by_job = (n_job >= 2) & (2 * n_job >= n_mem)
        pooled = in_c & (runs_job | ~by_job[np.maximum(camp.label, 0)])
        cmap = pa.table(
            {
                "account_id": pa.array(acc.ids[pooled].tolist(), pa.string()),
                "campaign_id": pa.array([camp.ids[i] for i in camp.label[pooled]], pa.string()),
            }
        )
        engine.register_arrow("campaign_map", cmap)
        # Score campaigns as if each were one account, over the pooled exchanges of its members: the
        # materialised rows relabelled with campaign ids (no text is read again).
        row_cols = engine.query("SELECT * FROM dg_rows LIMIT 0").column_names
        engine.create_view("campaign_rows", _relabel_sql("dg_rows", row_cols))
        engine.create_view(
            "campaign_exchanges", _relabel_sql("exchanges", ["account_id", "ts", "exchange_id"])
        )
        n_acc = np.bincount(camp.label[pooled], minlength=len(camp.ids)).astype(np.float64)
        per_day = acc.cols["n_exchanges"] / np.maximum(acc.cols["days_active"], 1.0)
        tok_day = acc.cols["out_tokens_sum"] / np.maximum(acc.cols["days_active"], 1.0)
        peer = {
            "peer_per_day": np.full(len(camp.ids), float(np.median(per_day))),
            "peer_tok_per_day": np.full(len(camp.ids), float(np.median(tok_day))),
        }
        member_of = dict(
            zip(cmap.column("account_id").to_pylist(), cmap.column("campaign_id").to_pylist(), strict=True)
        )
        ctpl = skeletons.relabel(tpl, member_of)
        camp_scored = score_accounts(engine, sigs, cfg, ctpl, peer, "campaign_rows", "campaign_exchanges")
        # Features come back sorted by id; align them with camp.ids.
        pos = {cid: i for i, cid in enumerate(camp_scored.ids)}
        align = np.array([pos[c] for c in camp.ids])
        coord = Finding(
            "campaign.coordination",
            n_acc,
            ramp(np.log2(n_acc), 1.0, 4.0),
            16.0,
            "{value:.0f} accounts linked by shared infrastructure and templates",
        )
        _reindex(camp_scored, align)
        camp_scored.findings.append(coord)
        camp_scored.score, camp_scored.contrib = scoring.combine(camp_scored.findings, cfg.scoring)
        cs = camp_scored.score
        # Membership amplifies a member's own evidence: a member linked only by addresses and behaviour
        # needs some of its own; one that runs the campaign's prompt job is measured by the pooled score.
        # The evidence asked of a member is beyond the addresses it shares: a proxy pool's other customers
        # rotate through it too, so rotation alone does not carry a member over the floor. Its contribution
        # comes off the own score's log-odds (after the client slices; never more than it added).
        addr = [k for k, f in enumerate(acc.findings) if f.name in ADDRESS_FINDINGS]
        off = np.maximum(acc.contrib[addr].sum(axis=0), 0.0) if addr else 0.0
        beyond = scoring.sigmoid(scoring.logit(acc.score) - off)
        floor = np.where(runs_job, cfg.scan.campaign_job_inherit_floor, cfg.scan.campaign_inherit_floor)
        inherits = in_c & (beyond >= floor)
        final = np.where(inherits, np.maximum(final, cs[np.maximum(camp.label, 0)]), final)
        camp_evidence = [
            scoring.evidence_for(i, camp_scored.findings, camp_scored.contrib, cfg.scan.examples)
            for i in range(len(camp.ids))
        ]
        tm["campaign_scores"] = time.perf_counter() - t0

    levels = scoring.levels(final, cfg.scoring)
    evidence = [
        scoring.evidence_for(i, acc.findings, acc.contrib, cfg.scan.examples) for i in range(len(acc.ids))
    ]
    for k, ev in slice_evidence.items():
        evidence[k].insert(0, ev)
    for i in np.flatnonzero(camp.label >= 0):
        c = int(camp.label[i])
        if camp_scored is not None and camp_scored.score[c] > acc.score[i] and final[i] > acc.score[i]:
            evidence[i].insert(
                0,
                Evidence(
                    signal="campaign.member",
                    value=float(camp_scored.score[c]),
                    threshold=cfg.scoring.levels["suspect"],
                    weight=0.0,
                    detail=f"member of campaign {camp.ids[c]} ({len(camp.members[c])} accounts) scoring "
                    f"{camp_scored.score[c]:.3f}; own score {acc.score[i]:.3f}"
                    + (
                        "; sends the campaign's prompt template"
                        if camp.job_linked[i]
                        else "; runs the campaign's client program on its topics"
                        if camp.client_job[i]
                        else ""
                    ),
                ),
            )
    return ScanResult(acc, camp, camp_scored, final, levels, evidence, camp_evidence, tm, matches, tpl)


# Findings about where an account's requests come from, which the members of a campaign share by definition
ADDRESS_FINDINGS = frozenset({"network.rotation"})

# A script's pace: inter-arrival coefficient of variation (the sample standard deviation of the gaps over
# their mean) under PACE_MAX_CV over PACE_MIN_EXCHANGES+ requests. People are bursty (above 1). A
# Poisson-paced user, the least bursty a person is, gets under 0.5 by chance in 1 of 70 runs of 12
# requests, too often for the many users of one app; so at fewer than 17 requests the bar is lower, where
# such a user gets under it in 1 of 500 runs (the 0.2% quantile of the CV over that many exponential
# gaps, from 10^6 simulated runs each). A rate-limited script is under it every time.
PACE_MAX_CV = 0.5
PACE_CV_BY_REQUESTS = ((12, 0.42), (13, 0.44), (14, 0.46), (15, 0.48), (16, 0.49), (17, PACE_MAX_CV))
PACE_MIN_EXCHANGES = 12


def pace_bar(n_requests: np.ndarray) -> np.ndarray:
    """The script-pace CV bar at each request count (past the table's last count: its value, the cap)."""
    at, cvs = (np.array(v, dtype=np.float64) for v in zip(*PACE_CV_BY_REQUESTS, strict=True))
    return np.interp(np.asarray(n_requests, dtype=np.float64), at, cvs)


def _scripted(acc: Scored) -> np.ndarray:
    """Per account: its own traffic looks like a script's: requests at a machine's pace, or from a rotating
    proxy pool, and nothing that explains it away (follow-ups, re-runs, grading its own answers). A client
    program and topics in common with a campaign say "the same job" only of accounts that run it as a
    program: the users of one bring-your-own-key app share its servers, its settings and its subject, not a
    script's pace, nor an address that changes every few requests (a pool's pace can be made a person's)."""
    n = len(acc.ids)
    mitigated = (np.minimum(acc.contrib, 0.0).sum(axis=0) < 0) if acc.contrib.size else np.zeros(n, bool)
    cv = next((f.value for f in acc.findings if f.name == "timing.regular"), np.ones(n))
    n_req = np.asarray(acc.cols["n_exchanges"], dtype=np.float64)
    paced = (cv < pace_bar(n_req)) & (n_req >= PACE_MIN_EXCHANGES)
    rotating = next((f.strength for f in acc.findings if f.name == "network.rotation"), np.zeros(n)) >= 0.5
    return np.asarray((paced | rotating) & ~mitigated, dtype=bool)


def _reindex(s: Scored, align: np.ndarray) -> None:
    s.ids = s.ids[align]
    s.cols = {k: (v[align] if len(v) == len(align) else v) for k, v in s.cols.items()}
    for f in s.findings:
        f.value, f.strength = f.value[align], f.strength[align]
        if f.examples is not None:
            f.examples = f.examples[align]
        if f.indicators is not None:
            f.indicators = f.indicators[align]


# -- outputs ------------------------------------------------------------------------------------------


def write_outputs(res: ScanResult, out: Path, summary: dict[str, Any]) -> None:
    acc = res.accounts
    cid = [res.campaigns.ids[c] if c >= 0 else "" for c in res.campaigns.label]
    reasons = [
        "; ".join(f"{e.signal}={e.value:.3g}" for e in ev if e.weight > 0 or e.signal == "campaign.member")[
            :500
        ]
        for ev in res.evidence
    ]
    with open(out / "accounts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["account_id", "score", "verdict", "campaign_id", "reasons", "n_exchanges", "own_score"])
        for i, a in enumerate(acc.ids):
            w.writerow(
                [
                    a,
                    f"{res.final_score[i]:.6f}",
                    res.levels[i],
                    cid[i],
                    reasons[i],
                    int(acc.cols["n_exchanges"][i]),
                    f"{acc.score[i]:.6f}",
                ]
            )
    pq.write_table(
        pa.table(
            {
                "account_id": pa.array(acc.ids.tolist(), pa.string()),
                "score": pa.array(res.final_score, pa.float64()),
                "verdict": pa.array(res.levels, pa.string()),
                "campaign_id": pa.array([c or None for c in cid], pa.string()),
                "reasons": pa.array(reasons, pa.string()),
                "own_score": pa.array(acc.score, pa.float64()),
                "n_exchanges": pa.array(acc.cols["n_exchanges"].astype(np.int64), pa.int64()),
                "evidence": pa.array(
                    [orjson.dumps([e.model_dump() for e in ev]).decode() for ev in res.evidence]
                ),
            }
        ),
        out / "accounts.parquet",
    )
    with open(out / "evidence.jsonl", "wb") as fb:
        for i, a in enumerate(acc.ids):
            fb.write(
                orjson.dumps(
                    {
                        "account_id": a,
                        "score": round(float(res.final_score[i]), 6),
                        "verdict": res.levels[i],
                        "campaign_id": cid[i] or None,
                        "evidence": [e.model_dump() for e in res.evidence[i]],
                    }
                )
                + b"\n"
            )
    camps = []
    for c, camp_id in enumerate(res.campaigns.ids):
        mem = res.campaigns.members[c]
        sc = float(res.campaign_scores.score[c]) if res.campaign_scores is not None else 0.0
        camps.append(
            {
                "campaign_id": camp_id,
                "score": round(sc, 6),
                "verdict": scoring.level_of(sc, Config().scoring),
                "n_accounts": len(mem),
                "n_exchanges": int(acc.cols["n_exchanges"][mem].sum()),
                "accounts": sorted(acc.ids[mem].tolist()),
                "links": res.campaigns.links[c],
                "evidence": [e.model_dump() for e in res.campaign_evidence[c]]
                if res.campaign_evidence
                else [],
            }
        )
    camps.sort(key=lambda d: -float(d["score"]))  # type: ignore[arg-type]
    (out / "campaigns.json").write_bytes(orjson.dumps(camps, option=orjson.OPT_INDENT_2))
    if res.templates is not None:
        # sampled skeletons (masked prompts, local only): `intel publish` derives campaign templates from them
        t = res.templates
        pq.write_table(
            pa.table(
                {
                    "account_id": pa.array(t.account_id.tolist(), pa.string()),
                    "cluster": pa.array(t.cluster, pa.int64()),
                    "cnt": pa.array(t.cnt, pa.float64()),
                    "length": pa.array(t.length, pa.int64()),
                    "skel": t.skel,
                }
            ),
            out / "skeletons.parquet",
        )
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))


def scan(
    paths: Sequence[Path],
    out: Path,
    fmt: str | None = None,
    cfg: Config | None = None,
    engine_name: str | None = None,
    progress: Progress | None = None,
    on_ingest: Callable[[int, int], None] | None = None,
    matcher: Matcher | None = None,
) -> tuple[ScanResult, dict[str, Any]]:
    """Ingest `paths`, score every account, write the outputs into `out`. Returns result and summary."""
    from distillguard.store.parquet import ingest

    cfg = cfg or Config()
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    pq_path = out / "exchanges.parquet"
    qpath = out / "quarantine.jsonl"
    if qpath.exists():
        qpath.unlink()
    say("reading logs")
    stats = ingest(paths, pq_path, fmt=fmt, quarantine_path=qpath, on_progress=on_ingest)
    t_ingest = time.perf_counter() - t0
    if stats.ok == 0:
        raise ValueError(
            f"no valid exchanges in {', '.join(map(str, paths))} ({stats.quarantined} quarantined)"
        )
    # DuckDB spills beside the outputs (and removes its files on close), not into the working directory.
    engine = make_engine(engine_name or cfg.scan.engine, temp_directory=out / ".spill")
    try:
        engine.register_parquet("exchanges", pq_path)
        res = score_exchanges(engine, cfg, progress, matcher)
    finally:
        engine.close()
    res.timings = {"ingest": t_ingest, **res.timings}
    counts = {lvl: int(sum(1 for x in res.levels if x == lvl)) for lvl in ("ok", "watch", "suspect", "block")}
    summary: dict[str, Any] = {
        "exchanges": stats.ok,
        "quarantined": stats.quarantined,
        "files": stats.files,
        "accounts": len(res.accounts.ids),
        "verdicts": counts,
        "campaigns": len(res.campaigns.ids),
        "engine": engine_name or cfg.scan.engine,
        "seconds": {k: round(v, 3) for k, v in res.timings.items()},
    }
    if res.intel is not None:
        m = res.intel
        summary["intel"] = {
            "indicators": len(matcher) if matcher is not None else 0,
            "indicators_matched": m.sightings.num_rows,
            "matched_exchanges": m.counts,
            "accounts_matched": int(
                np.logical_or.reduce([m.columns[f"intel_{k}_share"] > 0 for k in KINDS]).sum()
            ),
        }
        pq.write_table(m.sightings, out / "intel_sightings.parquet")
    cal = calibration.load(cfg.scoring.calibration) if cfg.scoring.calibration else calibration.default()
    if cal is not None:
        summary["calibration"] = calibration.describe(cal, dict(cfg.scoring.levels))
    write_outputs(res, out, summary)
    return res, summary
