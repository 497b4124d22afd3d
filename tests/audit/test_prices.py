"""The spend estimate: prefix matching, cache and batch pricing, overrides from config."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from distillguard.audit.config import AuditConfig, ModelPrice
from distillguard.audit.prices import PriceError, load, row_costs
from distillguard.audit.usage import TOKEN_COLUMNS


def _rows(*rows: dict) -> pa.Table:
    cols = {c: [r.get(c, 0) for r in rows] for c in TOKEN_COLUMNS}
    return pa.table(
        {
            "model": [r["model"] for r in rows],
            "batch": pa.array([r.get("batch") for r in rows], pa.bool_()),
            **{c: pa.array(v, pa.int64()) for c, v in cols.items()},
        }
    )


def test_longest_prefix_wins() -> None:
    p = load(AuditConfig())
    assert p.find("gpt-4o-mini-2024-07-18")[0] == "gpt-4o-mini"
    assert p.find("gpt-4o-2024-08-06")[0] == "gpt-4o"
    assert p.find("o1-2024-12-17")[0] == "o1"
    assert p.find("o10") is None and p.find("ft:gpt-4o:acme::x") is None and p.find(None) is None
    assert p.as_of != "undated"


def test_costs_by_hand() -> None:
    p = load(AuditConfig())
    t = _rows(
        # gpt-4o: 200 uncached x 2.50 + 800 cached x 1.25 + 500 out x 10.00 = 6,500 per 1M
        {
            "model": "gpt-4o-2024-08-06",
            "input_tokens": 1000,
            "cached_input_tokens": 800,
            "output_tokens": 500,
        },
        # the same as a batch: half
        {
            "model": "gpt-4o-2024-08-06",
            "input_tokens": 1000,
            "cached_input_tokens": 800,
            "output_tokens": 500,
            "batch": True,
        },
        # claude-sonnet-4: 1500 x 3 + 500 x 3.75 + 1000 x 6 + 200 x 0.30 + 500 x 15 = 19,935 per 1M
        {
            "model": "claude-sonnet-4-20250514",
            "input_tokens": 3200,
            "cache_write_5m_tokens": 500,
            "cache_write_1h_tokens": 1000,
            "cached_input_tokens": 200,
            "output_tokens": 500,
        },
        {"model": "my-own-model", "input_tokens": 10, "output_tokens": 10},
        {"model": "o3-2025-04-16", "input_tokens": 10, "output_tokens": 10},
    )
    usd, reasoning = row_costs(t, p, 0.5)
    assert usd[:3] == pytest.approx([0.0065, 0.00325, 0.019935])
    assert usd[3] != usd[3]  # NaN: unpriced, not free
    assert reasoning.tolist() == [False, False, False, False, True]


def test_override_and_bad_table(tmp_path: Path) -> None:
    cfg = AuditConfig(
        price_overrides={
            "gpt-4o": ModelPrice(input=1.0, output=2.0),
            "acme-llm": ModelPrice(input=1, output=1),
        }
    )
    p = load(cfg)
    usd, _ = row_costs(
        _rows(
            {"model": "gpt-4o", "input_tokens": 1_000_000, "output_tokens": 1_000_000},
            {"model": "acme-llm-v2", "input_tokens": 1_000_000},
        ),
        p,
        0.5,
    )
    assert usd.tolist() == pytest.approx([3.0, 1.0])
    bad = tmp_path / "prices.toml"
    bad.write_text('[models."x"]\ninput = -1\noutput = 1\n')
    with pytest.raises(PriceError, match=r"models\.x: input"):
        load(AuditConfig(prices=bad))
