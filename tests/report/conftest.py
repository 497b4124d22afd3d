"""Fixtures for the report tests: one small simulated scan (seconds), and headless Chromium.

Chromium is Debian's `chromium` package, driven by the PyPI `playwright` package with
`executable_path` (never `playwright install`, which downloads a browser). Without it the browser
tests skip locally and fail when `CI` is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillguard.detect.pipeline import scan
from distillguard.simulate.run import SimConfig, simulate


@pytest.fixture(scope="session")
def scan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scan of one simulated day of 120 light accounts (campaigns included), plus a forensics file and
    intel sightings, so that every section of the report has something to show."""
    root = tmp_path_factory.mktemp("report-scan")
    log = root / "day.jsonl"
    simulate(
        SimConfig(accounts=120, days=1, seed=3, volume=0.1), log, labels=root / "day.labels.csv", workers=1
    )
    out = root / "scan"
    scan([log], out)
    forensics: dict[str, Any] = {
        "schema_version": 1,
        "generated_at": "2026-11-02T10:00:00Z",
        "tests": [
            {
                "suspect": "student-5pct",
                "setting": "open",
                "scheme": "kgw",
                "p_value": 3.2e-7,
                "tokens_scored": 48210,
                "accounts_implicated": ["acct_leaker"],
                "controls": [{"name": "control student", "p_value": 0.41}],
                "command": "distillguard forensics test students/5pct",
            },
            {
                "suspect": "control-student",
                "setting": "open",
                "scheme": "kgw",
                "p_value": 0.41,
                "tokens_scored": 47990,
            },
        ],
    }
    (out / "forensics.json").write_bytes(orjson.dumps(forensics))
    pq.write_table(
        pa.table(
            {
                "indicator_id": ["indicator--8f0e5e2c-0000-4000-8000-000000000001"],
                "n": pa.array([17], pa.int64()),
                "first_seen": pa.array([1793491200000000], pa.timestamp("us", "UTC")),
                "last_seen": pa.array([1793530800000000], pa.timestamp("us", "UTC")),
                "accounts": pa.array([2], pa.int64()),
            }
        ),
        out / "intel_sightings.parquet",
    )
    return out


@pytest.fixture(scope="session")
def labels(scan_dir: Path) -> Path:
    return scan_dir.parent / "day.labels.csv"
