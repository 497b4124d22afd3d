"""Online risk at request time: the streaming detector's verdict per account drives graded actions.

Off the request path: each completed, admitted exchange is queued as one JSON line (`observe`, a few
us, after the response is sent); one background task drains the queue in batches and hands them to
the risk worker (risk_worker.py: a child process by default, so scoring never holds the gateway's GIL),
which feeds the exchanges to an `OnlineScorer` (`learn_one`, ~20 us) and re-scores an account
(`score_one`, ~100 ms of CPU: the batch feature SQL over its window in DuckDB) once it has
`rescore_every` new exchanges or `rescore_s` seconds after its last new one, at most every
`rescore_min_s`. The latest verdict per account sits in a dict that the request path only reads
(`decide`, O(1)): a graded action applies from the account's next request after the verdict.

The account's level maps to a list of actions (`RiskConfig.actions`):

- `allow`: nothing; `throttle`: 429 with Retry-After; `require_verification`: 403
  `verification_required`; `block`: 403 `risk_block`;
- `cap_max_tokens`: max_tokens / max_completion_tokens / max_output_tokens clamped to
  `max_tokens_cap` (set to it when the request named none);
- `disable_logprobs`: logprobs and top_logprobs dropped; `disable_n`: n (and best_of) forced to 1;
- `strip_reasoning`: reasoning / reasoning_content removed from the JSON response and from SSE
  deltas, reasoning items and reasoning events of the Responses API dropped.

Every decision is recorded in the exchange's attributes: `risk.level`, `risk.score`, `risk.actions`,
`risk.reasons` (the reason code `risk_<level>` and the top evidence signals), and `risk.shadow=1` in
shadow mode, where nothing is changed.

The per-account state is a `RiskState` (risk_state.py): in-process (`[risk] state = "memory"`, one
scorer per gateway process) or in Redis (`state = "redis"`), where replicas share each account's window,
claim its re-scores so they are done once, and pull each other's verdicts every `sync_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from distillguard.detect.online import OnlineScorer
from distillguard.exchange import Exchange, validate
from distillguard.gateway.background import cancel_task
from distillguard.gateway.config import RiskConfig
from distillguard.gateway.errors import GatewayError, forbidden
from distillguard.gateway.risk_state import RiskState, RiskVerdict
from distillguard.gateway.risk_worker import RiskWorker, build_worker

__all__ = ["RiskDecision", "RiskEngine", "RiskVerdict", "strip_event", "strip_json", "to_exchange"]

log = logging.getLogger("distillguard.gateway.risk")

_REFUSING = ("block", "require_verification", "throttle")
_BATCH_MAX = 1024  # exchanges handed to the worker at once
_GATHER_S = 0.05  # how long the first exchange of a batch waits for others
_REASONING_KEYS = ("reasoning", "reasoning_content")
_REASONING_EVENTS = "response.reasoning"  # prefix of the Responses API reasoning events


@dataclass(slots=True)
class RiskDecision:
    """What `decide` did to one request."""

    refusal: GatewayError | None = None
    strip_reasoning: bool = False
    body_changed: bool = False


def to_exchange(rec: dict[str, Any]) -> Exchange:
    """The gateway record as an `Exchange` (fields the model rejects go to attributes, as in the audit)."""
    try:
        return validate(rec)
    except ValidationError:
        from distillguard.gateway.audit import final_line

        return validate(orjson.loads(final_line(rec)))


class RiskEngine:
    """Background learning and scoring, the verdict dict, and the per-request decision."""

    def __init__(
        self, cfg: RiskConfig, scorer: OnlineScorer | None = None, state: RiskState | None = None
    ) -> None:
        self.cfg = cfg
        # a child process unless a scorer or state object is injected (those stay in this process)
        self.worker: RiskWorker = build_worker(cfg, scorer, state)
        self.verdicts: dict[str, RiskVerdict] = {}
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=cfg.queue_max)
        # shared state: wake at least every sync_s to pull verdicts reached on other replicas
        self._wait_s = min(cfg.rescore_s, cfg.sync_s) if cfg.state == "redis" else cfg.rescore_s
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.learnt = 0
        self.scored = 0
        self.score_seconds = 0.0
        self.applied = 0  # exchanges whose batch's verdicts are in `verdicts`
        self.failures = 0  # batches (or idle syncs) whose learning, scoring or sharing failed
        self._failing = False

    # -- background -------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            await self.worker.start()
            self._task = asyncio.create_task(self._run(), name="distillguard-risk")

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None
        await self.worker.close()  # after the batch in flight, if any

    def observe(self, rec: dict[str, Any]) -> None:
        """Queue one completed exchange (called after the response; never blocks, drops when full)."""
        if self._queue.full():
            self.dropped += 1
            return
        try:
            # serialised now: a snapshot of the record, and what the worker reads
            line = orjson.dumps(rec)
        except TypeError:  # a value JSON cannot hold; the audit moved it to attributes, risk skips it
            self.dropped += 1
            return
        self._queue.put_nowait(line)

    async def _run(self) -> None:
        while True:
            batch: list[bytes] = []
            with contextlib.suppress(TimeoutError):  # a timeout still re-scores accounts gone quiet
                batch.append(await asyncio.wait_for(self._queue.get(), timeout=self._wait_s))
            if batch and self._queue.qsize() < _BATCH_MAX:
                # let a batch gather: one hand-over per request would wake the worker (a thread and a
                # process) ~1000 times a second, competing for the cores with the request path, for
                # verdicts that change at most every `rescore_min_s`
                await asyncio.sleep(_GATHER_S)
            while not self._queue.empty() and len(batch) < _BATCH_MAX:
                batch.append(self._queue.get_nowait())
            try:
                res = await self.worker.run(batch)
            except Exception as e:  # a scoring failure keeps the last verdicts; traffic is unaffected
                self.failures += 1
                # once per outage (Redis down would otherwise log every sync_s), then quietly
                (log.debug if self._failing else log.warning)(
                    "risk scoring failed", extra={"error": f"{e.__class__.__name__}: {e}"}
                )
                self._failing = True
                self.applied += len(batch)
                continue
            if self._failing:
                log.warning("risk scoring recovered", extra={"failures": self.failures})
                self._failing = False
            self.learnt += res.learnt
            self.scored += res.scored
            self.score_seconds += res.score_seconds
            self.verdicts.update(res.verdicts)
            self.applied += len(batch)

    # -- request path -----------------------------------------------------------------------------------

    def decide(
        self, account_id: str, endpoint: str, body: dict[str, Any], rec: dict[str, Any]
    ) -> RiskDecision:
        """Record the account's verdict on `rec` and apply its actions to `body` (in place)."""
        d = RiskDecision()
        v = self.verdicts.get(account_id)
        if v is None:
            return d
        a = rec["attributes"]
        a["risk.level"] = v.level
        a["risk.score"] = f"{v.score:.3f}"
        a["risk.actions"] = ",".join(v.actions) or "allow"
        a["risk.reasons"] = v.reasons
        if self.cfg.shadow:
            a["risk.shadow"] = "1"
            return d
        for act in v.actions:
            if act in _REFUSING:
                d.refusal = self._refusal(act, v)
                return d
        for act in v.actions:
            if act == "cap_max_tokens":
                d.body_changed |= _cap(endpoint, body, self.cfg.max_tokens_cap)
            elif act == "disable_logprobs":
                for k in ("logprobs", "top_logprobs"):
                    if k in body:
                        del body[k]
                        d.body_changed = True
            elif act == "disable_n":
                for k in ("n", "best_of"):
                    if body.get(k) not in (None, 1):
                        body[k] = 1
                        d.body_changed = True
            elif act == "strip_reasoning":
                d.strip_reasoning = True
        return d

    def _refusal(self, act: str, v: RiskVerdict) -> GatewayError:
        if act == "block":
            return forbidden(
                f"This account's requests are refused by the abuse policy ({v.reasons.split(';')[0]}).",
                "risk_block",
            )
        if act == "require_verification":
            return forbidden(
                "This account must complete verification before it can continue to use the API.",
                "verification_required",
            )
        s = self.cfg.throttle_retry_after_s
        return GatewayError(
            429,
            f"Requests from this account are throttled; retry after {s} s.",
            "rate_limit_exceeded",
            "risk_throttle",
            headers={"retry-after": str(s), "retry-after-ms": str(s * 1000)},
        )


