"""Per-account features: one SQL query assembled from every registered signal, run by any engine.

The query has four layers: `b` projects the stored exchange columns and a few shared row values
(the lower-cased prompt, the prompt key, epoch seconds, the model's first sighting); `p` adds the text
the patterns read and each signal's `pre_columns` (cheap pre-filters that row columns may test before
running costlier expressions); `r` adds each signal's row columns; the outer SELECT groups by account
with each signal's aggregates.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from distillguard.detect.signals.base import Signal
from distillguard.detect.signals.release import NEW_AFTER_H
from distillguard.store.engine import Engine

# Patterns read at most this much of a prompt: the head (instructions, meta-prompts) and the tail
# (appended "think step by step" suffixes). Bounds the cost of a 10 MB prompt.
HEAD_CHARS = 4000
TAIL_CHARS = 2000


def _cut(col: str) -> str:
    return (
        f"CASE WHEN length({col}) > {HEAD_CHARS + TAIL_CHARS} "
        f"THEN concat(left({col}, {HEAD_CHARS}), ' ', right({col}, {TAIL_CHARS})) ELSE coalesce({col}, '') END"
    )


_PROMPT_CUT = _cut("e.prompt")
BASE_COLUMNS = (
    """
    e.exchange_id, e.account_id, e.ts, {epoch(e.ts)} AS t, e.model, e.n, e.temperature, e.max_tokens,
    e.logprobs, e.top_logprobs, e.completion_tokens, e.reasoning_effort, e.reasoning_tokens,
    e.reasoning_text, e.user_turns, e.history_overlap, e.end_user, e.status, e.system_prompt,
    {hash(coalesce(e.prompt, ''))} AS pkey,
    m.first_t AS model_first_t,"""
    f"""
    lower({_PROMPT_CUT}) AS ptxt
"""
)
# The text patterns read: system prompt and prompt, lower-cased once (the prompt is lowered in `b`).
TEXT_COLUMN = "concat(lower(coalesce(system_prompt, '')), ' \n ', ptxt) AS txt"

MODELS_SQL = "SELECT model, min({epoch(ts)}) AS first_t FROM %s GROUP BY model"
LOG_START_SQL = "SELECT min({epoch(ts)}) AS t0 FROM %s"


def account_features_sql(
    sigs: Iterable[Signal], log_start_t: float, new_model_t: float | None, source: str = "exchanges"
) -> str:
    sigs = list(sigs)
    pre = "".join(
        f",\n    {expr} AS {alias}" for s in sigs for alias, expr in getattr(s, "pre_columns", {}).items()
    )
    row = ",\n    ".join(f"{expr} AS {alias}" for s in sigs for alias, expr in s.row_columns.items())
    agg = ",\n  ".join(f"{expr} AS {alias}" for s in sigs for alias, expr in s.account_columns.items())
    new_t = "CAST(NULL AS DOUBLE)" if new_model_t is None else repr(float(new_model_t))
    return f"""
WITH b AS (
  SELECT {BASE_COLUMNS},
    {float(log_start_t)!r} AS log_start_t,
    {new_t} AS new_model_t
  FROM {source} e LEFT JOIN models m ON e.model = m.model
),
p AS (
  SELECT *, {TEXT_COLUMN}{pre}
  FROM b
),
r AS (
  SELECT *,
    {row}
  FROM p
)
SELECT account_id,
  count(*) AS n_exchanges,
  {agg}
FROM r
GROUP BY account_id
ORDER BY account_id
"""


def compute(engine: Engine, sigs: Iterable[Signal], source: str = "exchanges") -> pa.Table:
    """Account feature table (one row per account of `source`, sorted by account id)."""
    models = engine.query(MODELS_SQL % source)
    engine.register_arrow("models", models)
    t0 = engine.query(LOG_START_SQL % source).column("t0")[0].as_py()
    if t0 is None:
        raise ValueError("no exchanges to scan")
    firsts = np.asarray(models.column("first_t").to_numpy(zero_copy_only=False), dtype=np.float64)
    new = firsts[firsts >= float(t0) + NEW_AFTER_H * 3600]
    new_model_t = float(new.min()) if len(new) else None
    return engine.query(account_features_sql(sigs, float(t0), new_model_t, source))
