"""Intel-store blocklists at request time.

`IntelGate` loads the store's active indicators (effective confidence > 0, see `IntelStore`) into
in-memory tables and swaps them in whole every `refresh_s` seconds (a background task; the store read
and the assessment run in a thread). A request is matched by:

- its client address: exact IPv4/IPv6 set, and CIDR ranges (one dict per prefix length present, so
  nested and overlapping ranges all match: at most 33 / 129 probes, usually a handful);
- its ASN (from the geo lookup; without `[geo]` ASN indicators never match);
- its User-Agent (exact);
- its account and organisation ids, as keyed digests (`Keyring.digest`) under every epoch the loaded
  indicators use and the keyring holds, cached per id.

Only indicators whose `IntelStore.assess(...).blocks` is true act (block, throttle, or log per
`IntelGateConfig.action`); the others (warninglisted, below threshold, not corroborated) are recorded as
matches only. Prompt-skeleton (template) indicators are not matched at request time.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from distillguard.gateway.background import Reloader
from distillguard.gateway.config import IntelGateConfig
from distillguard.gateway.errors import GatewayError, forbidden
from distillguard.intel.indicator import IndicatorType
from distillguard.intel.privacy import Keyring
from distillguard.intel.store import IntelStore

log = logging.getLogger("distillguard.gateway.intel")

_DIGEST_KINDS = (IndicatorType.ACCOUNT, IndicatorType.ORGANISATION)
_DIGEST_CACHE_MAX = 100_000


@dataclass(frozen=True, slots=True)
class Hit:
    indicator_id: str
    blocks: bool


@dataclass
class IntelTables:
    """One immutable-after-build snapshot of the active indicators."""

    addresses: dict[str, list[Hit]] = field(default_factory=dict)  # normalised address text
    # (version, prefix length) -> network address as int -> hits
    ranges: dict[tuple[int, int], dict[int, list[Hit]]] = field(default_factory=dict)
    asns: dict[int, list[Hit]] = field(default_factory=dict)
    user_agents: dict[str, list[Hit]] = field(default_factory=dict)
    # (kind, epoch, digest) -> hits
    digests: dict[tuple[str, int, str], list[Hit]] = field(default_factory=dict)
    epochs: dict[str, tuple[int, ...]] = field(default_factory=dict)  # kind -> epochs present
    prefixes: dict[int, tuple[int, ...]] = field(default_factory=dict)  # IP version -> prefix lengths
    loaded_at: datetime | None = None
    count: int = 0


@dataclass
class IntelMatch:
    blocking: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)


def build_tables(store: IntelStore, keyring: Keyring | None, at: datetime) -> IntelTables:
    """Read and assess every active indicator once, and index the ones the gateway can match."""
    inds = [
        i
        for i in store.indicators(active_at=at)
        if i.type is not IndicatorType.SKELETON and (i.type not in _DIGEST_KINDS or keyring is not None)
    ]
    assessed = store.assess_many(inds, at)
    t = IntelTables(loaded_at=at)
    epochs: dict[str, set[int]] = {}
    for ind, a in zip(inds, assessed, strict=True):
        hit = Hit(ind.id, a.blocks)
        kind, v = ind.type, ind.value
        if kind in (IndicatorType.IPV4, IndicatorType.IPV6):
            t.addresses.setdefault(v, []).append(hit)
        elif kind is IndicatorType.CIDR:
            net = ipaddress.ip_network(v, strict=False)
            key = (net.version, net.prefixlen)
            t.ranges.setdefault(key, {}).setdefault(int(net.network_address), []).append(hit)
        elif kind is IndicatorType.ASN:
            t.asns.setdefault(int(v), []).append(hit)
        elif kind is IndicatorType.USER_AGENT:
            t.user_agents.setdefault(v, []).append(hit)
        elif kind in _DIGEST_KINDS and ind.key_epoch is not None:
            assert keyring is not None
            if ind.key_epoch not in keyring.keys:
                continue  # made under a key we do not hold: cannot match
            t.digests.setdefault((kind.value, ind.key_epoch, v), []).append(hit)
            epochs.setdefault(kind.value, set()).add(ind.key_epoch)
        else:
            continue  # payment, device, campaign: nothing in a request to compare with
        t.count += 1
    t.epochs = {k: tuple(sorted(e)) for k, e in epochs.items()}
    t.prefixes = {v: tuple(sorted(p for ver, p in t.ranges if ver == v)) for v in (4, 6)}
    return t


class IntelGate(Reloader):
    """The loaded tables, their background refresh, and the per-request check."""

    def __init__(self, cfg: IntelGateConfig, store: IntelStore | None = None) -> None:
        self.cfg = cfg
        self.store = store or IntelStore.open(cfg.db)
        self.keyring = Keyring.load(cfg.keyring) if cfg.keyring else None
        self.tables = IntelTables()
        self._digest_cache: dict[tuple[str, str], dict[int, str]] = {}
        super().__init__("intel", cfg.refresh_s, log)

    # -- loading ---------------------------------------------------------------------------------------

    def reload(self, at: datetime | None = None) -> IntelTables:
        """Rebuild the tables now (blocking: call from a thread) and swap them in."""
        self.tables = build_tables(self.store, self.keyring, at or datetime.now(UTC))
        return self.tables

    def close(self) -> None:
        self.store.close()

    # -- matching --------------------------------------------------------------------------------------

    def _digest(self, kind: str, value: str, epoch: int) -> str:
        assert self.keyring is not None
        per = self._digest_cache.get((kind, value))
        if per is None:
            if len(self._digest_cache) >= _DIGEST_CACHE_MAX:
                self._digest_cache.clear()
            per = self._digest_cache[(kind, value)] = {}
        d = per.get(epoch)
        if d is None:
            d = per[epoch] = self.keyring.digest(kind, value, epoch)
        return d

    def match(
        self,
        ip: str | None,
        asn: int | None,
        user_agent: str | None,
        account_id: str | None,
        org_id: str | None,
    ) -> IntelMatch:
        t = self.tables  # one snapshot for the whole request
        hits: list[Hit] = []
        if ip:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                addr = None
            if addr is not None:
                hits += t.addresses.get(str(addr), ())
                n = int(addr)
                bits = addr.max_prefixlen
                for plen in t.prefixes.get(addr.version, ()):
                    masked = n >> (bits - plen) << (bits - plen)
                    hits += t.ranges[(addr.version, plen)].get(masked, ())
        if asn is not None:
            hits += t.asns.get(asn, ())
        if user_agent:
            hits += t.user_agents.get(user_agent.strip(), ())
        if self.keyring is not None:
            for kind, value in (
                (IndicatorType.ACCOUNT.value, account_id),
                (IndicatorType.ORGANISATION.value, org_id),
            ):
                if value:
                    for e in t.epochs.get(kind, ()):
                        hits += t.digests.get((kind, e, self._digest(kind, value, e)), ())
        return _split(hits)

    def check(self, rec: dict[str, Any]) -> GatewayError | None:
        """Match an exchange record; note the matches in its attributes; the refusal the action asks for."""
        m = self.match(
            rec.get("client_ip"),
            rec.get("asn"),
            rec.get("user_agent"),
            rec.get("account_id"),
            rec.get("org_id"),
        )
        a = rec["attributes"]
        if m.other:
            a["intel.match"] = ",".join(m.other)  # matched, but these may not block on their own
        if not m.blocking:
            return None
        a["intel.indicator"] = ",".join(m.blocking)
        a["intel.action"] = self.cfg.action
        first = m.blocking[0]
        if self.cfg.action == "block":
            return forbidden(
                f"Request refused: it matches threat-intelligence indicator {first}.", code="intel_block"
            )
        if self.cfg.action == "throttle":
            s = self.cfg.throttle_retry_after_s
            return GatewayError(
                429,
                f"Request throttled: it matches threat-intelligence indicator {first}; retry after {s} s.",
                "rate_limit_exceeded",
                "intel_throttle",
                headers={"retry-after": str(s), "retry-after-ms": str(s * 1000)},
            )
        return None  # log: recorded only


def _split(hits: Iterable[Hit]) -> IntelMatch:
    m = IntelMatch()
    seen: set[str] = set()
    for h in hits:
        if h.indicator_id in seen:
            continue
        seen.add(h.indicator_id)
        (m.blocking if h.blocks else m.other).append(h.indicator_id)
    return m