def _cap(endpoint: str, body: dict[str, Any], cap: int) -> bool:
    if endpoint == "/v1/embeddings":
        return False
    keys = ("max_tokens", "max_completion_tokens", "max_output_tokens")
    changed = False
    named = False
    for k in keys:
        v = body.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            named = True
            if v > cap:
                body[k] = cap
                changed = True
    if not named:
        body["max_output_tokens" if endpoint == "/v1/responses" else "max_tokens"] = cap
        changed = True
    return changed


def strip_json(endpoint: str, obj: Any) -> bool:
    """Remove reasoning from a JSON response body (in place); True when something was removed."""
    if not isinstance(obj, dict):
        return False
    changed = False
    if endpoint == "/v1/responses":
        out = obj.get("output")
        if isinstance(out, list):
            kept = [i for i in out if not (isinstance(i, dict) and i.get("type") == "reasoning")]
            if len(kept) != len(out):
                obj["output"] = kept
                changed = True
        return changed
    for ch in obj.get("choices") or []:
        if isinstance(ch, dict):
            for part in (ch.get("message"), ch.get("delta")):
                if isinstance(part, dict):
                    for k in _REASONING_KEYS:
                        if k in part:
                            del part[k]
                            changed = True
    return changed


def strip_event(endpoint: str, obj: Any) -> tuple[bool, bool]:
    """One parsed SSE event: (drop it, it was changed in place)."""
    if not isinstance(obj, dict):
        return False, False
    if endpoint == "/v1/responses":
        t = obj.get("type")
        if isinstance(t, str) and t.startswith(_REASONING_EVENTS):
            return True, False
        item = obj.get("item")
        if isinstance(item, dict) and item.get("type") == "reasoning":
            return True, False
        resp = obj.get("response")
        return False, strip_json(endpoint, resp) if isinstance(resp, dict) else False
    return False, strip_json(endpoint, obj)
