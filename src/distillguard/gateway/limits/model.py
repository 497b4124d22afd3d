"""The limiter's data types, the `Limiter` protocol and the OpenAI-style headers both backends share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, cast, runtime_checkable

KINDS = frozenset({"key", "account", "org", "ip", "link"})
# A limit's name, its window in milliseconds, and whether it counts requests or tokens.
WINDOWS_MS: dict[str, int] = {"rpm": 60_000, "tpm": 60_000, "tpd": 86_400_000}
LimitName = Literal["rpm", "tpm", "tpd"]


@dataclass(frozen=True, slots=True)
class Descriptor:
    """One budget a request draws on: `kind:id` with optional requests/min, tokens/min and tokens/day.

    `id` is an identifier, never a secret: pass an API key's id or hash, not the key itself. A `link`
    descriptor carries a campaign id, so that accounts linked into one campaign share one budget.
    """

    kind: str
    id: str
    rpm: int | None = None
    tpm: int | None = None
    tpd: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown descriptor kind {self.kind!r}; expected one of {sorted(KINDS)}")
        for name in ("rpm", "tpm", "tpd"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{self.kind}:{self.id} {name} must be >= 0, got {v}")

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.id}"

    def limits(self) -> list[tuple[LimitName, int]]:
        """The limits that are set, in a fixed order (rpm, tpm, tpd)."""
        out: list[tuple[LimitName, int]] = []
        if self.rpm is not None:
            out.append(("rpm", self.rpm))
        if self.tpm is not None:
            out.append(("tpm", self.tpm))
        if self.tpd is not None:
            out.append(("tpd", self.tpd))
        return out


class DescriptorLike(Protocol):
    """What the limiter reads from a descriptor: `Descriptor` or any object with the same surface."""

    @property
    def kind(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def label(self) -> str: ...
    def limits(self) -> Sequence[tuple[str, int]]: ...


@dataclass(frozen=True, slots=True)
class Charge:
    """Where a reservation's tokens sit in one token window: the window's key and bucket index."""

    key: str
    name: LimitName
    bucket: int


@dataclass(slots=True)
class Reservation:
    """What `admit` reserved, for `reconcile` to replace with the real usage."""

    tokens: int
    charges: tuple[Charge, ...]
    at_ms: int  # the backend's clock at admission (Redis server time for the Redis backend)
    settled: bool = False


@dataclass(slots=True)
class Decision:
    """The answer to one admission.

    `retry_after` is in seconds (0 when allowed). `reason` names the descriptor and limit that refused,
    e.g. `account:acme tpm`, or `limiter unavailable` when the backend is down and the policy is
    fail-closed. `oversize` means the request alone exceeds that limit: waiting will never help.
    `degraded` means the backend was unreachable and the fail-open/closed policy decided.
    """

    allowed: bool
    retry_after: float
    headers: dict[str, str]
    reason: str | None
    reservation: Reservation | None
    oversize: bool = False
    degraded: bool = False


@runtime_checkable
class Limiter(Protocol):
    """Admission control over request and token budgets; see docs in `distillguard.gateway.limits`."""

    async def admit(self, descriptors: Sequence[DescriptorLike], tokens: int) -> Decision:
        """Check every descriptor and reserve `tokens` on all of them at once, or on none."""
        ...

    async def reconcile(self, decision: Decision, actual_tokens: int) -> None:
        """Replace the reservation with the real usage: refund or charge the difference."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@dataclass(slots=True)
class LimitState:
    """One window's state as the backend reports it, for the decision and the headers."""

    descriptor: str
    name: LimitName
    limit: int
    used: int  # after the reservation when allowed, before it when refused
    reset_ms: int  # until the window is back to its full limit
    retry_ms: int = 0  # until this window could take the request (refused windows only)
    refused: bool = False
    oversize: bool = False


def format_duration(ms: float) -> str:
    """OpenAI's reset format (Go durations): `20ms`, `1s`, `8.64s`, `6m0s`, `1h2m3s`."""
    ms = max(0.0, ms)
    if ms < 1000:
        return f"{round(ms)}ms"
    total = ms / 1000.0
    h, rem = divmod(total, 3600.0)
    m, s = divmod(rem, 60.0)
    sec = f"{s:.3f}".rstrip("0").rstrip(".")
    if h >= 1:
        return f"{int(h)}h{int(m)}m{sec}s"
    if m >= 1:
        return f"{int(m)}m{sec}s"
    return f"{sec}s"


def build_decision(states: list[LimitState], reservation: Reservation | None) -> Decision:
    """Turn per-window states into a decision and its OpenAI-style headers.

    The headers describe the most constraining window of each family (the least remaining), because a
    client can only be shown one set; `reason` names the refusing window with the longest wait.
    """
    refused = [s for s in states if s.refused]
    headers: dict[str, str] = {}
    for family, names in (("requests", ("rpm",)), ("tokens", ("tpm", "tpd"))):
        fam = [s for s in states if s.name in names]
        if not fam:
            continue
        pick = min(fam, key=lambda s: s.limit - s.used)  # first of the least remaining
        headers[f"x-ratelimit-limit-{family}"] = str(pick.limit)
        headers[f"x-ratelimit-remaining-{family}"] = str(max(0, pick.limit - pick.used))
        headers[f"x-ratelimit-reset-{family}"] = format_duration(pick.reset_ms)
    if not refused:
        return Decision(True, 0.0, headers, None, reservation)
    oversize = [s for s in refused if s.oversize]
    if oversize:
        # Retrying cannot help, so no Retry-After: the client should shrink the request.
        s = oversize[0]
        return Decision(False, 0.0, headers, f"{s.descriptor} {s.name}", None, oversize=True)
    worst = max(refused, key=lambda s: s.retry_ms)
    retry = worst.retry_ms / 1000.0
    headers["retry-after"] = str(max(1, math.ceil(retry)))
    headers["retry-after-ms"] = str(max(1, worst.retry_ms))
    return Decision(False, retry, headers, f"{worst.descriptor} {worst.name}", None)


def refused_by_outage(fail_open: bool) -> Decision:
    """The policy's answer while the backend is unreachable."""
    if fail_open:
        return Decision(True, 0.0, {}, None, None, degraded=True)
    return Decision(
        False, 1.0, {"retry-after": "1", "retry-after-ms": "1000"}, "limiter unavailable", None, degraded=True
    )


@dataclass(slots=True)
class Slot:
    """One window an admission touches: a descriptor's rpm, tpm or tpd."""

    key: str
    label: str
    name: LimitName
    limit: int
    cost: int
    window_ms: int
    bucket_ms: int

    @property
    def oversize(self) -> bool:
        return self.limit == 0 or self.cost > self.limit


def plan(descriptors: Sequence[DescriptorLike], tokens: int, prefix: str, buckets: int) -> list[Slot]:
    """The windows to check, once each: a descriptor given twice keeps the smaller limit."""
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    slots: dict[str, Slot] = {}
    for d in descriptors:
        for raw_name, limit in d.limits():
            if raw_name not in WINDOWS_MS:
                raise ValueError(f"{d.label}: unknown limit {raw_name!r}")
            name = cast(LimitName, raw_name)
            key = f"{prefix}{d.kind}:{d.id}:{name}"
            prev = slots.get(key)
            if prev is not None:
                prev.limit = min(prev.limit, limit)
                continue
            w = WINDOWS_MS[name]
            g = -(-w // buckets)  # window.bucket_ms, inlined to keep this module free of imports
            slots[key] = Slot(key, d.label, name, limit, 1 if name == "rpm" else tokens, w, g)
    return list(slots.values())
