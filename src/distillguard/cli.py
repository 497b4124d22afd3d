"""The `distillguard` command line: thin typer commands over the package's modules."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console

app = typer.Typer(
    name="distillguard",
    help="Detect, stop and prove model distillation through an LLM API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True, soft_wrap=True)

from distillguard.gateway.cli import gateway_app  # noqa: E402 - after `app`, whose sub-commands these are
from distillguard.intel.cli import intel_app  # noqa: E402
from distillguard.report.command import report as report_cmd  # noqa: E402
from distillguard.report.errors import fail  # noqa: E402

app.add_typer(intel_app, name="intel")
app.add_typer(gateway_app, name="gateway")

from distillguard.forensics.cli import forensics_app  # noqa: E402 - watermarks (docs/forensics.md)

app.add_typer(forensics_app, name="forensics")

from distillguard.audit.cli import audit_cmd  # noqa: E402 - enterprise self-audit (docs/audit.md)

app.command("audit")(audit_cmd)
# `distillguard report`: HTML/PDF report of a scan (distillguard.report.command)
app.command("report")(report_cmd)

from distillguard.ui.cli import ui_app  # noqa: E402 - analyst review console (docs/ui.md)

app.add_typer(ui_app, name="ui")


@app.command()
def schema() -> None:
    """Print the JSON Schema of the Exchange record (docs/exchange.schema.json is generated from it)."""
    from distillguard.exchange import json_schema

    sys.stdout.write(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    sys.stdout.write("\n")


@app.command()
def formats() -> None:
    """List the log formats `scan` reads."""
    from distillguard.ingest import adapters

    for name, cls in sorted(adapters().items()):
        console.print(f"[bold]{name}[/]: {cls.description}")


# -- simulate (distillguard.simulate) -----------------------------------------------------------------
@app.command("simulate")
def simulate_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Log to write (a .gz name is gzipped)."),
    accounts: int = typer.Option(1000, "--accounts", help="Accounts in the population."),
    days: int = typer.Option(7, "--days", help="Days of traffic."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same bytes."),
    fmt: str = typer.Option(
        "native", "--format", "-f", help="native (distillguard JSONL) or otlp (OTLP JSON)."
    ),
    labels: Path | None = typer.Option(
        None, "--labels", help="Labels CSV to write (default: the log's name with .labels.csv)."
    ),
    start: str = typer.Option("2026-11-01", "--start", help="First day of the window (UTC), YYYY-MM-DD."),
    strategies: str | None = typer.Option(
        None, "--strategies", help="Attack strategies to include, comma-separated; 'none' for benign only."
    ),
    exclude_strategies: str | None = typer.Option(
        None, "--exclude-strategies", help="Attack strategies to leave out, comma-separated."
    ),
    add_strategies: str | None = typer.Option(
        None,
        "--add-strategies",
        help="Held-out strategies to add to the default mix, comma-separated (agentic_tool_use, "
        "persona_synthesis, paraphrase_harvest: never in the default mix the detector was tuned on).",
    ),
    add_personas: str | None = typer.Option(
        None,
        "--add-personas",
        help="Held-out benign personas to add to the population, comma-separated (coding_agent, "
        "code_review, translation, qa_grading: never in the default population the detector was tuned on).",
    ),
    attack_fraction: float = typer.Option(0.15, "--attack-fraction", help="Share of attacker accounts."),
    hydra_size: int | None = typer.Option(
        None,
        "--hydra-size",
        help="Accounts in the hydra campaign (default: 100+ from 700 accounts, else 20+).",
    ),
    volume: float = typer.Option(
        1.0, "--volume", help="Scale on every account's daily requests (0.1 for a light log)."
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Worker processes (default: by CPU count and run size; same output)."
    ),
) -> None:
    """Simulate API traffic of benign customers and distillation campaigns, with ground-truth labels."""
    from datetime import date

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from distillguard.simulate import SimConfig, labels_path_for, simulate

    def names(s: str | None) -> tuple[str, ...] | None:
        if s is None:
            return None
        if s.strip().lower() == "none":
            return ()
        return tuple(x.strip() for x in s.split(",") if x.strip())

    try:
        first = date.fromisoformat(start)
    except ValueError:
        fail(f"--start {start!r}: expected a date such as 2026-11-01")
    if fmt not in ("native", "otlp"):
        fail(f"--format {fmt!r}: use native or otlp")
    if accounts <= 0 or days <= 0:
        fail("--accounts and --days must be positive")
    if not 0.0 <= attack_fraction < 1.0:
        fail("--attack-fraction must be in [0, 1)")
    if volume <= 0:
        fail("--volume must be positive")
    chosen, excluded = names(strategies), names(exclude_strategies) or ()
    cfg = SimConfig(
        accounts=accounts,
        days=days,
        seed=seed,
        start=first,
        attack_fraction=attack_fraction,
        hydra_size=hydra_size,
        strategies=chosen,
        exclude=excluded,
        extra=names(add_strategies) or (),
        extra_personas=names(add_personas) or (),
        volume=volume,
    )
    try:
        cfg.enabled()  # names every unknown strategy
        cfg.benign_weights()  # and every unknown persona
    except ValueError as e:
        fail(str(e))
    labels_path = labels or labels_path_for(out)
    with Progress(
        TextColumn("[bold]simulating"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% of the window"),
        TextColumn("{task.fields[n]:,} exchanges"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as prog:
        task = prog.add_task("simulate", total=1.0, n=0)
        try:
            summary = simulate(
                cfg,
                out,
                fmt,
                labels_path,
                on_progress=lambda done, n: prog.update(task, completed=done, n=n),
                workers=workers,
            )
        except (ValueError, RuntimeError) as e:
            fail(str(e))
    console.print(
        f"wrote {summary.exchanges:,} exchanges of {summary.accounts:,} accounts ({summary.benign:,} benign, "
        f"{summary.attack:,} attacking in {summary.campaigns} campaigns) to {out} in {summary.seconds:.1f} s "
        f"({summary.rate:,.0f}/s); labels in {labels_path}"
    )


# -- scan / eval / demo (distillguard.detect, distillguard.eval) ---------------------------------------


@app.command()
def scan(
    logs: list[Path] = typer.Argument(..., help="Log files (gzip and zstd are read as they are)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory."),
    fmt: str | None = typer.Option(None, "--format", "-f", help="Log format (default: detected per file)."),
    engine: str | None = typer.Option(None, "--engine", help="duckdb (default) or spark."),
    config: Path | None = typer.Option(None, "--config", help="TOML config (default ./distillguard.toml)."),
    strict: bool = typer.Option(False, "--strict", help="Exit 3 when any row was quarantined."),
    top: int = typer.Option(10, "--top", help="Campaigns and accounts shown in the summary."),
    intel: bool = typer.Option(
        False,
        "--intel",
        help="Match traffic against the indicator store (\\[intel] db) and record sightings.",
    ),
    intel_db: str | None = typer.Option(None, "--intel-db", help="Indicator store (implies --intel)."),
) -> None:
    """Score every account for distillation behaviour and link accounts into campaigns."""
    from distillguard.config import ConfigError, load
    from distillguard.detect.pipeline import scan as run_scan
    from distillguard.ingest import IngestError
    from distillguard.report.console import print_scan

    for p in logs:
        if not p.exists():
            fail(f"log file {p} not found")
    try:
        cfg = load(config)
    except ConfigError as e:
        fail(str(e))
    total = sum(p.stat().st_size for p in logs)
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as prog:
        task = prog.add_task("reading logs", total=total, rows=0)

        def on_ingest(nbytes: int, rows: int) -> None:
            prog.update(task, advance=nbytes, rows=prog.tasks[task].fields["rows"] + rows)

        def on_step(msg: str) -> None:
            prog.update(task, description=msg)

        matcher, store = None, None
        if intel or intel_db:
            matcher, store = _intel_matcher(cfg, intel_db)
        try:
            res, summary = run_scan(logs, out, fmt, cfg, engine, on_step, on_ingest, matcher=matcher)
        except (IngestError, ValueError) as e:
            if store is not None:
                store.close()
            fail(str(e))
    if store is not None:
        from distillguard.intel.cli import our_org, record_sightings

        with store:
            if res.intel is not None:
                n = record_sightings(store, res.intel.sightings, our_org(cfg.intel.org).id)
                console.print(
                    f"intel: {summary['intel']['indicators_matched']} indicators matched, {n} sightings recorded"
                )
    print_scan(res, summary, out, top)
    if strict and summary["quarantined"]:
        console.print(
            f"[bold red]strict:[/] {summary['quarantined']} rows quarantined in {out / 'quarantine.jsonl'}"
        )
        raise typer.Exit(3)


def _intel_matcher(cfg: Any, db: str | None) -> tuple[Any, Any]:
    """The indicator store and a matcher over its indicators in force now (keyed ones need the keyring)."""
    from datetime import UTC, datetime

    from distillguard.intel.cli import load_keyring, open_store
    from distillguard.intel.match import Matcher, MatchError

    store = open_store(db, cfg.intel)
    try:
        kr = load_keyring(None, cfg.intel, required=False)
        m = Matcher.from_store(store, kr, datetime.now(UTC), skeleton_threshold=cfg.intel.skeleton_threshold)
    except MatchError as e:
        store.close()
        fail(str(e))
    return m, store


@app.command("eval")
def eval_(
    scan_dir: Path = typer.Argument(..., help="Output directory of `distillguard scan`."),
    labels: Path = typer.Option(..., "--labels", help="account_id,label,campaign_id,strategy CSV."),
    level: str = typer.Option("suspect", "--level", help="Verdict level that counts as flagged."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the metrics as JSON here."),
    streaming: bool = typer.Option(
        True, "--streaming/--no-streaming", help="Measure exchanges-to-flag by re-scanning time prefixes."
    ),
) -> None:
    """Evaluate a scan against labels: ROC AUC, TPR at fixed FPR, campaign recall and purity."""
    from distillguard.eval import evaluate
    from distillguard.report.console import print_eval

    if not (scan_dir / "accounts.parquet").exists():
        fail(f"{scan_dir} holds no scan (accounts.parquet missing); run `distillguard scan` first")
    if not labels.exists():
        fail(f"labels file {labels} not found")
    try:
        rep = evaluate(scan_dir, labels, level, streaming=streaming)
    except ValueError as e:
        fail(str(e))
    print_eval(rep)
    if json_out is not None:
        json_out.write_bytes(
            orjson.dumps(
                {
                    "metrics": rep.metrics,
                    "strategies": rep.per_strategy,
                    "campaigns": rep.campaigns,
                    "false_positives": rep.false_positives,
                },
                option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY,
            )
        )


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Where the demo writes its files."),
    accounts: int = typer.Option(1000, "--accounts", help="Accounts in the simulated day."),
    seed: int = typer.Option(7, "--seed", help="Simulator seed."),
) -> None:
    """Simulate a realistic day of API traffic, scan it, show the top campaigns and the evaluation."""
    from distillguard.detect.pipeline import scan as run_scan
    from distillguard.eval import evaluate
    from distillguard.report.console import print_eval, print_scan
    from distillguard.simulate.run import SimConfig, simulate

    out.mkdir(parents=True, exist_ok=True)
    log = out / "day.jsonl"
    labels = out / "day.labels.csv"
    with console.status(f"simulating one day of {accounts:,} accounts (seed {seed})"):
        sim = simulate(SimConfig(accounts=accounts, days=1, seed=seed), log, labels=labels)
    console.print(f"simulated {sim.exchanges:,} exchanges in {sim.seconds:.1f}s -> {log}")
    with console.status("scanning"):
        res, summary = run_scan([log], out / "scan")
    print_scan(res, summary, out / "scan", top=5)
    with console.status("evaluating against the simulator's labels"):
        # Time-to-flag re-scans growing prefixes of the day; `distillguard eval` measures it.
        rep = evaluate(out / "scan", labels, streaming=False)
    print_eval(rep)
    console.print(
        f"next: distillguard eval {out / 'scan'} --labels {labels}  (adds exchanges-to-flag in streaming order)"
    )


@app.command()
def calibrate(
    scan_dir: Path = typer.Argument(
        ..., help="Output directory of `distillguard scan` over benign-heavy traffic."
    ),
    labels: Path | None = typer.Option(
        None, "--labels", help="Labels CSV; without it every account is taken as benign."
    ),
    out: Path = typer.Option(Path("calibration.json"), "--out", "-o", help="Calibration file to write."),
    target: list[str] = typer.Option(
        [], "--target", help="LEVEL=FPR, e.g. suspect=0.01: print the threshold that meets it."
    ),
    decisions: str | None = typer.Option(
        None, "--decisions", help="Review database (`distillguard ui`): refit weights from its decisions."
    ),
    config: Path | None = typer.Option(
        None, "--config", help="Config whose [scoring] is refitted (with --decisions)."
    ),
    out_config: Path = typer.Option(
        Path("scoring.toml"), "--out-config", help="With --decisions: the [scoring] TOML to write."
    ),
) -> None:
    """Measure the benign false-positive rate of each score threshold; optionally solve for target FPRs.

    With --decisions: refit the signal weights from the analysts' confirmed and dismissed accounts
    (docs/ui.md) and write a [scoring] TOML that `distillguard scan --config` loads."""
    if decisions is not None:
        from distillguard.detect.recalibrate_command import recalibrate_command

        recalibrate_command(scan_dir, decisions, config, out_config)
        return
    import numpy as np
    import pyarrow.parquet as pq

    from distillguard.config import Config
    from distillguard.detect import calibration
    from distillguard.eval import read_labels

    if not (scan_dir / "accounts.parquet").exists():
        fail(f"{scan_dir} holds no scan (accounts.parquet missing)")
    t = pq.read_table(scan_dir / "accounts.parquet", columns=["account_id", "score"]).to_pydict()
    scores = np.asarray(t["score"], dtype=np.float64)
    source = f"all accounts of {scan_dir}"
    if labels is not None:
        try:
            lab = read_labels(labels)
        except (ValueError, FileNotFoundError) as e:
            fail(str(e))
        benign = set(lab.account_id[~lab.attack].tolist())
        scores = scores[[a in benign for a in t["account_id"]]]
        source = f"benign accounts of {scan_dir} labelled by {labels.name}"
    if len(scores) == 0:
        fail("no benign accounts to calibrate on")
    cal = calibration.from_scores(scores, source)
    calibration.save(cal, out)
    levels = dict(Config().scoring.levels)
    for lvl, row in cal.table(levels).items():
        console.print(f"{lvl:>8}: threshold {row['threshold']:.3f} -> benign FPR {row['benign_fpr']:.4%}")
    for spec in target:
        name, _, val = spec.partition("=")
        try:
            thr = cal.threshold_for(float(val))
        except ValueError:
            fail(f"--target {spec!r}: expected LEVEL=FPR such as suspect=0.01")
        console.print(
            f"\\[scoring.levels] {name} = {thr:.6f}  # benign FPR {cal.fpr(thr):.4%} (target {val})"
        )
    console.print(f"wrote {out} ({cal.n_benign} benign accounts)")


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
