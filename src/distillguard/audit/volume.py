"""Volume tables: usage summed by project, key, model and day, with the spend estimate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.audit.prices import PriceTable, row_costs
from distillguard.audit.usage import TOKEN_COLUMNS

SUMMED = (*TOKEN_COLUMNS, "total_tokens", "requests", "web_search_requests", "est_usd")


def enrich(t: pa.Table, prices: PriceTable, batch_discount: float) -> pa.Table:
    """The usage rows with total_tokens, est_usd (null when the model is not priced), reasoning and
    reasoning_output_tokens appended."""
    usd, reasoning = row_costs(t, prices, batch_discount)
    total = pc.add(t.column("input_tokens"), t.column("output_tokens"))
    out = np.asarray(t.column("output_tokens").to_numpy(zero_copy_only=False), dtype=np.int64)
    return (
        t.append_column("total_tokens", total)
        .append_column("est_usd", pa.array(usd, pa.float64(), mask=np.isnan(usd)))
        .append_column("reasoning", pa.array(reasoning, pa.bool_()))
        .append_column("reasoning_output_tokens", pa.array(np.where(reasoning, out, 0), pa.int64()))
    )


def _group(t: pa.Table, keys: list[str], extra: dict[str, tuple[str, str]] | None = None) -> pa.Table:
    """Sums of SUMMED by `keys`, plus `extra` {output name: (column, aggregation)}; biggest first.

    Sums skip nulls and are null when every value is (Anthropic has no request counts), which is what
    a table should show: "not reported", not 0.
    """
    extra = extra or {}
    aggs = [(c, "sum") for c in SUMMED] + list(extra.values())
    g = t.group_by(keys, use_threads=False).aggregate(aggs)
    names = {f"{c}_sum": c for c in SUMMED} | {f"{c}_{a}": out for out, (c, a) in extra.items()}
    g = g.rename_columns([names.get(n, n) for n in g.column_names])
    return g.select([*keys, *extra, *SUMMED]).sort_by(
        [("total_tokens", "descending"), *((k, "ascending") for k in keys)]
    )


def tables(t: pa.Table) -> dict[str, pa.Table]:
    """totals and volume by project, key, model, day, and key and day, of enriched rows."""
    return {
        "totals": totals(t),
        "volume_by_project": _group(
            t,
            ["provider", "project"],
            {"keys": ("api_key", "count_distinct"), "models": ("model", "count_distinct")},
        ),
        "volume_by_key": _group(
            t,
            ["provider", "api_key"],
            {
                "projects": ("project", "count_distinct"),
                "first_day": ("day", "min"),
                "last_day": ("day", "max"),
                "active_days": ("day", "count_distinct"),
                "reasoning_output_tokens": ("reasoning_output_tokens", "sum"),
            },
        ),
        "volume_by_model": _group(t, ["provider", "model"], {"reasoning": ("reasoning", "max")}),
        "volume_by_day": _group(t, ["day", "provider"]).sort_by(
            [("day", "ascending"), ("provider", "ascending")]
        ),
        # the series the jump check reads, for anyone who wants to plot or re-check it
        "volume_by_key_day": _group(t, ["day", "provider", "api_key"]).sort_by(
            [("day", "ascending"), ("provider", "ascending"), ("api_key", "ascending")]
        ),
    }


def totals(t: pa.Table) -> pa.Table:
    """One row per provider and an `all` row: the sums a hand check of the export reproduces."""
    per = _group(t, ["provider"], {"rows": ("provider", "count")}).sort_by("provider")
    rows: list[dict[str, Any]] = per.to_pylist()
    all_row: dict[str, Any] = {"provider": "all", "rows": t.num_rows}
    for c in SUMMED:
        vals = [r[c] for r in rows if r[c] is not None]
        all_row[c] = sum(vals) if vals else None
    rows.append(all_row)
    unpriced = t.filter(pc.is_null(t.column("est_usd")))
    for r in rows:
        sel = unpriced
        if r["provider"] != "all":
            sel = unpriced.filter(pc.equal(unpriced.column("provider"), r["provider"]))
        r["unpriced_tokens"] = int(pc.sum(sel.column("total_tokens")).as_py() or 0)
    return pa.Table.from_pylist(rows)
