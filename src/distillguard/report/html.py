"""`distillguard report`: one self-contained HTML file (plotly.js inlined once, no CDN), and a PDF of it.

The page carries only aggregates (see `report.data`) and figure specs; the plots are drawn by the
inlined plotly.js when the page loads, so the file works offline and makes no network request.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from distillguard.report import figures
from distillguard.report.data import ReportData

# plotly.js "basic" bundle (bar, pie, scatter: every trace the report draws), vendored: see vendor/README.md.
PLOTLY_JS = "plotly-basic.min.js"
PLOTLY_JS_VERSION = "4.1.1"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class PdfError(RuntimeError):
    """The PDF could not be printed (no Chromium, or Chromium failed)."""


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("distillguard.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    return env


def _num(v: object, digits: int = 3) -> str:
    """Numbers as an analyst reads them: integers with separators, floats to `digits` significant digits."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) or (isinstance(v, str) and v.isdigit()):
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M")
    return str(v)


def _script_json(s: str) -> Markup:
    # JSON inside <script>: "</" would end the element early, so it is written "<\/" (same JSON value).
    return Markup(s.replace("</", "<\\/"))


def render(data: ReportData, js: str | None = None) -> str:
    """The report page as one HTML string; `js` replaces the vendored plotly.js (benchmarks compare)."""
    figs = figures.build(data)
    specs = {k: _script_json(f.to_json()) for k, f in figs.items()}
    tpl = _env().get_template("report.html.j2")
    return tpl.render(
        d=data,
        figs=specs,
        plotly_js=_script_json(plotly_js() if js is None else js),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        scan_dir=data.scan_dir.name,
    )


def plotly_js() -> str:
    return files("distillguard.report").joinpath("vendor", PLOTLY_JS).read_text(encoding="utf-8")


def write_html(data: ReportData, out: Path) -> int:
    """Write the report to `out`; returns its size in bytes."""
    html = render(data).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(html)
    return len(html)


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def write_pdf(html_path: Path, pdf_path: Path, chromium: str | None = None, timeout_s: float = 120.0) -> None:
    """Print the HTML report to PDF with headless Chromium (the plots are drawn before printing)."""
    exe = chromium or find_chromium()
    if exe is None:
        raise PdfError(
            f"no Chromium found ({', '.join(CHROMIUM_NAMES)}); install it, e.g. apt-get install chromium"
        )
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dg-pdf-") as profile:
        cmd = [
            exe,
            "--headless",
            "--disable-gpu",
            # Root (containers, CI) cannot use Chromium's sandbox; the page is our own static file.
            "--no-sandbox",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={pdf_path.resolve()}",
            html_path.resolve().as_uri(),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise PdfError(f"Chromium did not print {html_path} within {timeout_s:.0f} s") from None
    if proc.returncode != 0 or not pdf_path.exists() or pdf_path.stat().st_size == 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise PdfError(f"Chromium failed to print {html_path} (exit {proc.returncode}): {' | '.join(tail)}")
