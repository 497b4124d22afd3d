"""Plotly figures of a report, built from the aggregated tables of `report.data` (never raw rows).

Only trace types that plotly.js draws without fetching anything are used (no maps, whose topology
files come from a CDN), so the report works offline.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from distillguard.report.data import DIMENSIONS, OTHER, SCORE_BINS, ReportData

LEVEL_COLOURS = {"ok": "#2ca02c", "watch": "#e6b800", "suspect": "#ff7f0e", "block": "#d62728"}
KIND_COLOURS = {"account": "#1f77b4", "ip": "#9467bd", "asn": "#8c564b", "template": "#e377c2"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
OTHER_COLOUR = "#b0b0b0"
LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "margin": {"l": 60, "r": 20, "t": 50, "b": 40},
    "font": {"family": "system-ui, sans-serif", "size": 12},
    "height": 420,
}


def build(data: ReportData) -> dict[str, go.Figure]:
    """Every figure of the report, keyed by the id of the div it is drawn in."""
    figs: dict[str, go.Figure] = {}
    for dim in DIMENSIONS:
        figs[f"volume-{dim}"] = volume(data, dim)
    figs["scores"] = scores(data)
    if data.rows("campaign_graph"):
        figs["campaign-graph"] = campaign_graph(data)
    if data.rows("capability_mix"):
        figs["capability-mix"] = capability_mix(data)
    if data.forensics is not None and data.forensics.tests:
        figs["forensics"] = forensics(data)
    return figs


def volume(data: ReportData, dim: str) -> go.Figure:
    """Exchanges (top) and tokens (bottom) per time bucket, one stacked series per top value."""
    rows = data.rows(f"volume_by_{dim}")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("exchanges", "tokens (prompt + completion)"))  # fmt: skip
    series: dict[str, dict[str, list[Any]]] = defaultdict(lambda: {"t": [], "exchanges": [], "tokens": []})
    for r in rows:
        s = series[r["key"]]
        s["t"].append(r["t"])
        s["exchanges"].append(r["exchanges"])
        s["tokens"].append(r["tokens"])
    # Largest first, "(other)" last, so the legend reads as a ranking.
    order = sorted(series, key=lambda k: (k == OTHER, -sum(series[k]["exchanges"]), k))
    for i, k in enumerate(order):
        s = series[k]
        # One colour per value in both panels (plotly would otherwise colour by trace index).
        colour = OTHER_COLOUR if k == OTHER else PALETTE[i % len(PALETTE)]
        common = {
            "x": s["t"],
            "name": k,
            "legendgroup": k,
            "mode": "lines",
            "line": {"color": colour, "width": 1},
        }
        fig.add_trace(go.Scatter(**common, y=s["exchanges"], stackgroup="ex"), row=1, col=1)
        fig.add_trace(go.Scatter(**common, y=s["tokens"], stackgroup="tok", showlegend=False), row=2, col=1)
    fig.update_layout(
        **LAYOUT,
        title=f"Exchanges and tokens per {data.bucket}, by {dim} (top {len(order) - (OTHER in series)} + other)",
    )
    fig.update_layout(height=520)
    return fig


def scores(data: ReportData) -> go.Figure:
    """Accounts per score bin, stacked by verdict, with each level's threshold and its benign FPR."""
    width = 1.0 / SCORE_BINS
    by_level: dict[str, dict[float, int]] = defaultdict(dict)
    for r in data.rows("score_histogram"):
        by_level[r["verdict"]][float(r["bin_lo"])] = int(r["accounts"])
    fig = go.Figure()
    for lvl in ("ok", "watch", "suspect", "block"):
        if lvl not in by_level:
            continue
        b = by_level[lvl]
        xs = sorted(b)
        fig.add_trace(
            go.Bar(x=[x + width / 2 for x in xs], y=[b[x] for x in xs], width=width, name=lvl,
                   marker_color=LEVEL_COLOURS[lvl])
        )  # fmt: skip
    for lvl, thr in data.levels.items():
        fpr = None if data.fpr is None else data.fpr.get(lvl)
        label = f"{lvl} ≥ {thr:.3g}" + ("" if fpr is None else f" (benign FPR {fpr:.2%})")
        fig.add_vline(x=thr, line_dash="dash", line_color=LEVEL_COLOURS[lvl], annotation_text=label,
                      annotation_textangle=-90, annotation_position="top left")  # fmt: skip
    fig.update_layout(**LAYOUT, barmode="stack", title="Account scores", bargap=0)
    fig.update_xaxes(title="score", range=[0, 1])
    fig.update_yaxes(title="accounts (log)", type="log")
    return fig


