"""Rich terminal summaries of a scan and of an evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from distillguard.detect.pipeline import ScanResult
    from distillguard.eval import Report

console = Console()
LEVEL_STYLE = {"ok": "green", "watch": "yellow", "suspect": "bold dark_orange", "block": "bold red"}


def print_scan(res: ScanResult, summary: dict[str, Any], out: Path, top: int = 10) -> None:
    v = summary["verdicts"]
    console.print(
        f"[bold]{summary['exchanges']:,}[/] exchanges from [bold]{summary['accounts']:,}[/] accounts "
        f"([red]{summary['quarantined']:,} quarantined[/]) in {sum(summary['seconds'].values()):.1f}s: "
        + ", ".join(f"[{LEVEL_STYLE[k]}]{v[k]:,} {k}[/]" for k in ("block", "suspect", "watch", "ok"))
        + f"; {summary['campaigns']} campaigns"
    )
    if res.campaigns.ids and res.campaign_scores is not None:
        t = Table(title="Top campaigns", show_lines=False)
        for c in ("campaign", "score", "accounts", "exchanges", "links", "top evidence"):
            t.add_column(c)
        cs = res.campaign_scores.score
        for c in np.argsort(-cs)[:top]:
            mem = res.campaigns.members[c]
            ev = res.campaign_evidence[c][:3]
            t.add_row(
                res.campaigns.ids[c],
                f"{cs[c]:.3f}",
                str(len(mem)),
                f"{int(res.accounts.cols['n_exchanges'][mem].sum()):,}",
                ", ".join(f"{k}:{n}" for k, n in res.campaigns.links[c].items()),
                "\n".join(e.detail for e in ev if e.weight > 0),
            )
        console.print(t)
    t = Table(title="Top accounts")
    for c in ("account", "score", "verdict", "campaign", "evidence"):
        t.add_column(c)
    for i in np.argsort(-res.final_score)[:top]:
        c = res.campaigns.label[i]
        t.add_row(
            str(res.accounts.ids[i]),
            f"{res.final_score[i]:.3f}",
            f"[{LEVEL_STYLE[res.levels[i]]}]{res.levels[i]}[/]",
            res.campaigns.ids[c] if c >= 0 else "",
            "\n".join(e.detail for e in res.evidence[i][:3]),
        )
    console.print(t)
    console.print(
        f"outputs in [bold]{out}[/]: accounts.csv, accounts.parquet, campaigns.json, evidence.jsonl"
    )


def print_eval(rep: Report) -> None:
    m = rep.metrics
    t = Table(title="Evaluation")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, val in m.items():
        t.add_row(k, f"{val:.4f}" if isinstance(val, float) else str(val))
    console.print(t)
    t = Table(title="By persona / strategy")
    for col in ("strategy", "label", "accounts", "flagged", "max level", "median score"):
        t.add_column(col)
    for s in rep.per_strategy:
        t.add_row(
            s["strategy"],
            s["label"],
            str(s["accounts"]),
            f"{s['flagged']:.1%}",
            f"[{LEVEL_STYLE[s['max_level']]}]{s['max_level']}[/]",
            f"{s['median_score']:.3f}",
        )
    console.print(t)
    if rep.campaigns:
        t = Table(title="Campaigns (labelled)")
        for col in ("campaign", "strategy", "accounts", "flagged", "grouped"):
            t.add_column(col)
        for camp in rep.campaigns:
            t.add_row(
                camp["campaign_id"],
                camp["strategy"],
                str(camp["accounts"]),
                f"{camp['flagged']:.1%}",
                f"{camp['grouped']:.1%}",
            )
        console.print(t)
    if rep.false_positives:
        t = Table(title=f"False positives ({len(rep.false_positives)} shown)")
        for c in ("account", "persona", "score", "verdict", "reasons"):
            t.add_column(c)
        for f in rep.false_positives[:20]:
            t.add_row(f["account_id"], f["strategy"], f"{f['score']:.3f}", f["verdict"], f["reasons"][:120])
        console.print(t)
