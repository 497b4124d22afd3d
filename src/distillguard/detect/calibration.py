"""Calibration: what false-positive rate a score threshold has on benign traffic.

A calibration is the benign score distribution of a reference population (accounts known or assumed
benign), kept as its sorted scores. It answers both directions: the FPR of a threshold (share of benign
accounts scoring at or above it) and the threshold for a target FPR (the lowest score whose FPR is at
most the target). `scan` reports the FPR of each verdict level with the calibration it was given; the
package ships one made from the simulator's benign personas (`distillguard calibrate`, see docs).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, Field

from distillguard.detect.evidence import LEVELS


class Calibration(BaseModel):
    source: str = Field(description="Where the benign reference came from.")
    n_benign: int
    scores: list[float] = Field(description="Benign reference scores, sorted ascending (rounded to 1e-6).")

    def fpr(self, threshold: float) -> float:
        """Share of benign reference accounts scoring at or above `threshold`."""
        s = np.asarray(self.scores)
        return float(np.mean(s >= threshold)) if len(s) else float("nan")

    def threshold_for(self, target_fpr: float) -> float:
        """Lowest threshold whose benign FPR is at most `target_fpr` (just above a benign score)."""
        s = np.asarray(self.scores)
        if not len(s):
            raise ValueError("empty calibration")
        k = int(np.floor(target_fpr * len(s)))  # benign accounts allowed at or above the threshold
        if k >= len(s):
            return 0.0
        return float(np.nextafter(s[len(s) - 1 - k], 1.0))

    def table(self, levels: Mapping[str, float]) -> dict[str, dict[str, float]]:
        return {lvl: {"threshold": levels[lvl], "benign_fpr": self.fpr(levels[lvl])} for lvl in LEVELS[1:]}


def from_scores(scores: np.ndarray, source: str) -> Calibration:
    s = np.sort(np.round(np.asarray(scores, dtype=np.float64), 6))
    return Calibration(source=source, n_benign=len(s), scores=s.tolist())


def load(path: Path) -> Calibration:
    try:
        return Calibration.model_validate(orjson.loads(path.read_bytes()))
    except FileNotFoundError:
        raise ValueError(f"calibration file {path} not found") from None
    except (orjson.JSONDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not a calibration file ({str(e).splitlines()[0]})") from None


def default() -> Calibration | None:
    """The calibration shipped with the package, if present."""
    p = Path(__file__).resolve().parent.parent / "data" / "calibration.json"
    return load(p) if p.exists() else None


def save(cal: Calibration, path: Path) -> None:
    path.write_bytes(orjson.dumps(cal.model_dump(), option=orjson.OPT_INDENT_2))


def describe(cal: Calibration, levels: Mapping[str, float]) -> dict[str, Any]:
    return {"source": cal.source, "n_benign": cal.n_benign, "levels": cal.table(levels)}
