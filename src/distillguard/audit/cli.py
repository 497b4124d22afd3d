"""`distillguard audit`: the typer command (registered in distillguard.cli)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from distillguard.report.errors import fail

console = Console(stderr=True, soft_wrap=True)
out_console = Console(soft_wrap=True)


def audit_cmd(
    usage: list[Path] = typer.Argument(
        None, help="Usage exports: OpenAI /v1/organization/usage/completions pages, Anthropic usage reports."
    ),
    logs: list[Path] = typer.Option(
        [], "--logs", help="Full request logs (OpenTelemetry GenAI, LiteLLM, ...); repeat for several."
    ),
    log_format: str | None = typer.Option(None, "--log-format", help="Format of --logs (default: detected)."),
    config: Path | None = typer.Option(None, "--config", help="TOML config (default ./distillguard.toml)."),
    json_dir: Path | None = typer.Option(
        None, "--json", help="Write every table as JSON into this directory."
    ),
    csv_dir: Path | None = typer.Option(None, "--csv", help="Write every table as CSV into this directory."),
    fail_on: str | None = typer.Option(
        None, "--fail-on", help="Exit 1 when a risk at or above this level is found: watch or suspect."
    ),
    quarantine: Path | None = typer.Option(
        None, "--quarantine", help="Bad usage rows (default: quarantine.jsonl in --json or --csv, else none)."
    ),
    scan_out: Path | None = typer.Option(
        None, "--scan-out", help="Keep the scan of --logs in this directory."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit 3 when any usage row was quarantined."),
    top: int = typer.Option(10, "--top", help="Rows shown per table on the console."),
) -> None:
    """Self-audit of LLM API usage: volume, spend and compliance risk (training-data collection patterns)."""
    from distillguard.audit.prices import PriceError
    from distillguard.audit.report import print_report, write_csv, write_json
    from distillguard.audit.run import run_audit
    from distillguard.config import ConfigError, load
    from distillguard.ingest import IngestError

    usage = usage or []
    if not usage:
        fail("no usage export given: distillguard audit USAGE.json... [--logs LOG...]")
    if fail_on is not None and fail_on not in ("watch", "suspect"):
        fail(f"--fail-on {fail_on!r}: use watch or suspect")
    for p in [*usage, *logs]:
        if not p.is_file():
            fail(f"file {p} not found")
    try:
        cfg = load(config)
    except ConfigError as e:
        fail(str(e))
    qpath = quarantine or next((d / "quarantine.jsonl" for d in (json_dir, csv_dir) if d is not None), None)
    try:
        with console.status("auditing" + (" (scanning the logs)" if logs else "")):
            rep = run_audit(usage, logs, cfg, quarantine=qpath, scan_dir=scan_out, log_format=log_format)
    except (IngestError, PriceError, ValueError) as e:
        fail(str(e))
    print_report(rep, out_console, top)
    if json_dir is not None:
        write_json(rep, json_dir)
        console.print(f"JSON tables in {json_dir}")
    if csv_dir is not None:
        write_csv(rep, csv_dir)
        console.print(f"CSV tables in {csv_dir}")
    if rep.meta.get("quarantined"):
        where = rep.meta.get("quarantine") or "nowhere (give --quarantine, --json or --csv to keep them)"
        console.print(f"[yellow]{rep.meta['quarantined']} usage rows quarantined[/] -> {where}")
    if fail_on is not None and rep.fails(fail_on):
        console.print(f"[bold red]fail-on {fail_on}:[/] verdict {rep.worst()}")
        raise typer.Exit(1)
    if strict and rep.meta.get("quarantined"):
        raise typer.Exit(3)
