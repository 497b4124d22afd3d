"""Issue 6's review bar at full size: 600 simulated accounts, 20 false positives dismissed in the console
by clicking (Playwright, Debian's chromium), recalibration, then a fresh seed scanned with the old and
the new config. Prints the benign false-positive rate and the TPR at the `suspect` cut-off, old vs new.

    .venv/bin/python benchmarks/review_roundtrip.py [--accounts 600] [--seed-a 11] [--seed-b 12]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.ui.roundtrip import run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=600)
    ap.add_argument("--volume", type=float, default=1.0)
    ap.add_argument("--seed-a", type=int, default=11)
    ap.add_argument("--seed-b", type=int, default=12)
    ap.add_argument("--out", type=Path, default=None, help="Keep the work files here.")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or sys.exit("needs Debian's chromium (apt-get install chromium)")
    root = args.out or Path(tempfile.mkdtemp(prefix="review-roundtrip-"))
    root.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium)
        try:
            r = run(root, browser, args.accounts, args.volume, args.seed_a, args.seed_b)
        finally:
            browser.close()
    r.pop("decisions")
    print(json.dumps(r, indent=2))
    old, new = r["old"], r["new"]
    print(
        f"fresh seed {args.seed_b}: benign FPR {old['fpr']:.2%} -> {new['fpr']:.2%}, "
        f"TPR {old['tpr']:.2%} -> {new['tpr']:.2%} ({new['n_benign']} benign, {new['n_attack']} attack accounts)"
    )


if __name__ == "__main__":
    main()
