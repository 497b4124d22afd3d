"""The report bar: a 1M-exchange scan's HTML report renders in headless Chromium in < 3 s, is < 10 MB and
makes no network request.

    python benchmarks/report_1m.py                     # 1M log (cached, see data.py) -> scan -> report
    python benchmarks/report_1m.py --scan-dir DIR      # report an existing scan instead
    python benchmarks/report_1m.py --size 100k --runs 5

Steps: the cached bench log (benchmarks/data.py), `distillguard scan` (reused when bench-out already has
a scan of that log), `distillguard report` (whole process, timed), then the page opened in Debian's
Chromium through playwright `--runs` times. Render time is measured in the page, from navigation start
to the last plot drawn (`data-done-ms`), and from Python around `goto` + wait. Side by side, alternating,
the same report with the full plotly.js bundle that the `plotly` Python package ships (what
`fig.write_html(include_plotlyjs=True)` would inline) is rendered as the baseline, so the ratio shows
what the vendored basic bundle buys on the same machine at the same moment. Results go to
bench-out/report-results.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

# Run as a script: this directory is on sys.path, so the sibling modules import by name.
import data
import measure

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench-out"
BAR_RENDER_S = 3.0
BAR_SIZE_B = 10_000_000


def say(msg: str) -> None:
    print(msg, flush=True)


def cli() -> list[str]:
    exe = Path(sys.executable).parent / "distillguard"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "distillguard.cli"]


def scan_dir_for(rows: int) -> Path:
    log = data.bench_log(rows, say=say)
    out = OUT / f"scan-report-{data.label(rows)}"
    summ = out / "summary.json"
    if summ.exists() and orjson.loads(summ.read_bytes()).get("exchanges") == rows:
        say(f"reusing the scan in {out}")
        return out
    say(f"scanning {log.name} ...")
    m = measure.run([*cli(), "scan", str(log), "--out", str(out)], OUT / "logs" / "report-scan.log")
    if m.rc != 0:
        raise SystemExit(f"scan failed (exit {m.rc}); see {OUT / 'logs' / 'report-scan.log'}")
    say(f"  scan {m.wall_s:.1f}s")
    return out


def render_once(browser: Any, path: Path) -> dict[str, Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        t = time.perf_counter()
        page.goto(path.as_uri(), wait_until="load")
        page.wait_for_function("document.body.dataset.plotsDrawn !== undefined", timeout=60_000)
        wall = time.perf_counter() - t
        ds = page.evaluate("Object.assign({}, document.body.dataset)")
        svgs = page.evaluate(
            "Array.from(document.querySelectorAll('div.plot')).filter(d => d.querySelector('svg.main-svg')).length"
        )
    finally:
        ctx.close()
    return {
        "page_ms": int(ds["doneMs"]),
        "plotly_parse_ms": int(ds["plotlyMs"]),
        "plots_ms": int(ds["plotsMs"]),
        "figure_ms": orjson.loads(ds["figureMs"]),
        "wall_s": wall,
        "plots": int(ds["plotsDrawn"]),
        "plots_with_svg": svgs,
        "requests": len(requests),
        "external_requests": [u for u in requests if not u.startswith("file:")],
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1M", help="exchanges in the bench log (1M, 100k, ...)")
    ap.add_argument("--scan-dir", type=Path, help="report this existing scan instead of scanning a bench log")
    ap.add_argument(
        "--runs", type=int, default=3, help="renders of each page (alternating with the baseline)"
    )
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args(argv)
    import plotly.offline
    from playwright.sync_api import sync_playwright

    from distillguard.report.data import load
    from distillguard.report.html import render

    rows = int(
        float(args.size.upper().rstrip("KM")) * {"K": 1_000, "M": 1_000_000}.get(args.size.upper()[-1], 1)
    )
    scan_dir = args.scan_dir or scan_dir_for(rows)
    summary = orjson.loads((scan_dir / "summary.json").read_bytes())
    say(
        f"scan: {summary['exchanges']:,} exchanges, {summary['accounts']:,} accounts, {summary['campaigns']} campaigns"
    )
    work = OUT / "report"
    work.mkdir(parents=True, exist_ok=True)
    html = work / "report.html"
    m = measure.run([*cli(), "report", str(scan_dir), "--out", str(html)], OUT / "logs" / "report.log")
    if m.rc != 0:
        raise SystemExit(f"report failed (exit {m.rc}); see {OUT / 'logs' / 'report.log'}")
    size = html.stat().st_size
    say(
        f"distillguard report: {m.wall_s:.1f}s whole process, peak {measure.gib(m.peak)}, {size / 1e6:.2f} MB"
    )
    # Baseline: the same aggregates and figures with the full plotly.js bundle of the Python package.
    t = time.perf_counter()
    d = load(scan_dir)
    agg_s = time.perf_counter() - t
    full = work / "report-full-plotly.html"
    full.write_text(render(d, js=plotly.offline.get_plotlyjs()))
    say(f"aggregation alone (in process): {agg_s:.2f}s; baseline page {full.stat().st_size / 1e6:.2f} MB")
    runs: list[dict[str, Any]] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium)
        try:
            render_once(browser, html)  # warm-up: Chromium's first page pays for its own start-up
            for i in range(args.runs):
                a = render_once(browser, html)
                b = render_once(browser, full)
                say(
                    f"  run {i + 1}/{args.runs}: report {a['page_ms']:5d} ms (plotly.js parse {a['plotly_parse_ms']} ms, "
                    f"plots {a['plots_ms']} ms)  full-bundle baseline {b['page_ms']:5d} ms"
                )
                runs.append({"report": a, "baseline": b})
        finally:
            browser.close()
    med = statistics.median(r["report"]["page_ms"] for r in runs) / 1000
    ratio = statistics.median(r["report"]["page_ms"] / max(r["baseline"]["page_ms"], 1) for r in runs)
    worst = runs[0]["report"]
    for r in runs:
        worst = max(worst, r["report"], key=lambda x: x["page_ms"])
    bars = [
        ("render in headless Chromium (median)", f"< {BAR_RENDER_S:.0f} s", f"{med:.2f} s", med < BAR_RENDER_S),
        ("report file size", "< 10 MB", f"{size / 1e6:.2f} MB", size < BAR_SIZE_B),
        ("network requests besides the file", "0", str(sum(len(r["report"]["external_requests"]) for r in runs)),
         all(not r["report"]["external_requests"] and r["report"]["requests"] == 1 for r in runs)),
        ("plots drawn / console errors", "all / 0", f"{worst['plots_with_svg']}/{worst['plots']} / {len(worst['errors'])}",
         all(r["report"]["plots_with_svg"] == r["report"]["plots"] and not r["report"]["errors"] for r in runs)),
    ]  # fmt: skip
    say(f"render time vs the full-bundle baseline (median ratio, pair by pair): {ratio:.2f}x")
    say(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    for name, target, got, ok in bars:
        say(f"{name:<40} {target:>10} {got:>16}  {'PASS' if ok else 'FAIL'}")
    (OUT / "report-results.json").write_bytes(
        orjson.dumps(
            {
                "scan": str(scan_dir),
                "exchanges": summary["exchanges"],
                "report_wall_s": m.wall_s,
                "aggregate_s": agg_s,
                "size_bytes": size,
                "render_median_s": med,
                "ratio_vs_full_bundle": ratio,
                "runs": runs,
                "loadavg": os.getloadavg(),
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    return 0 if all(ok for *_, ok in bars) else 1


if __name__ == "__main__":
    sys.exit(main())
