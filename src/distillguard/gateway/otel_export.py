"""Audited exchanges as OpenTelemetry GenAI spans: an OTLP JSON lines file, a collector over OTLP/HTTP, or both.

Each exchange the audit log records (admitted or refused) is queued after its response (`observe`, O(1),
dropped and counted when the queue is full); a background task takes up to `batch_max` of them, or what
arrived within `flush_s`, and turns them into one `ExportTraceServiceRequest` with one GenAI span per
exchange (`distillguard.ingest.otel.to_otlp_line`, the mapping `distillguard scan --format otel` reads
back). That request is appended to `path` as one line (what the Collector's file exporter writes) and/or
POSTed to `endpoint` as OTLP/HTTP JSON (`content-type: application/json`).

Prompts and completions are customer data: unless `include_content = true` the spans carry no system
prompt, messages, response or reasoning text (nor the `invalid.*` attributes, which may quote them):
ids, model, parameters, usage, status, timing, network and the policy attributes (tier, risk, intel,
refusal) only. The audit log stays the record of truth: the export is not fsynced. A POST that fails
in a way the OTLP/HTTP specification calls retryable (429, 502, 503, 504, or no answer at all) is retried
with exponential back-off and jitter, honouring `Retry-After`, up to `retries` times and `retry_max_s`
seconds; any other failure, or the last one, is counted and logged (without content) and the batch dropped.
While a batch is being retried, new exchanges wait in the queue (dropped and counted when it is full),
as the OpenTelemetry SDKs' exporters do; at shutdown no batch waits for a back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from distillguard.exchange import Exchange
from distillguard.gateway.config import OtelExportConfig
from distillguard.gateway.risk import to_exchange
from distillguard.ingest.otel import to_otlp_line

log = logging.getLogger("distillguard.gateway.otel")

# OTLP/HTTP: "The requests that receive a response status code listed in the following table SHOULD be
# retried": 429, 502, 503 and 504 (https://opentelemetry.io/docs/specs/otlp/#failures-1)
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_CONTENT_FIELDS: dict[str, Any] = {
    "system_prompt": None,
    "messages": [],
    "response_text": None,
    "reasoning_text": None,
}


def redact(ex: Exchange) -> Exchange:
    """The exchange without what the customer wrote or the model answered."""
    attrs = {k: v for k, v in ex.attributes.items() if not k.startswith("invalid.")}
    return ex.model_copy(update={**_CONTENT_FIELDS, "attributes": attrs})


def export_line(records: list[dict[str, Any]], cfg: OtelExportConfig) -> tuple[bytes | None, int]:
    """One OTLP JSON line for these gateway records, and how many could not be mapped (skipped)."""
    exs: list[Exchange] = []
    bad = 0
    for rec in records:
        try:
            ex = to_exchange(rec)
        except (ValidationError, ValueError):
            bad += 1
            continue
        exs.append(ex if cfg.include_content else redact(ex))
    if not exs:
        return None, bad
    return to_otlp_line(exs, cfg.service_name), bad


def _append(path: Path, line: bytes) -> None:
    # O_APPEND and one write per line: workers sharing the file do not interleave within a line
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


class OtelExporter:
    """The queue, the background batcher, the file and the collector client."""

    def __init__(self, cfg: OtelExportConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.cfg = cfg
        self._transport = transport
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=cfg.queue_max)
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._closing = False
        self._stopping = asyncio.Event()
        self.exported = 0  # spans written or sent
        self.dropped = 0  # queue full
        self.skipped = 0  # records that did not map to an Exchange
        self.post_failures = 0  # batches the collector never took
        self.post_retries = 0
        self.write_failures = 0

    async def start(self) -> None:
        if self.cfg.path is not None:
            self.cfg.path.parent.mkdir(parents=True, exist_ok=True)
        if self.cfg.endpoint is not None:
            self._client = httpx.AsyncClient(
                timeout=self.cfg.timeout_s, transport=self._transport, headers=self.cfg.headers
            )
        self._closing = False
        self._stopping = asyncio.Event()  # bound to the loop the exporter runs on
        self._task = asyncio.create_task(self._run(), name="distillguard-otel")

    async def stop(self) -> None:
        """Export what is queued, then stop."""
        self._closing = True
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)  # wake the batcher now (a full queue wakes it anyway)
            await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def observe(self, rec: dict[str, Any]) -> None:
        """Queue one final record (never blocks; counted and dropped when the queue is full)."""
        try:
            self._queue.put_nowait(dict(rec))
        except asyncio.QueueFull:
            self.dropped += 1

    async def _run(self) -> None:
        while not (self._closing and self._queue.empty()):
            batch: list[dict[str, Any]] = []
            with contextlib.suppress(TimeoutError):
                first = await asyncio.wait_for(self._queue.get(), timeout=self.cfg.flush_s)
                if first is not None:
                    batch.append(first)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.cfg.flush_s
            while len(batch) < self.cfg.batch_max and batch and not self._closing:
                try:
                    item = await asyncio.wait_for(self._queue.get(), timeout=deadline - loop.time())
                except TimeoutError:
                    break
                if item is not None:
                    batch.append(item)
            while len(batch) < self.cfg.batch_max and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not None:
                    batch.append(item)
            if batch:
                await self._export(batch)

    async def _export(self, batch: list[dict[str, Any]]) -> None:
        try:
            line, bad = await asyncio.to_thread(export_line, batch, self.cfg)
        except Exception as e:  # a mapping bug must not stop the exporter
            self.skipped += len(batch)
            log.warning("otel export mapping failed", extra={"error": e.__class__.__name__})
            return
        self.skipped += bad
        if line is None:
            return
        n = len(batch) - bad
        ok = False
        if self.cfg.path is not None:
            try:
                await asyncio.to_thread(_append, self.cfg.path, line)
                ok = True
            except OSError as e:
                self.write_failures += 1
                log.warning("otel span file write failed", extra={"error": f"{e.__class__.__name__}: {e}"})
        if self._client is not None and self.cfg.endpoint is not None:
            ok = await self._post(line) or ok
        if ok:
            self.exported += n

    async def _post(self, line: bytes) -> bool:
        """POST one request, retrying what the OTLP spec calls retryable; True once the collector took it."""
        assert self._client is not None and self.cfg.endpoint is not None
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.cfg.retry_max_s
        for attempt in range(self.cfg.retries + 1):
            wait: float | None = None
            try:
                resp = await self._client.post(
                    self.cfg.endpoint, content=line, headers={"content-type": "application/json"}
                )
                if resp.status_code < 300:
                    return True
                retryable = resp.status_code in RETRYABLE_STATUS
                wait = retry_after_s(resp.headers.get("retry-after"))
                # the status and URL only: no span content is logged
                error = f"HTTP {resp.status_code} from {self.cfg.endpoint}"
            except httpx.TransportError as e:  # refused, reset, timed out: the collector may come back
                retryable, error = True, f"{e.__class__.__name__}: {e}"
            except httpx.HTTPError as e:
                retryable, error = False, f"{e.__class__.__name__}: {e}"
            if wait is None:  # exponential back-off with full jitter: replicas do not retry in step
                wait = random.uniform(0, self.cfg.retry_initial_s * 2.0**attempt)
            last = attempt == self.cfg.retries or self._closing or loop.time() + wait > give_up_at
            if not retryable or last:
                self.post_failures += 1
                log.warning(
                    "otel export POST failed; batch dropped",
                    extra={"error": error, "attempts": attempt + 1, "retryable": retryable},
                )
                return False
            self.post_retries += 1
            with contextlib.suppress(TimeoutError):  # stop() cuts the back-off short: one last try
                await asyncio.wait_for(self._stopping.wait(), timeout=wait)
        return False  # not reached: the last attempt returns above
