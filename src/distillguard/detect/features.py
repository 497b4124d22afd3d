"""Per-account features: SQL assembled from every registered signal, run by any engine.

Two steps. `rows_sql` computes every signal's row columns once per scan, and the engine materialises
the result: `b` projects the stored exchange columns and shared row values (the lower-cased prompt,
the prompt key, epoch seconds, the model's first sighting); `p` adds the text the patterns read and
each signal's `pre_columns` (cheap pre-filters that row columns may test first); the SELECT adds the
row columns and drops the text. `aggregate_sql` then groups those rows by account, or by campaign
(accounts relabelled), adding each signal's `window_columns` first, since those depend on the grouping.
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
# The request configuration a client program sets (sampling and output parameters): the key of an
# account's client slices (see `detect.slices`). Not the model (a harvester switches models, a harness
# compares them), nor parameters only some models take (reasoning effort), so one program is one slice.
CLIENT_PARAMS = ("max_tokens", "temperature", "top_p", "n", "logprobs", "top_logprobs")


def client_params_sql(alias: str = "") -> str:
    """A request's client parameters as one SQL string expression (`alias`: the table's, with its dot)."""
    return ", '|', ".join(f"coalesce(lower(CAST({alias}{c} AS STRING)), '-')" for c in CLIENT_PARAMS)


CLIENT_KEY_SQL = "{hash(concat(" + client_params_sql("e.") + "))}"
# A step of a tool loop: the request carries a tool's result, so the model's previous answer (its tool
# call) was executed and fed back. An agent sends its task as the last user message at every step, so
# without this every step reads as a new single-turn prompt. Messages are stored as compact JSON
# (orjson), in which a quote inside a string is escaped: `"role":"tool"` matches a message's role and
# nothing in its content. "function" is the older API's name for the tool role.
TOOL_STEP_SQL = (
    "CASE WHEN instr(coalesce(e.messages, ''), '\"role\":\"tool\"') > 0 "
    "OR instr(coalesce(e.messages, ''), '\"role\":\"function\"') > 0 THEN 1 ELSE 0 END"
)
BASE_COLUMNS = (
    """
    e.exchange_id, e.account_id, e.ts, {epoch(e.ts)} AS t, e.model, e.n, e.temperature, e.max_tokens,
    e.logprobs, e.top_logprobs, e.completion_tokens, e.reasoning_effort, e.reasoning_tokens,
    e.reasoning_text, e.user_turns, e.history_overlap, e.end_user, e.status, e.system_prompt, e.n_tools,
    e.client_ip, e.tool_set,
    {hash(coalesce(e.prompt, ''))} AS pkey,
    {hash(coalesce(e.messages, ''))} AS rkey,"""
    f"""
    {CLIENT_KEY_SQL} AS ckey,
    {TOOL_STEP_SQL} AS tool_step,"""
    """
    m.first_t AS model_first_t,"""
    f"""
    lower({_PROMPT_CUT}) AS ptxt
"""
)
# The text patterns read: system prompt and prompt, lower-cased once (the prompt is lowered in `b`).
TEXT_COLUMN = "concat(lower(coalesce(system_prompt, '')), ' \n ', ptxt) AS txt"

MODELS_SQL = "SELECT model, min({epoch(ts)}) AS first_t FROM %s GROUP BY model"
LOG_START_SQL = "SELECT min({epoch(ts)}) AS t0 FROM %s"


def rows_sql(
    sigs: Iterable[Signal], log_start_t: float, new_model_t: float | None, source: str = "exchanges"
) -> str:
    """Every exchange with every signal's row columns: the text work, done once per scan."""
    sigs = list(sigs)
    pre = "".join(
        f",\n    {expr} AS {alias}" for s in sigs for alias, expr in getattr(s, "pre_columns", {}).items()
    )
    row = ",\n    ".join(f"{expr} AS {alias}" for s in sigs for alias, expr in s.row_columns.items())
    new_t = "CAST(NULL AS DOUBLE)" if new_model_t is None else repr(float(new_model_t))
    keep = ", ".join(ROW_KEEP)
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
)
SELECT {keep},
    {row}
FROM p
"""


# Row values kept after the row columns are computed (the text itself is dropped: it is big).
ROW_KEEP = (
    "exchange_id",
    "account_id",
    "ts",
    "t",
    "model",
    "n",
    "temperature",
    "max_tokens",
    "logprobs",
    "top_logprobs",
    "completion_tokens",
    "user_turns",
    "history_overlap",
    "pkey",
    "rkey",
    "ckey",
)


def aggregate_sql(sigs: Iterable[Signal], rows: str) -> str:
    """Per-group aggregates over `rows` (a table or subquery whose `account_id` is the group key).

    Window columns (which depend on the grouping, e.g. the gap to the previous exchange of the same
    account or campaign) are computed here rather than with the row columns.
    """
    sigs = list(sigs)
    win = "".join(
        f",\n    {expr} AS {alias}" for s in sigs for alias, expr in getattr(s, "window_columns", {}).items()
    )
    agg = ",\n  ".join(f"{expr} AS {alias}" for s in sigs for alias, expr in s.account_columns.items())
    return f"""
WITH r AS (
  SELECT *{win}
  FROM {rows}
)
SELECT account_id,
  count(*) AS n_exchanges,
  {agg}
FROM r
GROUP BY account_id
ORDER BY account_id
"""


def materialize_rows(
    engine: Engine, sigs: Iterable[Signal], source: str = "exchanges", name: str = "dg_rows"
) -> str:
    """Compute the row columns of `source` once into table `name`; returns `name`."""
    models = engine.query(MODELS_SQL % source)
    engine.register_arrow("models", models)
    t0 = engine.query(LOG_START_SQL % source).column("t0")[0].as_py()
    if t0 is None:
        raise ValueError("no exchanges to scan")
    firsts = np.asarray(models.column("first_t").to_numpy(zero_copy_only=False), dtype=np.float64)
    new = firsts[firsts >= float(t0) + NEW_AFTER_H * 3600]
    new_model_t = float(new.min()) if len(new) else None
    sigs = list(sigs)
    engine.materialize(name, rows_sql(sigs, float(t0), new_model_t, source))
    for s in sigs:
        for table, sql in getattr(s, "tables", {}).items():
            engine.materialize(table, sql.replace("{rows}", name))
    return name


def compute(engine: Engine, sigs: Iterable[Signal], rows: str = "dg_rows") -> pa.Table:
    """Account feature table (one row per group of `rows`, sorted by group id)."""
    return engine.query(aggregate_sql(sigs, rows))
