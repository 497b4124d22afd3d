"""`distillguard report`: aggregates checked against the scan, the page drawn in headless Chromium."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.report import data as report_data
from distillguard.report.data import OTHER, Options, load
from distillguard.report.figures import layout_graph
from distillguard.report.html import PLOTLY_JS_VERSION, _script_json, plotly_js, render

runner = CliRunner()


@pytest.fixture(scope="module")
def report(scan_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    res = runner.invoke(app, ["report", str(scan_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


# -- what the page shows: aggregates against the scan's own files -----------------------------------


def test_volume_tables_add_up_to_the_log(scan_dir: Path) -> None:
    d = load(scan_dir, Options(top_n=5))
    ex = pq.read_table(scan_dir / "exchanges.parquet", columns=["account_id", "model", "prompt_tokens",
                                                                 "completion_tokens"])  # fmt: skip
    tokens = int(pc.sum(pc.fill_null(ex["prompt_tokens"], 0)).as_py()) + int(
        pc.sum(pc.fill_null(ex["completion_tokens"], 0)).as_py()
    )
    for dim in report_data.DIMENSIONS:
        rows = d.rows(f"volume_by_{dim}")
        assert sum(r["exchanges"] for r in rows) == ex.num_rows, dim
        assert sum(r["tokens"] for r in rows) == tokens, dim
        keys = {r["key"] for r in rows}
        assert len(keys - {OTHER}) <= 5, dim
    # The named accounts are the 5 busiest, and each one's total is its own row count.
    counts = pc.value_counts(ex["account_id"]).to_pylist()
    busiest = sorted(counts, key=lambda c: (-c["counts"], c["values"]))[:5]
    got: dict[str, int] = {}
    for r in d.rows("volume_by_account"):
        got[r["key"]] = got.get(r["key"], 0) + r["exchanges"]
    assert {k: v for k, v in got.items() if k != OTHER} == {c["values"]: c["counts"] for c in busiest}
    assert got[OTHER] == ex.num_rows - sum(c["counts"] for c in busiest)


def test_scores_levels_and_fpr_from_labels(scan_dir: Path, labels: Path) -> None:
    acc = pq.read_table(scan_dir / "accounts.parquet").to_pydict()
    scores = np.asarray(acc["score"])
    d = load(scan_dir, Options(labels=labels))
    assert sum(r["accounts"] for r in d.rows("score_histogram")) == len(scores)
    with open(labels) as f:
        benign = {r["account_id"] for r in csv.DictReader(f) if r["label"] == "benign"}
    b = scores[[a in benign for a in acc["account_id"]]]
    assert len(b) > 10
    for r in d.rows("levels"):
        assert r["accounts_at_or_above"] == int((scores >= r["threshold"]).sum())
        assert r["benign_fpr"] == pytest.approx(float((b >= r["threshold"]).mean()))
    assert d.fpr_source is not None and "labelled by day.labels.csv" in d.fpr_source
    # Without labels the scan's own benign reference (summary.json) is quoted.
    summary = orjson.loads((scan_dir / "summary.json").read_bytes())
    d2 = load(scan_dir)
    assert d2.fpr == {k: v["benign_fpr"] for k, v in summary["calibration"]["levels"].items()}


def test_top_accounts_and_evidence(scan_dir: Path) -> None:
    acc = pq.read_table(scan_dir / "accounts.parquet").to_pylist()
    d = load(scan_dir, Options(top_accounts=7))
    top = d.rows("top_accounts")
    want = sorted(acc, key=lambda a: (-a["score"], a["account_id"]))[:7]
    assert [r["account_id"] for r in top] == [a["account_id"] for a in want]
    ev = d.rows("account_evidence")
    for a in want:
        mine = [(e["signal"], e["value"]) for e in ev if e["account_id"] == a["account_id"]]
        assert mine == [(e["signal"], e["value"]) for e in json.loads(a["evidence"])]
    ex = pq.read_table(scan_dir / "exchanges.parquet", columns=["account_id"])
    n = pc.value_counts(ex["account_id"]).to_pylist()
    per = {c["values"]: c["counts"] for c in n}
    assert all(r["exchanges"] == per[r["account_id"]] for r in top)


def test_campaign_graph_links_only_shared_attributes(scan_dir: Path) -> None:
    d = load(scan_dir)
    camps = orjson.loads((scan_dir / "campaigns.json").read_bytes())
    members = {c["campaign_id"]: set(c["accounts"]) for c in camps}
    rows = d.rows("campaign_graph")
    assert rows, "the simulated day has campaigns sharing infrastructure"
    by_node: dict[tuple[str, str, str], set[str]] = {}
    for r in rows:
        assert r["account_id"] in members[r["campaign_id"]]
        by_node.setdefault((r["campaign_id"], r["kind"], r["node"]), set()).add(r["account_id"])
    assert all(len(a) >= 2 for a in by_node.values())
    assert {k for _, k, _ in by_node} <= {"ip", "asn", "template"}
    # An IP edge is real: that account sent traffic from that address.
    ex = pq.read_table(scan_dir / "exchanges.parquet", columns=["account_id", "client_ip"]).to_pylist()
    pairs = {(e["account_id"], e["client_ip"]) for e in ex}
    assert all((r["account_id"], r["node"]) in pairs for r in rows if r["kind"] == "ip")
    mix = d.rows("capability_mix")
    for c in {r["campaign_id"] for r in mix}:
        assert sum(r["share"] for r in mix if r["campaign_id"] == c) == pytest.approx(1.0)
    sizes = {c["campaign_id"]: c["n_exchanges"] for c in camps}
    for c in members:
        n = sum(r["exchanges"] for r in mix if r["campaign_id"] == c)
        assert n == sizes[c], c


def test_layout_separates_unlinked_groups() -> None:
    # Two 5-cliques joined by nothing: each clique's nodes sit closer to each other than to the other's.
    edges = np.array([(i, j) for g in (0, 5) for i in range(g, g + 5) for j in range(i + 1, g + 5)])
    pos = layout_graph(10, edges)
    d = np.linalg.norm(pos[:, None] - pos[None], axis=2)
    within = max(d[:5, :5].max(), d[5:, 5:].max())
    assert d[:5, 5:].min() > within * 0.5
    assert np.isfinite(pos).all() and np.abs(pos).max() <= 1.0 + 1e-9


def test_no_prompt_text_in_the_page(scan_dir: Path) -> None:
    # The vendored plotly.js is not customer data: search the rest of the page.
    html = render(load(scan_dir)).replace(_script_json(plotly_js()), "")
    assert len(html) < 1_000_000
    ex = pq.read_table(scan_dir / "exchanges.parquet", columns=["prompt", "response_text"]).to_pylist()
    texts = sorted({t for e in ex for t in (e["prompt"], e["response_text"]) if t and len(t) >= 30})
    assert len(texts) > 100
    # Whole texts and their first 30 characters (what a truncated display would show).
    leaked = [t[:60] for t in texts if t[:30] in html]
    assert not leaked
    skel = pq.read_table(scan_dir / "skeletons.parquet", columns=["skel"]).column("skel").to_pylist()
    assert not [s for s in skel if s and len(s) >= 30 and s[:30] in html]


def test_vendored_plotly_matches_the_python_package() -> None:
    import plotly.offline

    assert PLOTLY_JS_VERSION.split(".")[0] == plotly.offline.get_plotlyjs_version().split(".")[0]
    assert f"v{PLOTLY_JS_VERSION}" in plotly_js()[:300]


# -- CLI: exports and errors ------------------------------------------------------------------------


def test_json_and_csv_of_every_table(scan_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    res = runner.invoke(app, ["report", str(scan_dir), "--out", str(tmp_path / "r.html"), "--json", str(out)])
    assert res.exit_code == 0, res.output
    d = load(scan_dir)
    assert {p.stem for p in out.glob("*.json")} == set(d.tables)
    for name, table in d.tables.items():
        js = orjson.loads((out / f"{name}.json").read_bytes())
        with open(out / f"{name}.csv") as f:
            rows = list(csv.reader(f))
        assert len(js) == table.num_rows == len(rows) - 1, name
        assert rows[0] == table.column_names, name
    f = orjson.loads((out / "forensics.json").read_bytes())
    assert [r["detected"] for r in f] == [True, False]


def test_errors_name_what_is_wrong(scan_dir: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 2 and "accounts.parquet is missing" in res.output
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("accounts.parquet", "exchanges.parquet", "summary.json"):
        (bad / f).symlink_to(scan_dir / f)
    (bad / "forensics.json").write_text('{"tests": [{"suspect": "m", "scheme": "kgw", "p_value": 2}]}')
    res = runner.invoke(app, ["report", str(bad), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 2
    assert "forensics.json: field tests.0.p_value" in res.output
    res = runner.invoke(app, ["report", str(scan_dir), "--out", str(tmp_path / "r.html"),
                              "--labels", str(tmp_path / "nope.csv")])  # fmt: skip
    assert res.exit_code == 2 and "nope.csv not found" in res.output


# -- the page in headless Chromium --------------------------------------------------------------------


def test_page_draws_every_plot_offline(report: Path, browser: Any) -> None:
    html = report.read_text()
    assert len(html) < 10_000_000
    # No element loads anything: no script, link, image or frame has a src or href.
    assert not re.search(r"<(script|link|img|iframe|source|embed|object)\b[^>]*\b(src|href|data)\s*=", html)
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    requests: list[str] = []
    blocked: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    def deny(route: Any) -> None:
        blocked.append(route.request.url)
        route.abort()

    ctx.route(re.compile(r"^(?!file:).*"), deny)
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    try:
        page.goto(report.as_uri(), wait_until="load")
        page.wait_for_function("document.body.dataset.plotsDrawn !== undefined", timeout=30_000)
        plots = page.evaluate(
            """() => Array.from(document.querySelectorAll('div.plot')).map(d => ({
                id: d.id,
                svg: d.querySelectorAll('svg.main-svg').length,
                marks: d.querySelectorAll('g.trace path, g.trace rect, g.points path, path.point').length,
                w: d.getBoundingClientRect().width,
                h: d.getBoundingClientRect().height}))"""
        )
        drawn = int(page.evaluate("document.body.dataset.plotsDrawn"))
    finally:
        ctx.close()
    ids = {p["id"] for p in plots}
    want = {f"fig-volume-{d}" for d in report_data.DIMENSIONS} | {
        "fig-scores", "fig-campaign-graph", "fig-capability-mix", "fig-forensics"}  # fmt: skip
    assert ids == want
    assert drawn == len(want)
    for p in plots:
        assert p["svg"] >= 1, p
        assert p["marks"] > 0, p
        assert p["w"] > 300 and p["h"] > 200, p
    assert problems == []
    assert requests == [report.as_uri()]
    assert blocked == []


def test_sections_show_the_scan(report: Path, scan_dir: Path, browser: Any) -> None:
    page = browser.new_page()
    try:
        page.goto(report.as_uri())
        accounts = page.locator("#accounts-table > tbody > tr > td.id").all_inner_texts()
        campaigns = page.locator("#campaigns-table > tbody > tr > td.id").all_inner_texts()
        intel = page.locator("#intel-table").inner_text()
        forensics = page.locator("#forensics-table").inner_text()
        page.locator("#accounts-table details").first.click()
        ev_visible = page.locator("#accounts-table details table.evidence").first.is_visible()
    finally:
        page.close()
    acc = pq.read_table(scan_dir / "accounts.parquet").to_pylist()
    top = sorted(acc, key=lambda a: (-a["score"], a["account_id"]))[:25]
    assert accounts == [a["account_id"] for a in top]
    camps = orjson.loads((scan_dir / "campaigns.json").read_bytes())
    assert sorted(campaigns) == sorted(c["campaign_id"] for c in camps)
    assert "indicator--8f0e5e2c" in intel
    assert "student-5pct" in forensics and "acct_leaker" in forensics and "3.2e-07" in forensics
    assert ev_visible


def test_pdf_export(scan_dir: Path, tmp_path: Path, chromium: str) -> None:
    import pypdf

    html, pdf = tmp_path / "r.html", tmp_path / "r.pdf"
    res = runner.invoke(
        app, ["report", str(scan_dir), "--out", str(html), "--pdf", str(pdf), "--chromium", chromium]
    )
    assert res.exit_code == 0, res.output
    reader = pypdf.PdfReader(str(pdf))
    assert len(reader.pages) >= 3
    text = " ".join(p.extract_text() for p in reader.pages)
    # Figure titles are SVG text drawn by plotly.js: present only if the plots were drawn before printing.
    for title in ("Account scores", "Capability mix", "Campaigns: accounts", "Exchanges and tokens per"):
        assert title in text, title


def test_scan_without_campaigns_calibration_or_extras(scan_dir: Path, tmp_path: Path, browser: Any) -> None:
    # The least a scan directory can hold: no campaigns, skeletons, intel, forensics or calibration.
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("accounts.parquet", "exchanges.parquet"):
        (bare / f).symlink_to(scan_dir / f)
    summary = orjson.loads((scan_dir / "summary.json").read_bytes())
    summary.pop("calibration")
    (bare / "summary.json").write_bytes(orjson.dumps(summary))
    d = load(bare)
    assert d.fpr is None and d.fpr_source is None
    assert d.rows("campaigns") == [] and d.rows("campaign_graph") == [] and d.forensics is None
    out = tmp_path / "r.html"
    out.write_text(render(d))
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        page.goto(out.as_uri())
        page.wait_for_function("document.body.dataset.plotsDrawn !== undefined", timeout=30_000)
        text = page.inner_text("body")
        undrawn = page.evaluate(
            "Array.from(document.querySelectorAll('div.plot')).filter(d => !d.querySelector('svg.main-svg')).length"
        )
    finally:
        page.close()
    assert problems == [] and undrawn == 0
    assert "No campaigns" in text and "No benign reference: thresholds only" in text
    assert "No intel matches" in text and "Watermark and forensics" not in text
