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
refusal) only. The audit log stays the record of truth: the export is not fsynced and a failed POST is
counted and logged (without content), not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from distillguard.exchange import Exchange
from distillguard.gateway.config import OtelExportConfig
from distillguard.gateway.risk import to_exchange
from distillguard.ingest.otel import to_otlp_line

log = logging.getLogger("distillguard.gateway.otel")

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
        self.exported = 0  # spans written or sent
        self.dropped = 0  # queue full
        self.skipped = 0  # records that did not map to an Exchange
        self.post_failures = 0
        self.write_failures = 0

    async def start(self) -> None:
        if self.cfg.path is not None:
            self.cfg.path.parent.mkdir(parents=True, exist_ok=True)
        if self.cfg.endpoint is not None:
            self._client = httpx.AsyncClient(
                timeout=self.cfg.timeout_s, transport=self._transport, headers=self.cfg.headers
            )
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="distillguard-otel")

    async def stop(self) -> None:
        """Export what is queued, then stop."""
        self._closing = True
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
            try:
                resp = await self._client.post(
                    self.cfg.endpoint, content=line, headers={"content-type": "application/json"}
                )
                resp.raise_for_status()
                ok = True
            except httpx.HTTPError as e:
                self.post_failures += 1
                # the exception's text names the URL and status only: no span content is logged
                log.warning("otel export POST failed", extra={"error": f"{e.__class__.__name__}: {e}"})
        if ok:
            self.exported += n
