"""`distillguard calibrate SCAN_DIR --decisions DB`: the command around `detect.recalibrate`."""

from __future__ import annotations

from pathlib import Path

import orjson
from rich.console import Console

from distillguard.report.errors import fail

console = Console(stderr=True, soft_wrap=True)


def recalibrate_command(scan_dir: Path, db: str, config: Path | None, out: Path) -> None:
    from distillguard.config import ConfigError, load
    from distillguard.detect.recalibrate import (
        RecalibrationError,
        expand_decisions,
        recalibrate,
        scoring_toml,
    )
    from distillguard.ui.decisions import DecisionError, ReviewStore

    try:
        cfg = load(config)
    except ConfigError as e:
        fail(str(e))
    try:
        store = ReviewStore.open(db)
    except DecisionError as e:
        fail(str(e))
    try:
        decided = {s: d.decision for s, d in store.decisions().items()}
    finally:
        store.close()
    camp_path = scan_dir / "campaigns.json"
    campaigns = (
        {c["campaign_id"]: c["accounts"] for c in orjson.loads(camp_path.read_bytes())}
        if camp_path.exists()
        else {}
    )
    try:
        res = recalibrate(scan_dir, expand_decisions(decided, campaigns), cfg.scoring)
    except RecalibrationError as e:
        fail(str(e))
    header = (
        f"written by `distillguard calibrate {scan_dir} --decisions {db}`: "
        f"{res.n_confirmed} confirmed, {res.n_dismissed} dismissed accounts"
    )
    out.write_text(scoring_toml(res.scoring, header))
    console.print(f"bias {res.bias_change[0]:+.3f} -> {res.bias_change[1]:+.3f}")
    for sig, (old, new) in sorted(res.changes.items(), key=lambda kv: -abs(kv[1][1] - kv[1][0]))[:10]:
        console.print(f"{sig:>28}: weight {old:+.3f} -> {new:+.3f}")
    for name in ("dismissed", "confirmed"):
        console.print(
            f"mean score of {name} accounts: {res.reviewed_before[name]:.3f} -> {res.reviewed_after[name]:.3f}"
        )
    console.print(f"wrote {out} (load it with `distillguard scan --config {out}`)")
