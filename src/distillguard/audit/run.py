"""`run_audit`: usage exports (+ full logs) -> AuditReport. The CLI is a thin layer over this."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import pyarrow.compute as pc

from distillguard.audit import prices as price_table
from distillguard.audit.logs import audit_logs, jurisdictions
from distillguard.audit.report import AuditReport
from distillguard.audit.risk import reasoning_heavy, volume_jumps
from distillguard.audit.usage import read_usage
from distillguard.audit.volume import enrich, tables
from distillguard.config import Config
from distillguard.ingest.base import Quarantine


def run_audit(
    usage: Sequence[Path],
    logs: Sequence[Path] = (),
    cfg: Config | None = None,
    quarantine: Path | None = None,
    scan_dir: Path | None = None,
    log_format: str | None = None,
) -> AuditReport:
    """Audit the usage exports `usage` and, when given, the full request logs `logs`.

    Raises UsageError / IngestError (a file that cannot be read), PriceError (a bad price table) and
    ValueError (logs with no valid exchange); bad rows are quarantined and counted instead.
    """
    cfg = cfg or Config()
    acfg = cfg.audit
    prices = price_table.load(acfg)
    if quarantine is not None and quarantine.exists():
        quarantine.unlink()  # a rerun reports its own bad rows, not the last run's too
    with Quarantine(quarantine) as q:
        data = read_usage(usage, q)
    t = enrich(data.table, prices, acfg.batch_discount)
    unpriced = sorted(set(t.filter(pc.is_null(t.column("est_usd"))).column("model").to_pylist()) - {None})
    rep = AuditReport(
        tables=tables(t),
        risks=[*volume_jumps(t, acfg), *reasoning_heavy(t, acfg)],
        meta={
            "usage_files": data.files,
            "usage_rows": t.num_rows,
            "quarantined": data.quarantined,
            "quarantine": str(quarantine) if quarantine is not None and data.quarantined else None,
            "prices": {"as_of": prices.as_of, "source": prices.source, "batch_discount": acfg.batch_discount},
        },
    )
    rep.notes.append(
        f"Spend is an estimate at list prices as of {prices.as_of} ({prices.source}); "
        "negotiated discounts, credits and taxes are not in it."
    )
    if unpriced:
        rep.notes.append(
            f"No price for {', '.join(unpriced)}: their tokens are counted but not in the spend."
        )
    if t.num_rows and pc.any(pc.is_null(t.column("requests"))).as_py():
        rep.notes.append(
            "Anthropic usage reports carry no request counts: requests are shown as n/a for them."
        )
    if data.quarantined:
        rep.notes.append(f"{data.quarantined} usage rows could not be counted; see the quarantine for why.")
    if logs:
        with tempfile.TemporaryDirectory(prefix="dg-audit-") as tmp:
            where = scan_dir or Path(tmp)
            la = audit_logs(logs, where, cfg, log_format)
            rep.risks += la.risks
            db = acfg.country_db or _bundled_country_db()
            jrisks, rep.key_countries = jurisdictions(where / "exchanges.parquet", cfg, db)
            rep.risks += jrisks
        rep.meta["logs"] = {
            "exchanges": la.exchanges,
            "quarantined": la.quarantined,
            "accounts": la.accounts,
            "verdicts": la.verdicts,
        }
        unknown = sum(r["requests"] for r in rep.key_countries if r["country"] == "unknown")
        if unknown:
            rep.notes.append(
                f"{unknown:,} logged requests have no country (no client IP in the log, or an address the "
                "country database does not know): their jurisdiction was not checked."
            )
        if not acfg.expected_countries:
            rep.notes.append(
                "Jurisdictions were not checked: list the countries keys may be used from in "
                "[audit] expected_countries."
            )
    else:
        rep.notes.append(
            "Usage exports carry no prompts: bulk single-turn generation, step-by-step elicitation, "
            "benchmark sweeps and key jurisdictions need full logs (--logs)."
        )
    return rep


def _bundled_country_db() -> Path:
    from distillguard.gateway.geo import bundled_dbs

    return bundled_dbs()[0]
