"""Warninglists: shared infrastructure that must never get an indicator to block on its own.

A cloud NAT gateway, a public VPN exit, a university proxy or an API reseller carries the traffic of many
unrelated customers; an indicator that names one (an address in the range, the ASN, the user agent) may
add evidence but never blocks by itself (`IntelStore.assess`).

The files are MISP warninglist JSON (https://github.com/MISP/misp-warninglists): `{"name", "type",
"list", "description", "matching_attributes"}`, so the real MISP lists load as they are. Types:
`cidr` (addresses and networks; an indicator network that overlaps a listed one hits), `string` (exact
value), `substring` (case-insensitive, for user agents), `regex`; `hostname` lists load but never hit, as
there are no hostname indicators. `matching_attributes` (MISP attribute names: `ip-src`, `AS`,
`user-agent`, ...) restrict a list to indicator types; without it a string list applies to every network
type. Keyed digests and sketches never hit: no public list can name them.

The lists shipped in `distillguard/data/warninglists/` are small samples (see the README there); load
the full MISP lists, or your own, with `Warninglists.load(paths)`.
"""

from __future__ import annotations

import bisect
import contextlib
import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from distillguard.intel.indicator import NETWORK_TYPES, Indicator, IndicatorType, normalise_value

log = logging.getLogger(__name__)

_IP_TYPES = frozenset({IndicatorType.IPV4, IndicatorType.IPV6, IndicatorType.CIDR})
# MISP attribute names -> our indicator types (names not listed here match nothing of ours)
_MISP_ATTRIBUTES: dict[str, frozenset[IndicatorType]] = {
    **{a: _IP_TYPES for a in ("ip-src", "ip-dst", "ip-src|port", "ip-dst|port", "domain|ip", "ip")},
    "AS": frozenset({IndicatorType.ASN}),
    "as": frozenset({IndicatorType.ASN}),
    "user-agent": frozenset({IndicatorType.USER_AGENT}),
}
_KINDS = ("cidr", "string", "substring", "regex", "hostname")


class WarninglistError(ValueError):
    pass


