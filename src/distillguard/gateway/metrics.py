"""Prometheus metrics of one gateway process (its own registry, so tests can run several gateways)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Added overhead is sub-millisecond when all is well; the buckets resolve 50 us to 250 ms.
_OVERHEAD_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25)
_UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
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
        self.in_flight = Gauge("distillguard_gateway_in_flight", "Exchanges in progress.", registry=r)
        self.audit_recovered = Counter(
            "distillguard_gateway_audit_recovered",
            "Unfinished exchanges recovered from the audit WAL.",
            registry=r,
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
