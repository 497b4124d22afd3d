"""Prometheus metrics of one gateway process, or of all worker processes together.

One process: its own registry (so tests can run several gateways in one interpreter). Several workers
(`serve --workers N`): `server.serve` points $PROMETHEUS_MULTIPROC_DIR at a fresh directory before the
workers start, prometheus_client then keeps every value in memory-mapped files there, and `/metrics`,
whichever worker answers it, sums the files of all workers (`MultiProcessCollector`), so a scrape sees
the whole gateway and not the one worker the connection landed on.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Added overhead is sub-millisecond when all is well; the buckets resolve 50 us to 250 ms.
_OVERHEAD_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25)
_UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def multiprocess_mode() -> bool:
    """True when values go to shared files ($PROMETHEUS_MULTIPROC_DIR set before prometheus_client loaded)."""
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    def __init__(self) -> None:
        self.multiprocess = multiprocess_mode()
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "distillguard_gateway_requests",
            "Requests answered, by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.refusals = Counter(
            "distillguard_gateway_refusals",
            "Requests refused by the gateway, by reason code.",
            ["reason"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "distillguard_gateway_upstream_seconds",
            "Time from forwarding a request to the upstream's last byte.",
            ["route"],
            buckets=_UPSTREAM_BUCKETS,
            registry=r,
        )
        self.overhead_seconds = Histogram(
            "distillguard_gateway_overhead_seconds",
            "Time the gateway adds to an exchange: its total time minus the time waiting on the upstream.",
            ["route"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        # livesum: the workers' current values added up (a dead worker's file stops counting)
        self.in_flight = Gauge(
            "distillguard_gateway_in_flight",
            "Exchanges in progress.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.audit_recovered = Counter(
            "distillguard_gateway_audit_recovered",
            "Unfinished exchanges recovered from the audit WAL.",
            registry=r,
        )
        # labelled children looked up once: `labels()` takes a lock and builds a key on every call
        self._requests: dict[tuple[str, int], Counter] = {}
        self._timings: dict[str, tuple[Histogram, Histogram]] = {}

    def exchange(self, route: str, status: int, upstream_s: float | None, overhead_s: float) -> None:
        """Count one answered exchange; `upstream_s` is None when it never reached the upstream."""
        c = self._requests.get((route, status))
        if c is None:
            c = self._requests[(route, status)] = self.requests.labels(route, str(status))
        c.inc()
        if upstream_s is None:
            return
        h = self._timings.get(route)
        if h is None:
            h = self._timings[route] = (
                self.upstream_seconds.labels(route),
                self.overhead_seconds.labels(route),
            )
        h[0].observe(upstream_s)
        h[1].observe(overhead_s)

    def render(self) -> tuple[bytes, str]:
        if self.multiprocess:
            # every worker's values, summed from the shared directory (read at each scrape)
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
