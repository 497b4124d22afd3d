"""Request shape: what a harvester asks for per call. Always-maximal output tokens, n>1, the same prompt
sampled many times at non-zero temperature, temperature sweeps, log-probabilities over whole answers, a different set of
tools offered from task to task; and, mitigating,
the same prompts put to several models, and the same prompts replayed deterministically, which is what
evaluation harnesses do."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from distillguard.detect.signals.base import Columns, Finding, example_ids, ramp, register, safe_div, support

HIGH_MAX_TOKENS = 2000  # below this a fixed max_tokens is an ordinary app setting, not "give me everything"
# At or below this temperature a model's answer to the same prompt is (nearly) the same answer again:
# a harvester pays for it and learns nothing new; a benchmark re-run or a regression suite wants exactly it.
DETERMINISTIC_TEMPERATURE = 0.3
# Log-probabilities over an answer at least this long (tokens generated, else asked for) are the teacher's
# token distributions, what logit distillation trains on; over a label or a score (a classifier's
# confidence, a few tokens) they are an ordinary application feature.
LOGPROB_ANSWER_TOKENS = 100


@register
class RequestShape:
    name: ClassVar[str] = "shape"
    row_columns: ClassVar[dict[str, str]] = {
        "mt": "coalesce(max_tokens, 0)",
        "multi_n": "CASE WHEN coalesce(n, 1) > 1 THEN 1 ELSE 0 END",
        "lp_answer": "CASE WHEN (logprobs OR coalesce(top_logprobs, 0) > 0) "
        f"AND coalesce(completion_tokens, max_tokens, 0) >= {LOGPROB_ANSWER_TOKENS} THEN 1 ELSE 0 END",
        "sampled": "CASE WHEN coalesce(temperature, 1.0) >= 0.5 THEN 1 ELSE 0 END",
        # Resampling, sweeps and re-runs send the same *conversation* again (`rkey`: every message), not
        # only the same last user message: an agent repeats its task as the last user message at every
        # step of its loop, followed by different tool calls and results. (The system prompt is left
        # out, as before: the same inputs under two system prompts are a prompt comparison.)
        # The same request again from the same end user: many students asking one textbook question
        # through a tutoring app is not resampling.
        "sampled_key": "CASE WHEN coalesce(temperature, 1.0) >= 0.5 THEN concat(rkey, model, coalesce(end_user, '')) END",
        "temp_key": "CASE WHEN temperature IS NOT NULL THEN concat(rkey, CAST(temperature AS STRING)) END",
        "out_tokens": "coalesce(completion_tokens, 0)",
        "pm_key": "concat(pkey, '|', model)",
        # Which tools the request offers, when it offers any: the set (`tool_set`, a hash of their names)
        # where the log names them, else only how many.
        "tool_key": "CASE WHEN coalesce(n_tools, 0) > 0 THEN coalesce(tool_set, CAST(n_tools AS STRING)) END",
        # Answered requests only: retrying a refused or failed call is not a re-run.
        # (with a little slack: a float32 temperature column holds 0.3 as 0.30000001, and engines differ
        # in which width they compare at)
        "det_key": f"CASE WHEN temperature <= {DETERMINISTIC_TEMPERATURE + 1e-6} AND coalesce(n, 1) = 1 "
        "AND coalesce(status, 200) < 400 THEN concat(rkey, '|', model, '|', CAST(temperature AS STRING)) END",
    }
    extra_sql: ClassVar[str | None] = None
    account_columns: ClassVar[dict[str, str]] = {
        "mt_max": "max(mt)",
        "mt_min": "min(mt)",
        "mt_high_n": f"sum(CASE WHEN mt >= {HIGH_MAX_TOKENS} THEN 1 ELSE 0 END)",
        "multi_n_n": "sum(multi_n)",
        "lp_n": "sum(lp_answer)",
        "sampled_n": "sum(sampled)",
        "sampled_distinct": "count(DISTINCT sampled_key)",
        "temp_keys": "count(DISTINCT temp_key)",
        "temp_prompts": "count(DISTINCT CASE WHEN temperature IS NOT NULL THEN rkey END)",
        "out_tokens_avg": "avg(out_tokens)",
        "multi_n_ex": "min(CASE WHEN multi_n = 1 THEN exchange_id END)",
        "prompt_models": "count(DISTINCT pm_key)",
        "tooled_n": "count(tool_key)",
        "tool_sets": "count(DISTINCT tool_key)",
        "det_n": "count(det_key)",
        "det_distinct": "count(DISTINCT det_key)",
    }

    def evaluate(self, cols: Columns) -> list[Finding]:
        n = np.asarray(cols["n_exchanges"], dtype=np.float64)
        high = safe_div(cols["mt_high_n"], n)
        fixed = np.asarray(cols["mt_max"], dtype=np.float64) == np.asarray(cols["mt_min"], dtype=np.float64)
        # "always maximal": every request asks for a large, fixed budget
        always_max = np.where(fixed, high, high * 0.5)
        multi = safe_div(cols["multi_n_n"], n)
        sampled_n = np.asarray(cols["sampled_n"], dtype=np.float64)
        resampled = 1.0 - safe_div(cols["sampled_distinct"], sampled_n)
        resampled = np.where(sampled_n > 0, resampled, 0.0)
        temps_per_prompt = safe_div(cols["temp_keys"], cols["temp_prompts"])
        lp = safe_div(cols["lp_n"], n)
        ex = example_ids(cols["multi_n_ex"])
        distinct = np.asarray(cols["distinct_prompts"], dtype=np.float64)
        # Extra (prompt, model) pairs per distinct prompt: the same questions put to several models.
        compared = np.clip(
            safe_div(np.asarray(cols["prompt_models"], dtype=np.float64) - distinct, distinct), 0, 1
        )
        # Deterministic requests that repeat an earlier one exactly (same messages, model and temperature): a
        # benchmark re-run repeats all of them (0.5 at the second run); a harvester drawing from a finite
        # pool of questions repeats some by chance, so the ramp starts above what chance gives a pool
        # about as large as the account's traffic.
        det_n = np.asarray(cols["det_n"], dtype=np.float64)
        replayed = np.where(det_n > 0, 1.0 - safe_div(cols["det_distinct"], det_n), 0.0)
        tool_sets = np.asarray(cols["tool_sets"], dtype=np.float64)
        return [
            Finding(
                "shape.max_tokens",
                always_max,
                ramp(always_max, 0.6, 0.95) * support(n, 30),
                0.95,
                f"{{value:.0%}} of requests ask for a fixed output budget of {HIGH_MAX_TOKENS}+ tokens",
            ),
            Finding(
                "shape.multi_sample",
                np.maximum(multi, resampled),
                ramp(np.maximum(multi, resampled), 0.2, 0.6) * support(n, 20),
                0.6,
                "{value:.0%} of requests resample a prompt (n>1 or the same prompt again at temperature ≥ 0.5)",
                ex,
            ),
            Finding(
                "shape.temperature_sweep",
                temps_per_prompt,
                ramp(temps_per_prompt, 1.5, 3.0) * support(cols["temp_keys"], 20),
                3.0,
                "each prompt is sent at {value:.1f} temperatures on average",
            ),
            Finding(
                "shape.model_comparison",
                compared,
                ramp(compared, 0.1, 0.3) * support(distinct, 50),
                0.3,
                "{value:.0%} of its distinct prompts were also put to another model (an evaluation harness)",
                mitigating=True,
            ),
            Finding(
                "shape.deterministic_replay",
                replayed,
                # Share measured over the deterministic requests: a handful of retries is not a re-run.
                # Full at 50%: on average every deterministic request was sent twice (a second run of the
                # same set; a nightly harness runs morning and evening). Drawing by chance from a pool about
                # the size of its traffic gives a harvester 37%, under the ramp's start.
                ramp(replayed, 0.4, 0.5) * support(det_n, 100),
                0.5,
                f"{{value:.0%}} of its temperature ≤ {DETERMINISTIC_TEMPERATURE:g} requests repeat an earlier one exactly (same messages, model "
                "and temperature): re-runs that return answers it already has, as benchmark and regression "
                "runs do",
                mitigating=True,
            ),
            Finding(
                "shape.tool_variety",
                tool_sets,
                # An application offers its tools (a few configurations at most: a server toggled on or
                # off); synthetic tool-use data (APIGen, ToolACE) samples a new set of tools per task. With
                # the tools' names a harvest that always offers five is seen too; with counts only, it is not.
                ramp(tool_sets, 2.0, 5.0) * support(cols["tooled_n"], 50),
                5.0,
                "{value:.0f} different sets of tools offered across its tool-use requests (by name where the "
                "log has them, else by number)",
            ),
            Finding(
                "shape.logprobs",
                lp,
                ramp(lp, 0.3, 0.9) * support(n, 30),
                0.9,
                f"{{value:.0%}} of requests ask for log-probabilities over answers of {LOGPROB_ANSWER_TOKENS}+ tokens "
                "(the model's token distributions, what logit distillation trains on)",
            ),
        ]
