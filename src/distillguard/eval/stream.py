"""Time to detection: how many exchanges an attacker account makes before it is flagged.

The whole pipeline (signals, campaigns, combiner) is re-run on growing time prefixes of the scanned
log, as a scheduled scan would see it. For each attacker account, the count is its number of
exchanges up to the first prefix at which its verdict reaches the flag level. That is an upper bound
on what a continuous scan would achieve: resolution is set by the number of prefixes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from distillguard.config import Config
from distillguard.detect.evidence import LEVELS
from distillguard.detect.pipeline import score_exchanges
from distillguard.store.engine import DuckDBEngine, sql_str

FRACTIONS = (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 1.0)


def exchanges_to_flag(
    parquet: Path,
    attackers: set[str],
    cfg: Config | None = None,
    level: str = "suspect",
    fractions: tuple[float, ...] = FRACTIONS,
) -> dict[str, Any]:
    cfg = cfg or Config()
    eng = DuckDBEngine()
    try:
        src = sql_str(str(parquet))
        eng.create_view("all_exchanges", f"SELECT * FROM read_parquet({src})")
        t0, t1 = (
            eng.query("SELECT min({epoch(ts)}) AS a, max({epoch(ts)}) AS b FROM all_exchanges")
            .to_pylist()[0]
            .values()
        )
        first_flag: dict[str, int] = {}
        for f in fractions:
            cut = t0 + (t1 - t0) * f
            eng.create_view("exchanges", f"SELECT * FROM all_exchanges WHERE {{epoch(ts)}} <= {cut!r}")
            res = score_exchanges(eng, cfg)
            counts = dict(
                zip(res.accounts.ids.tolist(), res.accounts.cols["n_exchanges"].tolist(), strict=True)
            )
            for i, a in enumerate(res.accounts.ids):
                if (
                    a in attackers
                    and a not in first_flag
                    and LEVELS.index(res.levels[i]) >= LEVELS.index(level)
                ):
                    first_flag[a] = int(counts[a])
    finally:
        eng.close()
    n = np.array(sorted(first_flag.values()), dtype=np.float64)
    return {
        "attackers": len(attackers),
        "flagged_eventually": len(first_flag),
        "median_exchanges_to_flag": float(np.median(n)) if len(n) else float("nan"),
        "p90_exchanges_to_flag": float(np.percentile(n, 90)) if len(n) else float("nan"),
        "prefixes": len(fractions),
    }
