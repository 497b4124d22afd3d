"""The Signal protocol and registry.

A signal owns one concept end to end: the per-row SQL expressions it needs (`row_columns`), the
per-account aggregates over them (`account_columns`), and `evaluate`, which turns the aggregated
columns (numpy arrays, one entry per account) into findings with a strength in [0, 1] and words for the
evidence. The SQL is assembled from all registered signals into one query (see `detect.features`), so
adding a signal never adds a pass over the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np

Columns = Mapping[str, np.ndarray]


@dataclass
class Finding:
    """One named quantity a signal measured, for every account."""

    name: str  # e.g. "cot.elicitation"
    value: np.ndarray  # float per account
    strength: np.ndarray  # in [0, 1] per account: 0 absent, 1 fully present
    threshold: float  # value at which strength reaches 1 (for the evidence)
    describe: str  # format string with {value}, e.g. "{value:.0%} of prompts ask for step-by-step reasoning"
    examples: np.ndarray | None = None  # object array of example exchange-id lists per account
    mitigating: bool = False  # a benign indication (lowers the score)
    indicators: np.ndarray | None = None  # object array: matched threat-intel indicator id per account
    meta: dict[str, object] = field(default_factory=dict)


class Signal(Protocol):
    name: ClassVar[str]
    # alias -> SQL expression over one exchange row (dialect macros allowed, see store.engine); a
    # signal may also define `pre_columns`, computed one layer earlier, for row columns to test first,
    # and `window_columns`, computed per grouping (account or campaign) just before aggregation
    row_columns: ClassVar[dict[str, str]]
    # alias -> SQL aggregate over the rows of one account (may use row_columns aliases)
    account_columns: ClassVar[dict[str, str]]
    # Optional query (over `{source}`) returning `account_id` and more per-account columns, for
    # aggregates that need their own GROUP BY (e.g. per-day counts); merged by account id. A signal may
    # also define `tables` (name -> SQL over `exchanges` and the row table `{rows}`): tables computed
    # once per scan, after the row columns, for its `extra_sql` to read whatever the grouping.
    extra_sql: ClassVar[str | None]

    def evaluate(self, cols: Columns) -> list[Finding]: ...


_REGISTRY: dict[str, type[Signal]] = {}


def register(cls: type[Signal]) -> type[Signal]:
    _REGISTRY[cls.name] = cls
    return cls


def signals() -> dict[str, type[Signal]]:
    import distillguard.detect.signals  # noqa: F401  (registers the built-ins)

    return dict(_REGISTRY)


def ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 at or below lo, 1 at or above hi, linear between (the strength of most findings)."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=lo)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def support(n: np.ndarray, full: float = 20.0) -> np.ndarray:
    """How far a share measured on n exchanges can be trusted: grows to 1 at `full` exchanges."""
    return np.clip(np.asarray(n, dtype=np.float64) / full, 0.0, 1.0)


def example_ids(col: np.ndarray) -> np.ndarray:
    """Per-account lists of example exchange ids from an aggregate such as min(CASE WHEN ... END)."""
    return np.array([[e] if isinstance(e, str) else [] for e in col], dtype=object)


def safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)
