"""Prompt-skeleton reuse: how much of an account's traffic is a few templates with slots filled in.

The columns come from `detect.skeletons` (MinHash + LSH over masked prompts), merged into the account
table by the pipeline before signals run. Reuse alone is ordinary for back-office jobs; a very narrow
template set (one or two templates for nearly everything) is mitigating, while many prompts over a
generator template are what the fingerprint and shape signals then confirm.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from distillguard.detect.signals.base import Columns, Finding, ramp, register, support
from distillguard.detect.skeletons import SKELETON_KEY_SQL


@register
class Skeleton:
    name: ClassVar[str] = "skeleton"
    row_columns: ClassVar[dict[str, str]] = {"skey": SKELETON_KEY_SQL}
    extra_sql: ClassVar[str | None] = None
    account_columns: ClassVar[dict[str, str]] = {}

    def evaluate(self, cols: Columns) -> list[Finding]:
        if "tpl_reuse" not in cols:
            return []
        n = np.asarray(cols["n_exchanges"], dtype=np.float64)
        reuse = np.asarray(cols["tpl_reuse"], dtype=np.float64)
        top = np.asarray(cols["tpl_top"], dtype=np.float64)
        out_tokens = np.nan_to_num(np.asarray(cols["out_tokens_avg"], dtype=np.float64), nan=0.0)
        return [
            Finding(
                "skeleton.reuse",
                reuse,
                ramp(reuse, 0.3, 0.8) * support(n, 30),
                0.8,
                "{value:.0%} of prompts reuse a template (MinHash-LSH over masked skeletons)",
            ),
            Finding(
                "skeleton.narrow_templates",
                top,
                # One template for nearly everything, with short answers: a fixed back-office job. A
                # generator meta-prompt is one template too, but its answers are long (lists of tasks).
                ramp(top, 0.7, 0.95) * support(n, 50) * ramp(-out_tokens, -400.0, -200.0),
                0.95,
                "{value:.0%} of prompts follow one template with short answers (a fixed job)",
                mitigating=True,
            ),
        ]
