"""The limiter hook: what the proxy asks a rate limiter, and nothing more.

The proxy calls `admit(descriptors, estimated_tokens)` before forwarding (prompt estimate plus the
completion tokens the request may use) and `reconcile(decision, actual_tokens)` once the real usage is
known (also after a failed or cancelled call, with what was used, so reservations are given back). Any
object with these two coroutines fits; `gateway/limits` provides the real one. Parameters are
positional-only so an implementation may name them as it likes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable


@dataclass(frozen=True, slots=True)
class Descriptor:
    """One budget a request draws on: (kind, id) with its quotas (None: unlimited)."""

    kind: str  # "key", "account", "org", "ip" (later: "link" for identities linked into a campaign)
    id: str
    rpm: int | None = None
    tpm: int | None = None
    tpd: int | None = None

    # The same read-only surface as the limiter's own Descriptor, so either can be handed to it.
    @property
    def label(self) -> str:
        return f"{self.kind}:{self.id}"

    def limits(self) -> list[tuple[str, int]]:
        return [(n, v) for n, v in (("rpm", self.rpm), ("tpm", self.tpm), ("tpd", self.tpd)) if v is not None]


class DecisionLike(Protocol):
    """What the proxy reads from a limiter's decision."""

    @property
    def allowed(self) -> bool: ...
    @property
    def retry_after(self) -> float | None: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def reason(self) -> str | None: ...


D = TypeVar("D", bound=DecisionLike)


@runtime_checkable
class Limiter(Protocol[D]):
    """Generic in its decision type: `reconcile` gets back exactly what `admit` returned.

    `descriptors` is typed `list[Any]` so that a limiter declaring its own Descriptor class (with the
    fields of `Descriptor` above) still matches this protocol without importing it.
    """

    async def admit(self, descriptors: list[Any], estimated_tokens: int, /) -> D: ...

    async def reconcile(self, decision: D, actual_tokens: int, /) -> None: ...


@dataclass(slots=True)
class Allowed:
    """The decision `NoLimits` returns: always allowed, no headers."""

    allowed: bool = True
    retry_after: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    reason: str | None = None


_ALLOWED = Allowed()


class NoLimits:
    """The default limiter: admits everything (quotas are still computed and passed, then ignored)."""

    async def admit(self, descriptors: list[Any], estimated_tokens: int, /) -> Allowed:
        return _ALLOWED

    async def reconcile(self, decision: Allowed, actual_tokens: int, /) -> None:
        return None
