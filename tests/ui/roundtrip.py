"""The review round trip (issue 6's bar), shared by tests/ui/test_review_roundtrip.py (small) and
benchmarks/review_roundtrip.py (full size): simulate a day, scan it with a low cut-off so the queue
holds false positives, dismiss the top-scored benign ones in the console by clicking (Playwright on
Debian's chromium), recalibrate from the decisions, then scan a fresh seed with the old and new config.
"""

from __future__ import annotations

import csv
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import uvicorn
from typer.testing import CliRunner

from distillguard.cli import app as cli_app
from distillguard.config import load
from distillguard.detect.pipeline import scan
from distillguard.simulate.run import SimConfig, simulate
from distillguard.ui.app import create_app
from distillguard.ui.decisions import ReviewStore
from distillguard.ui.scan_view import ScanView

LOW_LEVELS = "[scoring.levels]\nwatch = 0.01\nsuspect = 0.05\nblock = 0.9\n"


def rates(scan_dir: Path, labels: Path, cutoff: float) -> dict[str, float]:
    """Benign false-positive rate and attack true-positive rate at `cutoff` (score >= cutoff is flagged)."""
    lab = {r["account_id"]: r["label"] != "benign" for r in csv.DictReader(labels.open())}
    flagged = {a: s >= cutoff for a, s in _scores(scan_dir).items()}
    ben = [flagged[a] for a, atk in lab.items() if not atk and a in flagged]
    atk = [flagged[a] for a, atk in lab.items() if atk and a in flagged]
    return {
        "fpr": sum(ben) / len(ben),
        "tpr": sum(atk) / len(atk),
        "n_benign": len(ben),
        "n_attack": len(atk),
    }


def _scores(scan_dir: Path) -> dict[str, float]:
    t = pq.read_table(scan_dir / "accounts.parquet", columns=["account_id", "score"]).to_pydict()
    return dict(zip(t["account_id"], t["score"], strict=True))


def _day(root: Path, name: str, accounts: int, seed: int, volume: float) -> tuple[Path, Path]:
    log, labels = root / f"{name}.jsonl", root / f"{name}.labels.csv"
    simulate(SimConfig(accounts=accounts, days=1, seed=seed, volume=volume), log, labels=labels, workers=1)
    return log, labels


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def review_in_browser(browser: Any, scan_dir: Path, db: Path, accounts: list[str], min_score: float) -> None:
    """Log in to a live console and click `dismiss` on each of `accounts`, with a note."""
    store = ReviewStore.open(db)
    password = store.add_user("analyst")
    app = create_app(ScanView(scan_dir, min_score), store)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        for _ in range(200):  # up to 10 s for the server to listen
            if server.started:
                break
            time.sleep(0.05)
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.fill("#name", "analyst")
        page.fill("#password", password)
        page.click("#login")
        page.wait_for_selector("table#accounts")
        for a in accounts:
            # the queue is paged: find the account by searching for it, as an analyst would
            page.fill('input[name="q"]', a)
            page.click("form.filter button")
            page.wait_for_selector(f'#accounts tr[data-subject="{a}"]')
            row = page.locator(f'#accounts tr[data-subject="{a}"]')
            row.locator('input[name="note"]').fill("benign: reviewed")
            row.locator("button.dismiss").click()
            page.wait_for_selector(f"#decision-account-{a}.dismiss", timeout=10_000)
        page.close()
    finally:
        server.should_exit = True
        th.join(timeout=10)
        store.close()


def run(
    root: Path, browser: Any, accounts: int, volume: float, seed_a: int, seed_b: int, dismiss: int = 20
) -> dict[str, Any]:
    low = root / "low.toml"
    low.write_text(LOW_LEVELS)
    cfg_low = load(low)
    cutoff = cfg_low.scoring.levels["suspect"]
    log_a, lab_a = _day(root, "a", accounts, seed_a, volume)
    scan([log_a], root / "scan_a", cfg=cfg_low)
    # the false positives an analyst would dismiss: benign accounts in the queue, highest score first
    benign = {r["account_id"] for r in csv.DictReader(lab_a.open()) if r["label"] == "benign"}
    t = pq.read_table(root / "scan_a" / "accounts.parquet", columns=["account_id", "score"]).to_pylist()
    fps = [r["account_id"] for r in sorted(t, key=lambda r: -r["score"]) if r["account_id"] in benign]
    fps = [
        a
        for a in fps
        if next(r["score"] for r in t if r["account_id"] == a) >= cfg_low.scoring.levels["watch"]
    ]
    chosen = fps[:dismiss]
    db = root / "review.db"
    t0 = time.perf_counter()
    review_in_browser(browser, root / "scan_a", db, chosen, cfg_low.scoring.levels["watch"])
    review_s = time.perf_counter() - t0
    new = root / "new.toml"
    res = CliRunner().invoke(
        cli_app,
        [
            "calibrate",
            str(root / "scan_a"),
            "--decisions",
            str(db),
            "--config",
            str(low),
            "--out-config",
            str(new),
        ],
    )
    if res.exit_code != 0:
        raise RuntimeError(f"calibrate failed: {res.output}")
    log_b, lab_b = _day(root, "b", accounts, seed_b, volume)
    scan([log_b], root / "scan_b_old", cfg=cfg_low)
    scan([log_b], root / "scan_b_new", cfg=load(new))
    # the fresh seed's benign accounts that the old config flags, with their old and new scores
    benign_b = {r["account_id"] for r in csv.DictReader(lab_b.open()) if r["label"] == "benign"}
    old_s, new_s = (_scores(root / d) for d in ("scan_b_old", "scan_b_new"))
    flagged_benign = [(old_s[a], new_s[a]) for a in sorted(benign_b & set(old_s)) if old_s[a] >= cutoff]
    return {
        "dismissed": len(chosen),
        "flagged_benign": flagged_benign,
        "queue_fp_candidates": len(fps),
        "review_seconds": review_s,
        "train": rates(root / "scan_a", lab_a, cutoff),
        "old": rates(root / "scan_b_old", lab_b, cutoff),
        "new": rates(root / "scan_b_new", lab_b, cutoff),
        "decisions": {s: d.decision for s, d in ReviewStore.open(db).decisions().items()},
    }
