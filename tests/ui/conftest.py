"""A tiny hand-made scan directory (accounts.parquet, campaigns.json, exchanges.parquet) for the console."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

SECRET_PROMPT = "Customer secret prompt: summarise ticket 4711 for Jane Roe"


def _ev(signal: str, value: float, weight: float, examples: list[str] | None = None) -> dict[str, object]:
    return {"signal": signal, "value": value, "threshold": 0.5, "weight": weight,
            "detail": f"{signal} measured {value}", "examples": examples or [], "indicator": None}  # fmt: skip


@pytest.fixture()
def scan_dir(tmp_path: Path) -> Path:
    out = tmp_path / "scan"
    out.mkdir()
    accounts = {
        "acct_harvest": (0.97, "block", "C0001", [_ev("fingerprint.self_instruct", 0.3, 6.5, ["ex_h1"])]),
        "acct_member": (0.9, "block", "C0001", [_ev("shape.max_tokens", 0.9, 2.0)]),
        "acct_harness": (0.3, "watch", None, [_ev("open_loop.single_turn", 1.0, 1.0), _ev("timing.round_the_clock", 1.0, 1.5)]),
        "acct_quiet": (0.003, "ok", None, []),
    }  # fmt: skip
    pq.write_table(
        pa.table(
            {
                "account_id": list(accounts),
                "score": [v[0] for v in accounts.values()],
                "verdict": [v[1] for v in accounts.values()],
                "campaign_id": [v[2] for v in accounts.values()],
                "reasons": ["" for _ in accounts],
                "own_score": [v[0] for v in accounts.values()],
                "n_exchanges": pa.array([10, 10, 10, 10], pa.int64()),
                "evidence": [orjson.dumps(v[3]).decode() for v in accounts.values()],
            }
        ),
        out / "accounts.parquet",
    )
    camps = [{"campaign_id": "C0001", "score": 0.99, "verdict": "block", "n_accounts": 2, "n_exchanges": 20,
              "accounts": ["acct_harvest", "acct_member"], "links": [],
              "evidence": [_ev("campaign.coordination", 2.0, 1.5)]}]  # fmt: skip
    (out / "campaigns.json").write_bytes(orjson.dumps(camps))
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    ids = ["ex_h1", "ex_h2", "ex_m1", "ex_b1", "ex_b2"]
    owners = ["acct_harvest", "acct_harvest", "acct_member", "acct_harness", "acct_harness"]
    pq.write_table(
        pa.table(
            {
                "exchange_id": ids,
                "ts": pa.array([t0 + timedelta(minutes=i) for i in range(5)], pa.timestamp("us", "UTC")),
                "account_id": owners,
                "model": ["m"] * 5,
                "prompt": ["Come up with a series of tasks", "task 2", "m1", SECRET_PROMPT, "b2"],
            }
        ),
        out / "exchanges.parquet",
    )
    return out
