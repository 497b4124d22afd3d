"""The audit's result: its tables, risks and notes; written as JSON and CSV and shown as rich tables."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from distillguard.audit.risk import RISK_LEVELS, Risk

_LEVEL_STYLE = {"watch": "yellow", "suspect": "bold red"}


@dataclass
class AuditReport:
    tables: dict[str, pa.Table]
    risks: list[Risk]
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    key_countries: list[dict[str, Any]] = field(default_factory=list)

    def worst(self) -> str:
        """The highest risk level found: ok, watch or suspect."""
        found = {r.level for r in self.risks}
        return next((lvl for lvl in reversed(RISK_LEVELS) if lvl in found), "ok")

    def fails(self, level: str) -> bool:
        """True when a risk at or above `level` was found (the `--fail-on` test)."""
        at = RISK_LEVELS.index(level)
        return any(RISK_LEVELS.index(r.level) >= at for r in self.risks)

    def records(self) -> dict[str, list[dict[str, Any]]]:
        """Every table as a list of rows, risks and key countries included."""
        out = {name: t.to_pylist() for name, t in self.tables.items()}
        out["risks"] = [r.row() for r in self.sorted_risks()]
        if self.key_countries:
            out["key_countries"] = self.key_countries
        return out

    def sorted_risks(self) -> list[Risk]:
        return sorted(
            self.risks, key=lambda r: (-RISK_LEVELS.index(r.level), r.kind, r.subject, r.day or date.min)
        )

    def summary(self) -> dict[str, Any]:
        return {
            "verdict": self.worst(),
            "risks": {lvl: sum(r.level == lvl for r in self.risks) for lvl in RISK_LEVELS},
            **self.meta,
            "notes": self.notes,
            "totals": self.tables["totals"].to_pylist() if "totals" in self.tables else [],
        }


def _json(v: Any) -> bytes:
    return orjson.dumps(v, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def write_json(rep: AuditReport, out: Path) -> list[Path]:
    """One `<table>.json` (a list of rows) per table and `audit.json` (verdict, totals, notes)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in rep.records().items():
        (out / f"{name}.json").write_bytes(_json(rows))
        written.append(out / f"{name}.json")
    (out / "audit.json").write_bytes(_json(rep.summary()))
    return [*written, out / "audit.json"]


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, dict | list):
        return orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS).decode()
    if isinstance(v, float):
        return f"{v:.6f}"
    return v


def write_csv(rep: AuditReport, out: Path) -> list[Path]:
    """One `<table>.csv` per table (nested evidence as a JSON cell); empty tables keep their header."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in rep.records().items():
        cols = list(rep.tables[name].column_names) if name in rep.tables else list(rows[0]) if rows else []
        if name == "risks" and not rows:
            cols = ["level", "kind", "subject", "day", "summary", "evidence"]
        with open(out / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for r in rows:
                w.writerow([_cell(r.get(c)) for c in cols])
        written.append(out / f"{name}.csv")
    return written


def _n(v: Any, compact: bool = False) -> str:
    """A cell: dollars for floats, n/a for not reported; token counts compact (12.3M) on the console,
    where exact counts would not fit (JSON and CSV keep them exact)."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"${v:,.2f}"
    if isinstance(v, int) and compact and abs(v) >= 100_000:
        return next(f"{v / d:.1f}{u}" for u, d in (("B", 1e9), ("M", 1e6), ("k", 1e3)) if abs(v) >= d)
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _show(console: Console, title: str, t: pa.Table, keys: list[str], top: int) -> None:
    cols = [*keys, "requests", "input_tokens", "output_tokens", "total_tokens", "est_usd"]
    more = f" (top {top} of {t.num_rows})" if t.num_rows > top else ""
    tab = Table(title=title + more, title_justify="left")
    for c in cols:
        name = c.replace("_tokens", "").replace("est_usd", "est. USD")
        if c in keys:
            tab.add_column(name, overflow="fold")
        else:
            tab.add_column(name, justify="right", no_wrap=True)
    for r in t.slice(0, top).to_pylist():
        tab.add_row(
            *[("(none)" if r[c] is None and c in keys else _n(r[c], c.endswith("_tokens"))) for c in cols]
        )
    console.print(tab)


def print_report(rep: AuditReport, console: Console, top: int = 10) -> None:
    t = rep.tables
    _show(console, "Totals", t["totals"], ["provider", "rows"], top)
    _show(console, "Volume by project / workspace", t["volume_by_project"], ["provider", "project"], top)
    _show(console, "Volume by API key", t["volume_by_key"], ["provider", "api_key"], top)
    _show(console, "Volume by model", t["volume_by_model"], ["provider", "model"], top)
    days = t["volume_by_day"]
    _show(
        console, "Volume by day (latest)", days.slice(max(days.num_rows - top, 0)), ["day", "provider"], top
    )
    if rep.key_countries:
        tab = Table(title="Key countries (from the logs)", title_justify="left")
        for c in ("key", "country", "requests", "share", "expected"):
            tab.add_column(c, justify="right" if c in ("requests", "share") else "left", overflow="fold")
        # unexpected countries first, then by volume
        kc = sorted(rep.key_countries, key=lambda x: (x["expected"] is not False, -x["requests"]))
        for x in kc[:top]:
            exp = {True: "yes", False: "[bold red]no[/]", None: "-"}[x["expected"]]
            tab.add_row(x["key"], x["country"], f"{x['requests']:,}", f"{x['share']:.1%}", exp)
        console.print(tab)
    if rep.risks:
        tab = Table(
            title=f"Compliance risk ({len(rep.risks)} findings)", title_justify="left", show_lines=True
        )
        for c in ("level", "kind", "subject", "day", "what we saw"):
            tab.add_column(c)
        shown = rep.sorted_risks()[: max(top, 1) * 3]
        for risk in shown:
            level = f"[{_LEVEL_STYLE[risk.level]}]{risk.level}[/]"
            tab.add_row(level, risk.kind, risk.subject, str(risk.day or ""), risk.summary)
        console.print(tab)
        if len(rep.risks) > len(shown):
            console.print(f"... {len(rep.risks) - len(shown)} more in risks.json / risks.csv")
    else:
        console.print("[green]No compliance risk found[/] in what was checked.")
    for note in rep.notes:
        console.print(f"[dim]note:[/] {note}")
    console.print(f"verdict: [{_LEVEL_STYLE.get(rep.worst(), 'green')}]{rep.worst()}[/]")
