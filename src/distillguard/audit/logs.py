"""Compliance risk from full request logs: distillguard's detection signals, and keys used from
unexpected jurisdictions.

The logs are scanned with the same pipeline as `distillguard scan` (any format it reads: OpenTelemetry
GenAI spans, LiteLLM spend logs, distillguard JSONL, OpenAI Batch files). Each flagged account's evidence
is sorted into the patterns a compliance team asks about, and said in the signals' own words; prompts
are never copied into the report, only example exchange ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import maxminddb

from distillguard.audit.risk import Risk
from distillguard.config import Config

# Which detection signals make up each plain-words pattern (docs/scoring.md describes the signals).
PATTERNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "bulk_generation": (
        "Bulk single-turn generation: many one-shot requests with no follow-up, shaped like synthetic "
        "training-data generation.",
        (
            "open_loop.single_turn",
            "fingerprint.self_instruct",
            "fingerprint.evol_instruct",
            "fingerprint.orca_system",
            "fingerprint.persona_synthesis",
            "fingerprint.code_instruct",
            "fingerprint.math_augment",
            "fingerprint.self_chat",
            "shape.multi_sample",
            "shape.temperature_sweep",
            "shape.max_tokens",
            "shape.logprobs",
            "timing.regular",
            "timing.round_the_clock",
            "volume.vs_peers",
            "volume.vs_history",
            "skeleton.reuse",
        ),
    ),
    "step_by_step": (
        "Step-by-step elicitation at scale: prompts that ask the model to show its reasoning, across many "
        "requests, as reasoning-trace collection does.",
        ("cot.elicitation", "cot.reasoning_effort", "fingerprint.trace_coercion"),
    ),
    "benchmark_sweep": (
        "Benchmark sweep: requests that walk through a capability area (maths, code, reasoning, tool use) or "
        "grade answers, as capability extraction does.",
        (
            "coverage.breadth",
            "coverage.capability_focus",
            "shape.tool_variety",
            "fingerprint.rubric_judge",
            "release.fast_adoption",
        ),
    ),
    "coordinated": (
        "Coordinated accounts: this account acts together with others (shared infrastructure or prompt "
        "templates), sends through rotating proxies, or matches shared threat intelligence.",
        ("campaign.coordination", "campaign.member", "network.rotation"),
    ),
}
_PATTERN_OF = {sig: name for name, (_, sigs) in PATTERNS.items() for sig in sigs}


@dataclass
class LogAudit:
    exchanges: int = 0
    quarantined: int = 0
    accounts: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    risks: list[Risk] = field(default_factory=list)
    countries: list[dict[str, Any]] = field(default_factory=list)  # per key: requests by country


def _pattern(signal: str) -> str | None:
    if signal in _PATTERN_OF:
        return _PATTERN_OF[signal]
    if signal.startswith("intel."):
        return "coordinated"
    return None


def audit_logs(paths: Sequence[Path], scan_dir: Path, cfg: Config, fmt: str | None = None) -> LogAudit:
    """Scan `paths` into `scan_dir` and turn the flagged accounts and key locations into risks."""
    from distillguard.detect.pipeline import scan

    res, summary = scan(paths, scan_dir, fmt, cfg)
    out = LogAudit(
        exchanges=int(summary["exchanges"]),
        quarantined=int(summary["quarantined"]),
        accounts=int(summary["accounts"]),
        verdicts=dict(summary["verdicts"]),
    )
    keys = _account_keys(scan_dir / "exchanges.parquet")
    for i, acc in enumerate(res.accounts.ids.tolist()):
        level = res.levels[i]
        if level == "ok":
            continue
        by_pattern: dict[str, list[Any]] = {}
        for ev in res.evidence[i]:
            p = _pattern(ev.signal)
            if p is not None and ev.weight > 0:
                by_pattern.setdefault(p, []).append(ev)
        score = round(float(res.final_score[i]), 4)
        for p, evs in sorted(by_pattern.items()):
            evs.sort(key=lambda e: -e.weight)
            out.risks.append(
                Risk(
                    # the audit has two levels: a provider's `block` is a `suspect` for the customer
                    level="watch" if level == "watch" else "suspect",
                    kind=p,
                    subject=f"account {acc}",
                    summary=PATTERNS[p][0] + " " + "; ".join(e.detail for e in evs[:3]) + ".",
                    evidence={
                        "verdict": level,
                        "score": score,
                        "api_keys": keys.get(acc, []),
                        "signals": {e.signal: round(e.value, 4) for e in evs},
                        "examples": sorted({x for e in evs for x in e.examples})[:5],
                    },
                )
            )
    return out


def _account_keys(parquet: Path) -> dict[str, list[str]]:
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT account_id, list(DISTINCT api_key_id ORDER BY api_key_id) FROM read_parquet(?) "
            "WHERE api_key_id IS NOT NULL GROUP BY account_id",
            [str(parquet)],
        ).fetchall()
    finally:
        con.close()
    return {a: list(k)[:10] for a, k in rows}


def jurisdictions(parquet: Path, cfg: Config, country_db: Path) -> tuple[list[Risk], list[dict[str, Any]]]:
    """Requests per key (api_key_id, else account) and country; keys used from countries outside
    `[audit] expected_countries` become risks. A log row's own country wins; else its client IP is
    looked up in `country_db`."""
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT coalesce(api_key_id, 'account:' || account_id) AS key, country, client_ip, count(*) AS n, "
            "list(exchange_id ORDER BY ts)[1:3] AS examples FROM read_parquet(?) "
            "GROUP BY ALL",
            [str(parquet)],
        ).fetchall()
    finally:
        con.close()
    ips = sorted({ip for _, c, ip, _, _ in rows if c is None and ip})
    where = _lookup(ips, country_db)
    per: dict[str, dict[str, Any]] = {}
    for key, country, ip, n, ex in rows:
        c = country.upper() if country else where.get(ip) if ip else None
        d = per.setdefault(key, {"requests": 0, "countries": {}, "examples": {}})
        d["requests"] += n
        cc = c or "unknown"
        d["countries"][cc] = d["countries"].get(cc, 0) + n
        d["examples"].setdefault(cc, []).extend(ex)
    expected = set(cfg.audit.expected_countries)
    table, risks = [], []
    for key in sorted(per):
        d = per[key]
        for cc, n in sorted(d["countries"].items(), key=lambda x: -x[1]):
            table.append(
                {
                    "key": key,
                    "country": cc,
                    "requests": n,
                    "share": round(n / d["requests"], 4),
                    "expected": None if not expected or cc == "unknown" else cc in expected,
                }
            )
        if not expected:
            continue
        bad = {cc: n for cc, n in d["countries"].items() if cc != "unknown" and cc not in expected}
        if not bad:
            continue
        n_bad = sum(bad.values())
        share = n_bad / d["requests"]
        names = ", ".join(f"{cc} ({n:,})" for cc, n in sorted(bad.items(), key=lambda x: -x[1]))
        risks.append(
            Risk(
                level="suspect" if share >= cfg.audit.jurisdiction_suspect_share else "watch",
                kind="jurisdiction",
                subject=f"key {key}",
                summary=(
                    f"Key used from unexpected jurisdictions: {n_bad:,} of its {d['requests']:,} requests "
                    f"({share:.1%}) came from {names}, outside the expected {', '.join(sorted(expected))}. "
                    "A leaked key or an offshore team running collection jobs looks like this."
                ),
                evidence={
                    "requests": d["requests"],
                    "unexpected": bad,
                    "examples": sorted({x for cc in bad for x in d["examples"][cc]})[:5],
                },
            )
        )
    return risks, table


def _lookup(ips: list[str], db: Path) -> dict[str, str]:
    if not ips:
        return {}
    out: dict[str, str] = {}
    with maxminddb.open_database(str(db)) as r:
        for ip in ips:
            try:
                rec = r.get(ip)
            except ValueError:  # not an address: the row keeps an unknown country
                continue
            if isinstance(rec, dict):
                for k in ("country", "registered_country"):
                    c = rec.get(k)
                    if isinstance(c, dict) and isinstance(c.get("iso_code"), str):
                        out[ip] = str(c["iso_code"]).upper()
                        break
    return out
