"""The `distillguard report` command (registered in distillguard.cli): HTML, PDF and table exports."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from distillguard.report.errors import fail

console = Console(stderr=True, soft_wrap=True)


def report(
    scan_dir: Path = typer.Argument(..., help="Output directory of `distillguard scan`."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML report to write."),
    pdf: Path | None = typer.Option(
        None, "--pdf", help="Also print the report to this PDF (headless Chromium)."
    ),
    json_dir: Path | None = typer.Option(
        None, "--json", help="Also write every table of the report as JSON and CSV into this directory."
    ),
    labels: Path | None = typer.Option(
        None, "--labels", help="Labels CSV: measure each threshold's FPR on this scan's benign accounts."
    ),
    top: int = typer.Option(25, "--top", help="Accounts listed with their evidence."),
    chromium: str | None = typer.Option(None, "--chromium", help="Chromium executable for --pdf."),
) -> None:
    """Write a self-contained HTML report of a scan (works offline), optionally a PDF and JSON/CSV tables."""
    from distillguard.report.data import Options, ReportError, load, write_tables
    from distillguard.report.html import PdfError, write_html, write_pdf

    if not scan_dir.is_dir():
        fail(f"scan directory {scan_dir} not found")
    if top <= 0:
        fail("--top must be positive")
    t0 = time.perf_counter()
    try:
        with console.status("aggregating the scan"):
            data = load(scan_dir, Options(top_accounts=top, labels=labels))
    except (ReportError, ValueError) as e:
        fail(str(e))
    size = write_html(data, out)
    console.print(f"wrote {out} ({size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    if json_dir is not None:
        files = write_tables(data, json_dir)
        console.print(f"wrote {len(files) // 2} tables as JSON and CSV into {json_dir}")
    if pdf is not None:
        try:
            with console.status("printing the PDF with headless Chromium"):
                write_pdf(out, pdf, chromium)
        except PdfError as e:
            fail(str(e))
        console.print(f"wrote {pdf} ({pdf.stat().st_size / 1e6:.1f} MB)")