def layout_graph(n: int, edges: np.ndarray, seed: int = 7, iterations: int = 120) -> np.ndarray:
    """Fruchterman-Reingold positions for `n` nodes and an (m, 2) edge array, vectorised with numpy
    (O(n²) per iteration; the graph is capped at a few hundred nodes per campaign)."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(-1.0, 1.0, (n, 2))
    if n <= 1:
        return np.zeros((n, 2))
    k = 1.0 / np.sqrt(n)
    temp = 0.2
    for _ in range(iterations):
        delta = pos[:, None, :] - pos[None, :, :]
        dist = np.maximum(np.linalg.norm(delta, axis=2), 1e-3)
        disp = ((k * k / dist**2)[:, :, None] * delta).sum(axis=1)  # repulsion between all pairs
        if len(edges):
            d = pos[edges[:, 0]] - pos[edges[:, 1]]
            ln = np.maximum(np.linalg.norm(d, axis=1), 1e-3)[:, None]
            f = d * ln / k  # attraction along edges
            np.add.at(disp, edges[:, 0], -f)
            np.add.at(disp, edges[:, 1], f)
        disp -= 0.05 * pos  # gravity keeps loose parts close
        ln = np.maximum(np.linalg.norm(disp, axis=1), 1e-9)[:, None]
        pos += disp / ln * np.minimum(ln, temp)
        temp *= 0.97
    pos -= pos.mean(axis=0)
    return pos / max(float(np.abs(pos).max()), 1e-9)


def campaign_graph(data: ReportData) -> go.Figure:
    """Each drawn campaign as its own component on a grid: accounts linked to the IPs, ASNs and prompt
    templates they share with other members."""
    by_camp: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in data.rows("campaign_graph"):
        by_camp[r["campaign_id"]].append(r)
    order = [c for c in (r["campaign_id"] for r in data.rows("campaigns")) if c in by_camp]
    cols = max(1, int(np.ceil(np.sqrt(len(order)))))
    ex: list[float | None] = []
    ey: list[float | None] = []
    nodes: dict[str, dict[str, list[Any]]] = defaultdict(lambda: {"x": [], "y": [], "text": []})
    annotations = []
    for ci, camp in enumerate(order):
        rows = by_camp[camp]
        names = sorted({("account", r["account_id"]) for r in rows} | {(r["kind"], r["node"]) for r in rows})
        idx = {nm: i for i, nm in enumerate(names)}
        edges = np.array([[idx[("account", r["account_id"])], idx[(r["kind"], r["node"])]] for r in rows])
        pos = layout_graph(len(names), edges) * 0.42
        ox, oy = (ci % cols), -(ci // cols)
        pos += np.array([ox, oy])
        for a, b in edges:
            ex += [float(pos[a, 0]), float(pos[b, 0]), None]
            ey += [float(pos[a, 1]), float(pos[b, 1]), None]
        deg = np.bincount(edges.ravel(), minlength=len(names))
        for (kind, name), i in idx.items():
            nodes[kind]["x"].append(float(pos[i, 0]))
            nodes[kind]["y"].append(float(pos[i, 1]))
            nodes[kind]["text"].append(f"{camp} · {kind} {name} · {int(deg[i])} links")
        annotations.append({"x": ox, "y": oy + 0.5, "text": f"<b>{camp}</b>", "showarrow": False})
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", line={"width": 0.6, "color": "#bbb"},
                             hoverinfo="skip", showlegend=False))  # fmt: skip
    for kind in ("account", "ip", "asn", "template"):
        if kind in nodes:
            n = nodes[kind]
            fig.add_trace(
                go.Scatter(x=n["x"], y=n["y"], mode="markers", name=kind, text=n["text"], hoverinfo="text",
                           marker={"size": 9 if kind == "account" else 7, "color": KIND_COLOURS[kind],
                                   "symbol": "circle" if kind == "account" else "diamond"})
            )  # fmt: skip
    fig.update_layout(**LAYOUT, title="Campaigns: accounts and the IPs, ASNs and templates they share",
                      annotations=annotations)  # fmt: skip
    fig.update_layout(height=max(420, 300 * int(np.ceil(len(order) / cols))))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    return fig


def capability_mix(data: ReportData) -> go.Figure:
    """Share of each campaign's prompts per topic, beside the whole traffic's mix."""
    rows = data.rows("capability_mix")
    camps = list(dict.fromkeys(r["campaign_id"] for r in rows))
    topics = list(dict.fromkeys(sorted(r["topic"] for r in rows)))
    share = {(r["campaign_id"], r["topic"]): float(r["share"]) for r in rows}
    fig = go.Figure()
    for t in topics:
        fig.add_trace(go.Bar(y=camps, x=[share.get((c, t), 0.0) for c in camps], name=t, orientation="h"))
    fig.update_layout(**LAYOUT, barmode="stack", title="Capability mix of each campaign (share of prompts)")
    fig.update_layout(height=max(300, 40 + 28 * len(camps)))
    fig.update_xaxes(tickformat=".0%", range=[0, 1])
    fig.update_yaxes(autorange="reversed")
    return fig


def forensics(data: ReportData) -> go.Figure:
    """-log10 p of each forensic test against its significance level."""
    assert data.forensics is not None
    tests = data.forensics.tests
    labels = [f"{t.suspect} ({t.scheme})" for t in tests]
    vals = [float(-np.log10(max(t.p_value, 1e-300))) for t in tests]
    fig = go.Figure(
        go.Bar(x=vals, y=labels, orientation="h",
               marker_color=["#d62728" if t.detected else "#7f7f7f" for t in tests])
    )  # fmt: skip
    for a in sorted({t.alpha for t in tests}):
        fig.add_vline(x=float(-np.log10(a)), line_dash="dash", annotation_text=f"α = {a:g}")
    fig.update_layout(**LAYOUT, title="Forensic tests: −log10 p (right of the line: detected)")
    fig.update_layout(height=max(260, 60 + 30 * len(tests)))
    return fig