@dataclass
class _Ranges:
    """Disjoint, sorted [start, end] integer ranges of one IP version, for O(log n) overlap tests."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, nets: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> _Ranges:
        spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in nets)
        out = cls()
        for lo, hi in spans:  # merge overlapping and adjacent ranges so a single bisect answers
            if out.ends and lo <= out.ends[-1] + 1:
                out.ends[-1] = max(out.ends[-1], hi)
            else:
                out.starts.append(lo)
                out.ends.append(hi)
        return out

    def overlaps(self, lo: int, hi: int) -> bool:
        k = bisect.bisect_right(self.starts, hi) - 1  # the last range starting at or before `hi`
        return k >= 0 and self.ends[k] >= lo


@dataclass
class Warninglist:
    name: str
    kind: str
    types: frozenset[IndicatorType]
    description: str = ""
    source: str = ""
    values: frozenset[str] = frozenset()
    v4: _Ranges = field(default_factory=_Ranges)
    v6: _Ranges = field(default_factory=_Ranges)
    pattern: re.Pattern[str] | None = None
    substrings: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.values) + len(self.v4.starts) + len(self.v6.starts) + len(self.substrings)

    def hit(self, kind: IndicatorType, value: str) -> bool:
        if kind not in self.types:
            return False
        if self.kind == "cidr":
            net = ipaddress.ip_network(value, strict=False)
            ranges = self.v4 if net.version == 4 else self.v6
            return ranges.overlaps(int(net.network_address), int(net.broadcast_address))
        if self.kind == "string":
            return value in self.values
        if self.kind == "substring":
            low = value.lower()
            return any(s in low for s in self.substrings)
        if self.kind == "regex":
            return self.pattern is not None and self.pattern.search(value) is not None
        return False  # hostname lists: we have no hostname indicators


def parse(doc: Any, source: str = "<warninglist>") -> Warninglist:
    """A warninglist from a decoded MISP warninglist document."""
    if not isinstance(doc, dict):
        raise WarninglistError(f"{source}: a warninglist is a JSON object, not {type(doc).__name__}")
    for key in ("name", "type", "list"):
        if key not in doc:
            raise WarninglistError(f"{source}: missing field {key!r}")
    name, kind, entries = doc["name"], doc["type"], doc["list"]
    if not isinstance(name, str) or not name:
        raise WarninglistError(f"{source}: 'name' must be a non-empty string")
    if kind not in _KINDS:
        raise WarninglistError(f"{source}: type {kind!r} is not one of {', '.join(_KINDS)}")
    if not isinstance(entries, list):
        raise WarninglistError(f"{source}: 'list' must be an array")
    attrs = doc.get("matching_attributes")
    if attrs:
        types = frozenset().union(*(_MISP_ATTRIBUTES.get(a, frozenset()) for a in attrs))
    else:
        types = _IP_TYPES if kind == "cidr" else NETWORK_TYPES
    if kind == "cidr":
        types &= _IP_TYPES
    # entries are strings; newer MISP lists may carry {"value": ..., "comment": ...}
    values = [e.get("value") if isinstance(e, dict) else e for e in entries]
    wl = Warninglist(
        name=name,
        kind=kind,
        types=frozenset(types),
        description=str(doc.get("description", "")),
        source=source,
    )
    bad: list[object] = []
    if kind == "cidr":
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for v in values:
            try:
                nets.append(ipaddress.ip_network(str(v).strip(), strict=False))
            except ValueError:
                bad.append(v)
        wl.v4 = _Ranges.of(n for n in nets if n.version == 4)
        wl.v6 = _Ranges.of(n for n in nets if n.version == 6)
    elif kind == "string":
        norm: set[str] = set()
        for v in values:
            if not isinstance(v, str):
                bad.append(v)
                continue
            norm.add(v.strip())
            for t in wl.types:  # also the canonical form each type would store (`AS16509` -> `16509`)
                with contextlib.suppress(ValueError):
                    norm.add(normalise_value(t, v))
        wl.values = frozenset(norm)
    elif kind == "substring":
        wl.substrings = tuple(v.strip().lower() for v in values if isinstance(v, str) and v.strip())
        bad = [v for v in values if not isinstance(v, str)]
    elif kind == "regex":
        try:
            wl.pattern = re.compile("|".join(f"(?:{v})" for v in values if isinstance(v, str)))
        except re.error as exc:
            raise WarninglistError(f"{source}: a regex in {name!r} does not compile: {exc}") from exc
    if bad:
        # third-party lists carry the odd bad line; one must not cost the whole list
        log.warning("%s: skipped %d invalid %s entries of %r, e.g. %r", source, len(bad), kind, name, bad[0])
    return wl


def _default_dir() -> Path:
    return Path(str(resources.files("distillguard").joinpath("data", "warninglists")))


class Warninglists:
    """A set of warninglists; `hit(indicator)` names the first list that covers the indicator."""

    def __init__(self, lists: Sequence[Warninglist] = ()) -> None:
        self.lists = list(lists)

    def __len__(self) -> int:
        return len(self.lists)

    @classmethod
    def load_default(cls) -> Warninglists:
        """The small sample lists shipped with distillguard (see data/warninglists/README.md)."""
        return cls.load(sorted(_default_dir().glob("*.json")))

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> Warninglists:
        """MISP warninglist JSON files; a directory loads every `*.json` in it (MISP's `lists/*/list.json`)."""
        lists: list[Warninglist] = []
        for p in map(Path, paths):
            files = sorted(p.rglob("*.json")) if p.is_dir() else [p]
            for f in files:
                try:
                    doc = orjson.loads(f.read_bytes())
                except OSError as exc:
                    raise WarninglistError(f"cannot read warninglist {f}: {exc.strerror}") from exc
                except orjson.JSONDecodeError as exc:
                    raise WarninglistError(f"{f} is not valid JSON: {exc}") from exc
                lists.append(parse(doc, str(f)))
        return cls(lists)

    def extend(self, other: Warninglists) -> Warninglists:
        return Warninglists([*self.lists, *other.lists])

    def hit_value(self, kind: IndicatorType | str, value: str) -> str | None:
        """Name of the first list covering a (normalised) value of the given type, or None."""
        kind = IndicatorType(kind)
        if kind not in NETWORK_TYPES:
            return None
        for wl in self.lists:
            if wl.hit(kind, value):
                return wl.name
        return None

    def hit(self, indicator: Indicator) -> str | None:
        """Name of the first list covering the indicator, or None."""
        return self.hit_value(indicator.type, indicator.value)

    def hits(self, indicators: Iterable[Indicator]) -> list[str | None]:
        return [self.hit(i) for i in indicators]
