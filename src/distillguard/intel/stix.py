"""STIX 2.1 export and import of intel records.

`to_bundle`/`dumps_bundle` turn `Records` into a STIX 2.1 bundle; `from_bundle`/`load_bundle` turn a bundle
(ours or another tool's) back into `Records`, all or nothing; `validate` runs the OASIS validator.

Mapping
-------
- `Organisation` -> `identity` (identity_class "organization", `sectors` [sector]).
- `Campaign` -> `campaign`; its ATLAS techniques -> `uses` relationships to `attack-pattern` objects.
- `Indicator` -> `indicator` (indicator_types ["malicious-activity"], valid_from = first_seen,
  valid_until, confidence, name, description, created_by_ref = the source organisation's identity);
  `indicates` relationships to its campaign and to one `attack-pattern` per ATLAS technique. The techniques
  are also listed, in order, as `external_references` (source_name "mitre-atlas", external_id
  "AML.T0024.002") so their order survives a round trip. Attack patterns get an id derived from the
  technique id, so every provider's bundles agree on it.
- `Sighting` -> `sighting` (sighting_of_ref, count, first_seen, last_seen, where_sighted_refs = the
  reporter's identity; created = first_seen, modified = last_seen).
- TLP 2.0 -> the official marking-definition objects (TLP 2.0 extension
  `extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d`), carried in the bundle and referenced by
  `object_marking_refs`. On import TLP 1.0 markings are mapped too (white -> clear).

Patterns
--------
Network values use ordinary STIX patterns (pattern_type "stix")::

    [ipv4-addr:value = '198.51.100.7']                 ipv6-addr likewise
    [ipv4-addr:value ISSUBSET '198.51.100.0/24']       CIDR
    [autonomous-system:number = 64500]
    [network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = 'python-requests/2.31']

Keyed digests and skeleton sketches have no STIX pattern; they use pattern_type "distillguard" with the
pattern ``distillguard:<indicator type>:<key epoch>:<value>``, e.g.
``distillguard:account:3:9f86d081...`` (64 hex) or ``distillguard:skeleton:3:<base64 signature>``.

Extension
---------
What STIX has no slot for travels in a property extension, `EXTENSION_ID`, defined by an
`extension-definition` object every bundle carries (schema URL `EXTENSION_SCHEMA`; it need not resolve).
Under ``extensions[EXTENSION_ID]`` (always ``"extension_type": "property-extension"``):

- indicator: ``indicator_type``, ``value``, ``key_epoch`` (keyed types), ``first_seen``, ``last_seen``,
  ``min_corroboration``, ``provenance`` ([{org, received, via}]), and ``source_org`` / ``campaign_id``
  only when they are not STIX ids (a name rather than an identity id).
- sighting: ``sighting_kind`` (seen, false_positive, expired), ``note``, and ``reporter`` when it is not
  an identity id.
- campaign: ``source_org`` when it is not an identity id.

Import reads the extension when it is there and falls back on plain STIX otherwise, so indicators from
other tools come in too; a pattern that does not map onto an indicator type is skipped and reported in
`BundleImport.skipped`, not an error. A malformed bundle raises `StixError`, naming the object and field.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson
import stix2.v21 as stix
from pydantic import ValidationError

from distillguard.intel.indicator import (
    ATLAS_TECHNIQUES,
    KEYED_TYPES,
    TLP,
    Campaign,
    Indicator,
    IndicatorType,
    Organisation,
    Provenance,
    Records,
    Sighting,
    SightingKind,
    normalise_value,
)

log = logging.getLogger(__name__)

EXTENSION_ID = "extension-definition--b8955220-0183-44e8-97f7-4aa5f561a921"
EXTENSION_SCHEMA = f"https://distillguard.dev/schemas/stix/2.1/{EXTENSION_ID}.json"
EXTENSION_VERSION = "1.0.0"
# The identity that defines the extension: the software, not the exporting provider, so that every
# provider's bundles carry the very same extension-definition object.
SYSTEM_IDENTITY_ID = "identity--7a0b4a56-f430-4263-9a36-3c48c0331369"
PATTERN_TYPE = "distillguard"
MAX_BUNDLE_BYTES = 32 * 1024 * 1024
MAX_DEPTH = 64  # JSON nesting levels, counting the bundle as 1

ATLAS_SOURCE = "mitre-atlas"
ATLAS_URL = "https://atlas.mitre.org/techniques/{}"
# Fixed timestamps for the objects that are not records, so exports are deterministic.
_FIXED_CREATED = datetime(2024, 1, 1, tzinfo=UTC)

TLP2_EXTENSION_ID = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
TLP2_CREATED = "2022-10-01T00:00:00.000Z"
TLP2_MARKING_IDS = {
    TLP.CLEAR: "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    TLP.GREEN: "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    TLP.AMBER: "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    TLP.AMBER_STRICT: "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    TLP.RED: "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
# STIX 2.1's predefined TLP 1.0 markings.
TLP1_MARKING_IDS = {
    stix.TLP_WHITE.id: TLP.CLEAR,
    stix.TLP_GREEN.id: TLP.GREEN,
    stix.TLP_AMBER.id: TLP.AMBER,
    stix.TLP_RED.id: TLP.RED,
}
_TLP1_NAMES = {"white": TLP.CLEAR, "clear": TLP.CLEAR, "green": TLP.GREEN, "amber": TLP.AMBER, "red": TLP.RED}
_TLP_ORDER = list(TLP)  # least to most restrictive

_ID_RE = re.compile(
    r"^(?P<type>[a-z][a-z0-9-]+[a-z0-9])--[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-5][0-9a-fA-F]{3}-"
    r"[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$"
)
_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
_SCO_TYPES = frozenset(
    [
        "artifact",
        "autonomous-system",
        "directory",
        "domain-name",
        "email-addr",
        "email-message",
        "file",
        "ipv4-addr",
        "ipv6-addr",
        "mac-addr",
        "mutex",
        "network-traffic",
        "process",
        "software",
        "url",
        "user-account",
        "windows-registry-key",
        "x509-certificate",
    ]
)
# Objects that must carry created and modified.
_DATED_TYPES = frozenset(
    [
        "attack-pattern",
        "campaign",
        "course-of-action",
        "grouping",
        "identity",
        "incident",
        "indicator",
        "infrastructure",
        "intrusion-set",
        "location",
        "malware",
        "malware-analysis",
        "note",
        "observed-data",
        "opinion",
        "report",
        "threat-actor",
        "tool",
        "vulnerability",
        "relationship",
        "sighting",
        "extension-definition",
        "language-content",
    ]
)
# Types this module reads; anything else is counted in `BundleImport.ignored`.
_READ_TYPES = frozenset(
    {
        "indicator",
        "sighting",
        "campaign",
        "identity",
        "attack-pattern",
        "relationship",
        "marking-definition",
        "extension-definition",
    }
)


class StixError(ValueError):
    """A bundle that cannot be exported or imported; names the object (id, or index in `objects`)."""

    def __init__(
        self,
        message: str,
        *,
        object_id: str | None = None,
        index: int | None = None,
        field: str | None = None,
    ) -> None:
        self.object_id = object_id
        self.index = index
        self.field = field
        self.reason = message
        where = []
        if index is not None:
            where.append(f"objects[{index}]")
        if object_id is not None:
            where.append(object_id)
        # a field with no object is the bundle's own
        prefix = " ".join(where) or ("bundle" if field is not None else "")
        if field is not None:
            prefix = f"{prefix}: field {field!r}" if prefix else f"field {field!r}"
        super().__init__(f"{prefix}: {message}" if prefix else message)


@dataclass(frozen=True)
class Skipped:
    """An object that was read but not imported (e.g. a pattern no indicator type maps onto)."""

    id: str
    type: str
    reason: str


@dataclass
class BundleImport:
    records: Records
    skipped: list[Skipped] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)  # object types with no record, by count


@dataclass
class Validation:
    errors: list[str]
    warnings: list[str]

    @property
    def is_valid(self) -> bool:
        return not self.errors


# ---------------------------------------------------------------------------------------------------------
# small helpers


def _ts(t: datetime) -> str:
    """A STIX timestamp; at least millisecond digits, all microsecond digits when there are any."""
    t = t.astimezone(UTC)
    frac = f"{t.microsecond:06d}".rstrip("0").ljust(3, "0")
    return f"{t.strftime('%Y-%m-%dT%H:%M:%S')}.{frac}Z"


def _derived_id(kind: str, *parts: str) -> str:
    """A deterministic id that looks like a UUIDv4 (the validator warns about other versions)."""
    digest = hashlib.sha256("\x1f".join((kind, *parts)).encode()).digest()
    return f"{kind}--{uuid.UUID(bytes=digest[:16], version=4)}"


def _is_id(value: str | None, kind: str | None = None) -> bool:
    if value is None:
        return False
    m = _ID_RE.match(value)
    return m is not None and (kind is None or m["type"] == kind)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def pattern_of(ind: Indicator) -> tuple[str, str]:
    """(pattern, pattern_type) of an indicator: a STIX pattern for network values, ours otherwise."""
    t, v = ind.type, ind.value
    if t is IndicatorType.IPV4:
        return f"[ipv4-addr:value = '{v}']", "stix"
    if t is IndicatorType.IPV6:
        return f"[ipv6-addr:value = '{v}']", "stix"
    if t is IndicatorType.CIDR:
        sco = "ipv6-addr" if ":" in v else "ipv4-addr"
        return f"[{sco}:value ISSUBSET '{v}']", "stix"
    if t is IndicatorType.ASN:
        return f"[autonomous-system:number = {int(v)}]", "stix"
    if t is IndicatorType.USER_AGENT:
        return (
            f"[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = '{_escape(v)}']",
            "stix",
        )
    epoch = "-" if ind.key_epoch is None else str(ind.key_epoch)
    return f"{PATTERN_TYPE}:{t.value}:{epoch}:{v}", PATTERN_TYPE


_STIX_PATTERN_RE = re.compile(
    r"^\[\s*(?P<sco>[a-z0-9-]+):(?P<path>(?:[A-Za-z0-9_-]+|'[^']*')(?:\.(?:[A-Za-z0-9_-]+|'[^']*'))*)"
    r"\s+(?P<op>=|ISSUBSET)\s+(?P<rhs>'(?:[^'\\]|\\.)*'|\d+)\s*\]$"
)
_PATH_PART_RE = re.compile(r"'([^']*)'|([^.]+)")
_OUR_PATTERN_RE = re.compile(rf"^{PATTERN_TYPE}:(?P<type>[a-z-]+):(?P<epoch>\d+|-):(?P<value>\S+)$")


def parse_stix_pattern(pattern: str) -> tuple[IndicatorType, str] | None:
    """Map a single-comparison STIX pattern onto (indicator type, value); None when it does not map."""
    m = _STIX_PATTERN_RE.match(pattern.strip())
    if m is None:
        return None
    path = [a or b for a, b in _PATH_PART_RE.findall(m["path"])]
    sco, op, rhs = m["sco"], m["op"], m["rhs"]
    if rhs.startswith("'"):
        value: str | int = re.sub(r"\\(.)", r"\1", rhs[1:-1])
    else:
        value = int(rhs)
    kind: IndicatorType | None = None
    if sco in ("ipv4-addr", "ipv6-addr") and path == ["value"] and isinstance(value, str):
        if op == "ISSUBSET" or "/" in value:
            kind = IndicatorType.CIDR
        else:
            kind = IndicatorType.IPV4 if sco == "ipv4-addr" else IndicatorType.IPV6
    elif sco == "autonomous-system" and path == ["number"] and op == "=" and isinstance(value, int):
        kind = IndicatorType.ASN
    elif (
        sco == "network-traffic"
        and op == "="
        and isinstance(value, str)
        and [p.lower() for p in path] == ["extensions", "http-request-ext", "request_header", "user-agent"]
    ):
        kind = IndicatorType.USER_AGENT
    if kind is None:
        return None
    try:
        return kind, normalise_value(kind, str(value))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------------
# export


def _tlp_marking(tlp: TLP) -> stix.MarkingDefinition:
    return stix.MarkingDefinition(
        id=TLP2_MARKING_IDS[tlp],
        created=TLP2_CREATED,
        name=f"TLP:{tlp.value.upper()}",
        extensions={TLP2_EXTENSION_ID: {"extension_type": "property-extension", "tlp_2_0": tlp.value}},
    )


def _system_objects() -> list[Any]:
    ident = stix.Identity(
        id=SYSTEM_IDENTITY_ID,
        created=_FIXED_CREATED,
        modified=_FIXED_CREATED,
        name="distillguard",
        identity_class="system",
        description="The distillguard software, which defines the distillguard STIX extension.",
    )
    ext = stix.ExtensionDefinition(
        id=EXTENSION_ID,
        created_by_ref=SYSTEM_IDENTITY_ID,
        created=_FIXED_CREATED,
        modified=_FIXED_CREATED,
        name="distillguard intel",
        description="distillguard indicator and sighting properties STIX has no slot for: indicator type, "
        "value or keyed digest, key epoch, first/last seen, corroboration threshold, provenance, "
        "sighting kind.",
        schema=EXTENSION_SCHEMA,
        version=EXTENSION_VERSION,
        extension_types=["property-extension"],
    )
    return [ident, ext]


def _atlas_refs(techniques: Iterable[str], url: bool = False) -> list[dict[str, str]]:
    # the URL only on the attack pattern itself: the validator warns about every URL without a hash
    if url:
        return [
            {"source_name": ATLAS_SOURCE, "external_id": t, "url": ATLAS_URL.format(t)} for t in techniques
        ]
    return [{"source_name": ATLAS_SOURCE, "external_id": t} for t in techniques]


class _Exporter:
    def __init__(self, records: Records, producer: Organisation | None) -> None:
        self.records = records
        self.producer = producer
        self.tlps: set[TLP] = set()
        self.attack_patterns: dict[str, dict[str, Any]] = {}
        self.relationships: dict[str, dict[str, Any]] = {}

    def build(self, cls: Callable[..., Any], record_id: str, **kw: Any) -> dict[str, Any]:
        """A stix2 object (which checks it) as a plain dict; its errors name the record and field."""
        kw = {k: v for k, v in kw.items() if v is not None and v != []}
        try:
            obj = cls(**kw)
        except Exception as exc:  # stix2 raises many types; all mean the record cannot be expressed
            prop = getattr(exc, "prop_name", None)
            if prop is None:
                found = re.search(r"'([a-z_]+)'", str(exc))
                prop = found[1] if found else None
            raise StixError(str(exc), object_id=record_id, field=prop) from None
        out: dict[str, Any] = orjson.loads(obj.serialize())
        return out

    def marking(self, tlp: TLP) -> list[str]:
        self.tlps.add(tlp)
        return [TLP2_MARKING_IDS[tlp]]

    def org_ref(self, org: str, ext: dict[str, Any]) -> str | None:
        """created_by_ref for an organisation; a name that is not an identity id goes in the extension."""
        if _is_id(org, "identity"):
            return org
        ext["source_org"] = org
        return self.producer.id if self.producer is not None else None

    def relate(self, source: dict[str, Any], kind: str, target: str) -> None:
        rid = _derived_id("relationship", kind, source["id"], target)
        if rid not in self.relationships:
            self.relationships[rid] = self.build(
                stix.Relationship,
                source["id"],
                id=rid,
                created=source["created"],
                modified=source["modified"],
                relationship_type=kind,
                source_ref=source["id"],
                target_ref=target,
                object_marking_refs=source.get("object_marking_refs"),
            )

    def attack_pattern(self, technique: str) -> str:
        if technique not in self.attack_patterns:
            self.attack_patterns[technique] = self.build(
                stix.AttackPattern,
                technique,
                id=_derived_id("attack-pattern", technique),
                created=_FIXED_CREATED,
                modified=_FIXED_CREATED,
                name=ATLAS_TECHNIQUES.get(technique, technique),
                external_references=_atlas_refs([technique], url=True),
            )
        return str(self.attack_patterns[technique]["id"])

    def identity(self, org: Organisation) -> dict[str, Any]:
        return self.build(
            stix.Identity,
            org.id,
            id=org.id,
            created=org.created,
            modified=org.created,
            name=org.name,
            identity_class="organization",
            sectors=[org.sector] if org.sector else None,
        )

    def campaign(self, c: Campaign) -> dict[str, Any]:
        ext: dict[str, Any] = {"extension_type": "property-extension"}
        created_by = self.org_ref(c.source_org, ext)
        obj = self.build(
            stix.Campaign,
            c.id,
            id=c.id,
            created=c.created,
            modified=c.modified,
            created_by_ref=created_by,
            name=c.name,
            description=c.description,
            first_seen=c.first_seen,
            last_seen=c.last_seen,
            external_references=_atlas_refs(c.techniques),
            object_marking_refs=self.marking(c.tlp),
            extensions={EXTENSION_ID: ext} if len(ext) > 1 else None,
        )
        for t in c.techniques:
            self.relate(obj, "uses", self.attack_pattern(t))
        return obj

    def indicator(self, ind: Indicator) -> dict[str, Any]:
        pattern, pattern_type = pattern_of(ind)
        ext: dict[str, Any] = {
            "extension_type": "property-extension",
            "indicator_type": ind.type.value,
            "value": ind.value,
        }
        if ind.key_epoch is not None:
            ext["key_epoch"] = ind.key_epoch
        ext["first_seen"] = _ts(ind.first_seen)
        ext["last_seen"] = _ts(ind.last_seen)
        ext["min_corroboration"] = ind.min_corroboration
        if ind.provenance:  # STIX forbids empty lists
            ext["provenance"] = [
                {"org": p.org, "received": _ts(p.received), "via": p.via} for p in ind.provenance
            ]
        created_by = self.org_ref(ind.source_org, ext)
        campaign_ref = None
        if _is_id(ind.campaign_id, "campaign"):
            campaign_ref = ind.campaign_id
        elif ind.campaign_id is not None:
            ext["campaign_id"] = ind.campaign_id
        valid_from = ind.first_seen
        if ind.valid_until is not None and ind.valid_until <= valid_from:
            # STIX wants valid_until after valid_from; first_seen itself is kept in the extension
            valid_from = ind.valid_until - timedelta(microseconds=1)
        obj = self.build(
            stix.Indicator,
            ind.id,
            id=ind.id,
            created=ind.created,
            modified=ind.modified,
            created_by_ref=created_by,
            name=ind.name,
            description=ind.description,
            indicator_types=["malicious-activity"],
            pattern=pattern,
            pattern_type=pattern_type,
            valid_from=valid_from,
            valid_until=ind.valid_until,
            confidence=ind.confidence,
            external_references=_atlas_refs(ind.techniques),
            object_marking_refs=self.marking(ind.tlp),
            extensions={EXTENSION_ID: ext},
        )
        if campaign_ref is not None:
            self.relate(obj, "indicates", campaign_ref)
        for t in ind.techniques:
            self.relate(obj, "indicates", self.attack_pattern(t))
        return obj

    def sighting(self, s: Sighting, tlp: TLP) -> dict[str, Any]:
        ext: dict[str, Any] = {"extension_type": "property-extension", "sighting_kind": s.kind.value}
        if s.note is not None:
            ext["note"] = s.note
        reporter = s.reporter if _is_id(s.reporter, "identity") else None
        if reporter is None:
            ext["reporter"] = s.reporter
        return self.build(
            stix.Sighting,
            s.id,
            id=s.id,
            created=s.first_seen,
            modified=max(s.first_seen, s.last_seen),
            created_by_ref=reporter,
            sighting_of_ref=s.indicator_id,
            count=s.count,
            first_seen=s.first_seen,
            last_seen=s.last_seen,
            where_sighted_refs=[reporter] if reporter else None,
            object_marking_refs=self.marking(tlp),
            extensions={EXTENSION_ID: ext},
        )

    def objects(self) -> list[dict[str, Any]]:
        r = self.records
        orgs = list(r.organisations)
        if self.producer is not None and all(o.id != self.producer.id for o in orgs):
            orgs.insert(0, self.producer)
        identities = [self.identity(o) for o in orgs]
        campaigns = [self.campaign(c) for c in r.campaigns]
        indicators = [self.indicator(i) for i in r.indicators]
        # a sighting is as sensitive as what it sighted; AMBER when the indicator is not in this bundle
        tlp_of = {i.id: i.tlp for i in r.indicators}
        sightings = [self.sighting(s, tlp_of.get(s.indicator_id, TLP.AMBER)) for s in r.sightings]
        markings = [orjson.loads(_tlp_marking(t).serialize()) for t in _TLP_ORDER if t in self.tlps]
        system = [orjson.loads(o.serialize()) for o in _system_objects()]
        return [
            *markings,
            *system,
            *identities,
            *self.attack_patterns.values(),
            *campaigns,
            *indicators,
            *self.relationships.values(),
            *sightings,
        ]


def to_bundle(records: Records, producer: Organisation | None = None) -> dict[str, Any]:
    """A STIX 2.1 bundle of `records`; deterministic (its id is derived from its content).

    `producer` is the exporting organisation: its identity is carried and is the `created_by_ref` of
    records whose source organisation is a name rather than an identity id.
    """
    objects = _Exporter(records, producer).objects()
    seen: dict[str, dict[str, Any]] = {}
    for obj in objects:
        if seen.setdefault(obj["id"], obj) != obj:
            # our own import would reject it, so do not write it
            raise StixError(
                "two records share this id with different content", object_id=obj["id"], field="id"
            )
    return {"type": "bundle", "id": _derived_id("bundle", orjson.dumps(objects).decode()), "objects": objects}


def dumps_bundle(records: Records, producer: Organisation | None = None, *, indent: bool = False) -> bytes:
    """`to_bundle` as JSON bytes: the same records give the same bytes."""
    return orjson.dumps(to_bundle(records, producer), option=orjson.OPT_INDENT_2 if indent else 0)


# ---------------------------------------------------------------------------------------------------------
# import


def _read(
    data: bytes | bytearray | str | dict[str, Any] | Path | IO[bytes], max_bytes: int, max_depth: int
) -> Any:
    """The parsed document; sizes are checked before anything is parsed."""
    if isinstance(data, dict):
        return data
    too_big = "bundle is {} bytes, over the limit of {} bytes"
    if isinstance(data, Path | os.PathLike):
        size = os.stat(data).st_size
        if size > max_bytes:
            raise StixError(too_big.format(size, max_bytes))
        raw: bytes | bytearray | str = Path(data).read_bytes()
    elif isinstance(data, str):
        # characters never outnumber UTF-8 bytes: a long string is rejected without encoding it
        if len(data) > max_bytes or len(data.encode()) > max_bytes:
            raise StixError(too_big.format(len(data.encode()), max_bytes))
        raw = data
    elif isinstance(data, bytes | bytearray | memoryview):
        if len(data) > max_bytes:
            raise StixError(too_big.format(len(data), max_bytes))
        raw = bytes(data) if isinstance(data, memoryview) else data
    elif hasattr(data, "read"):
        raw = data.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise StixError(f"bundle is over the limit of {max_bytes} bytes")
    else:
        raise StixError(f"not a bundle: cannot read a {type(data).__name__}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in exc.msg or "recursion" in exc.msg.lower():
            raise StixError(f"JSON nested too deeply ({exc}); the limit is {max_depth} levels") from None
        raise StixError(f"not JSON: {exc}") from None


def _depth(value: Any) -> int:
    """Nesting levels of a JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            d += 1
            stack.extend((c, d) for c in v.values())
        elif isinstance(v, list):
            d += 1
            stack.extend((c, d) for c in v)
        deepest = max(deepest, d)
    return deepest


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str) or not _TS_RE.match(value):
        return None
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        return None


class _Obj:
    """One object of the bundle with typed, checked reads whose errors name the object and field."""

    def __init__(self, d: dict[str, Any], index: int) -> None:
        self.d = d
        self.index = index
        self.id: str = d["id"]
        self.type: str = d["type"]
        ext = d.get("extensions")
        ours = ext.get(EXTENSION_ID) if isinstance(ext, dict) else None
        if ours is not None and not isinstance(ours, dict):
            raise self.err(f"extensions.{EXTENSION_ID}", "must be an object")
        self.ext: dict[str, Any] | None = ours

    def err(self, field: str | None, message: str) -> StixError:
        return StixError(message, object_id=self.id, index=self.index, field=field)

    def _src(self, ext: bool) -> tuple[dict[str, Any], str]:
        return (self.ext or {}, f"extensions.{EXTENSION_ID}.") if ext else (self.d, "")

    def text(self, key: str, *, required: bool = False, ext: bool = False) -> str | None:
        src, prefix = self._src(ext)
        v = src.get(key)
        if v is None:
            if required:
                raise self.err(prefix + key, "is required")
            return None
        if not isinstance(v, str):
            raise self.err(prefix + key, f"must be a string, not {type(v).__name__}")
        return v

    def req_str(self, key: str, *, ext: bool = False) -> str:
        v = self.text(key, required=True, ext=ext)
        assert v is not None
        return v

    def integer(self, key: str, lo: int, hi: int, *, ext: bool = False) -> int | None:
        src, prefix = self._src(ext)
        v = src.get(key)
        if v is None:
            return None
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise self.err(prefix + key, f"must be an integer from {lo} to {hi}, not {v!r}")
        return v

    def ts(self, key: str, *, required: bool = False, ext: bool = False) -> datetime | None:
        src, prefix = self._src(ext)
        v = src.get(key)
        if v is None:
            if required:
                raise self.err(prefix + key, "is required")
            return None
        t = _parse_ts(v)
        if t is None:
            raise self.err(prefix + key, f"is not a STIX timestamp (YYYY-MM-DDTHH:MM:SS[.s]Z): {v!r}")
        return t

    def req_ts(self, key: str, *, ext: bool = False) -> datetime:
        t = self.ts(key, required=True, ext=ext)
        assert t is not None
        return t

    def items(self, key: str) -> list[Any]:
        v = self.d.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            raise self.err(key, "must be a list")
        return v


def _check_object(d: Any, index: int, max_depth: int) -> None:
    """The checks every object gets, whatever its type."""
    if not isinstance(d, dict):
        raise StixError(f"must be a JSON object, not {type(d).__name__}", index=index)
    raw_id = d.get("id")
    oid = raw_id if isinstance(raw_id, str) and _ID_RE.match(raw_id) else None

    def err(field: str, message: str) -> StixError:
        return StixError(message, object_id=oid, index=index, field=field)

    kind = d.get("type")
    if not isinstance(kind, str) or not re.match(r"^[a-z][a-z0-9-]+[a-z0-9]$", kind):
        raise err("type", f"is missing or not a STIX type name: {kind!r}")
    if oid is None:
        raise err("id", f"is missing or not of the form {kind}--<uuid>: {raw_id!r}")
    if oid.split("--", 1)[0] != kind:
        raise err("id", f"does not match the object's type {kind!r}")
    for key, value in d.items():
        if isinstance(value, dict | list) and 3 + _depth(value) > max_depth:
            raise err(key, f"nested deeper than {max_depth} levels")
    spec = d.get("spec_version")
    if spec is None and kind not in _SCO_TYPES:
        raise err("spec_version", "is required (STIX 2.1 objects carry spec_version '2.1')")
    if spec is not None and spec != "2.1":
        raise err("spec_version", f"must be '2.1', not {spec!r}")
    for key, value in d.items():
        if key.endswith("_ref") and not (isinstance(value, str) and _ID_RE.match(value)):
            raise err(key, f"is not a STIX id: {value!r}")
        if key.endswith("_refs") and not (
            isinstance(value, list) and all(isinstance(v, str) and _ID_RE.match(v) for v in value)
        ):
            raise err(key, "must be a list of STIX ids")
    dated = kind in _DATED_TYPES
    if dated or kind == "marking-definition":
        created = d.get("created")
        if created is None:
            raise err("created", "is required")
        ct = _parse_ts(created)
        if ct is None:
            raise err("created", f"is not a STIX timestamp: {created!r}")
        if dated:
            modified = d.get("modified")
            if modified is None:
                raise err("modified", "is required")
            mt = _parse_ts(modified)
            if mt is None:
                raise err("modified", f"is not a STIX timestamp: {modified!r}")
            if mt < ct:
                raise err("modified", "is earlier than created")


def _pydantic_error(o: _Obj, exc: ValidationError, fields: dict[str, str]) -> StixError:
    first = exc.errors()[0]
    loc = first.get("loc") or ("",)
    name = str(loc[0])
    msg = first.get("msg", str(exc)).removeprefix("Value error, ")
    # an error of the whole record (loc empty) comes from its value check
    return o.err(fields.get(name, name) or None, msg)


class _Importer:
    def __init__(self, objects: list[_Obj]) -> None:
        self.objects = objects
        self.tlp_of_marking: dict[str, TLP] = {
            **TLP1_MARKING_IDS,
            **{v: k for k, v in TLP2_MARKING_IDS.items()},
        }
        self.atlas_of: dict[str, str] = {}  # attack-pattern id -> ATLAS technique id
        self.related: dict[str, list[tuple[str, str]]] = {}  # source id -> [(relationship type, target)]
        self.result = BundleImport(records=Records())

    def skip(self, o: _Obj, reason: str) -> None:
        self.result.skipped.append(Skipped(o.id, o.type, reason))

    def run(self) -> BundleImport:
        for o in self.objects:
            if o.type == "marking-definition":
                self.marking(o)
            elif o.type == "attack-pattern":
                o.req_str("name")
                ids = self.atlas_ids(o)
                if ids:
                    self.atlas_of[o.id] = ids[0]
            elif o.type == "relationship":
                kind = o.req_str("relationship_type")
                source, target = o.req_str("source_ref"), o.req_str("target_ref")
                self.related.setdefault(source, []).append((kind, target))
            elif o.type not in _READ_TYPES:
                self.result.ignored[o.type] = self.result.ignored.get(o.type, 0) + 1
        recs = self.result.records
        for o in self.objects:
            if o.type == "identity" and o.id != SYSTEM_IDENTITY_ID:
                recs.organisations.append(self.organisation(o))
            elif o.type == "campaign":
                recs.campaigns.append(self.campaign(o))
            elif o.type == "indicator":
                ind = self.indicator(o)
                if ind is not None:
                    recs.indicators.append(ind)
        skipped = {s.id for s in self.result.skipped}
        for o in self.objects:
            if o.type == "sighting":
                s = self.sighting(o, skipped)
                if s is not None:
                    recs.sightings.append(s)
        return self.result

    # -- context objects ------------------------------------------------------------------------------
    def marking(self, o: _Obj) -> None:
        ext = o.d.get("extensions")
        tlp2 = ext.get(TLP2_EXTENSION_ID) if isinstance(ext, dict) else None
        level: str | None = None
        if isinstance(tlp2, dict):
            level = tlp2.get("tlp_2_0")
            if level not in set(TLP):
                raise o.err(f"extensions.{TLP2_EXTENSION_ID}.tlp_2_0", f"is not a TLP 2.0 level: {level!r}")
            self.tlp_of_marking[o.id] = TLP(level)
        elif o.d.get("definition_type") == "tlp":
            definition = o.d.get("definition")
            level = definition.get("tlp") if isinstance(definition, dict) else None
            if not isinstance(level, str) or level.lower() not in _TLP1_NAMES:
                raise o.err("definition.tlp", f"is not a TLP level: {level!r}")
            self.tlp_of_marking[o.id] = _TLP1_NAMES[level.lower()]

    def atlas_ids(self, o: _Obj) -> list[str]:
        out = []
        for i, ref in enumerate(o.items("external_references")):
            if not isinstance(ref, dict) or not isinstance(ref.get("source_name"), str):
                raise o.err(f"external_references[{i}].source_name", "is required")
            if ref["source_name"].lower() == ATLAS_SOURCE:
                ext_id = ref.get("external_id")
                if not isinstance(ext_id, str) or not ext_id:
                    raise o.err(f"external_references[{i}].external_id", "is required for mitre-atlas")
                out.append(ext_id)
        return out

    def techniques(self, o: _Obj) -> list[str]:
        """ATLAS ids from the object's own references (ordered), else from its attack-pattern relations."""
        own = self.atlas_ids(o)
        if own:
            return own
        out: list[str] = []
        for kind, target in self.related.get(o.id, []):
            t = self.atlas_of.get(target)
            if kind in ("indicates", "uses") and t is not None and t not in out:
                out.append(t)
        return out

    def tlp(self, o: _Obj) -> TLP | None:
        levels = [self.tlp_of_marking[m] for m in o.items("object_marking_refs") if m in self.tlp_of_marking]
        return max(levels, key=_TLP_ORDER.index) if levels else None

    def source_org(self, o: _Obj) -> str:
        return o.text("source_org", ext=True) or o.text("created_by_ref") or "unknown"

    # -- records ----------------------------------------------------------------------------------------
    def organisation(self, o: _Obj) -> Organisation:
        sectors = o.items("sectors")
        if sectors and not isinstance(sectors[0], str):
            raise o.err("sectors", "must be a list of strings")
        try:
            return Organisation(
                id=o.id,
                name=o.req_str("name"),
                sector=sectors[0] if sectors else None,
                created=o.req_ts("created"),
            )
        except ValidationError as exc:
            raise _pydantic_error(o, exc, {}) from None

    def campaign(self, o: _Obj) -> Campaign:
        created, modified = o.req_ts("created"), o.req_ts("modified")
        try:
            return Campaign(
                id=o.id,
                name=o.req_str("name"),
                description=o.text("description"),
                source_org=self.source_org(o),
                first_seen=o.ts("first_seen") or created,
                last_seen=o.ts("last_seen") or modified,
                techniques=self.techniques(o),
                tlp=self.tlp(o) or TLP.AMBER,
                created=created,
                modified=modified,
            )
        except ValidationError as exc:
            raise _pydantic_error(o, exc, {"source_org": "created_by_ref"}) from None

    def indicator(self, o: _Obj) -> Indicator | None:
        pattern = o.req_str("pattern")
        pattern_type = o.req_str("pattern_type")
        valid_from = o.req_ts("valid_from")
        valid_until = o.ts("valid_until")
        if valid_until is not None and valid_until <= valid_from:
            raise o.err("valid_until", "must be later than valid_from")
        created, modified = o.req_ts("created"), o.req_ts("modified")
        confidence = o.integer("confidence", 0, 100)
        ext_prefix = f"extensions.{EXTENSION_ID}."
        provenance: list[Provenance] = []
        key_epoch: int | None = None
        campaign_id: str | None = None
        if o.ext is not None:
            raw_type = o.req_str("indicator_type", ext=True)
            if raw_type not in set(IndicatorType):
                raise o.err(ext_prefix + "indicator_type", f"is not an indicator type: {raw_type!r}")
            kind = IndicatorType(raw_type)
            value = o.req_str("value", ext=True)
            key_epoch = o.integer("key_epoch", 0, 2**63 - 1, ext=True)
            first_seen = o.ts("first_seen", ext=True) or valid_from
            last_seen = o.ts("last_seen", ext=True) or max(valid_from, modified)
            min_corroboration = o.integer("min_corroboration", 1, 2**31 - 1, ext=True) or 1
            provenance = self.provenance(o)
            campaign_id = o.text("campaign_id", ext=True)
        else:
            parsed = self.parse_pattern(o, pattern, pattern_type)
            if parsed is None:
                return None
            kind, value, key_epoch = parsed
            first_seen, last_seen, min_corroboration = valid_from, max(valid_from, modified), 1
        if kind in KEYED_TYPES and key_epoch is None:
            raise o.err(ext_prefix + "key_epoch", f"is required for {kind.value} indicators")
        if campaign_id is None:
            campaign_id = next(
                (t for k, t in self.related.get(o.id, []) if k == "indicates" and _is_id(t, "campaign")), None
            )
        value_field = ext_prefix + "value" if o.ext is not None else "pattern"
        try:
            return Indicator(
                id=o.id,
                type=kind,
                value=value,
                key_epoch=key_epoch,
                confidence=50 if confidence is None else confidence,
                first_seen=first_seen,
                last_seen=last_seen,
                valid_until=valid_until,
                tlp=self.tlp(o) or TLP.AMBER,
                source_org=self.source_org(o),
                campaign_id=campaign_id,
                techniques=self.techniques(o),
                name=o.text("name"),
                description=o.text("description"),
                min_corroboration=min_corroboration,
                provenance=provenance,
                created=created,
                modified=modified,
            )
        except ValidationError as exc:
            raise _pydantic_error(o, exc, {"": value_field, "value": value_field}) from None

    def parse_pattern(
        self, o: _Obj, pattern: str, pattern_type: str
    ) -> tuple[IndicatorType, str, int | None] | None:
        if pattern_type == "stix":
            mapped = parse_stix_pattern(pattern)
            if mapped is None:
                self.skip(o, f"pattern {pattern[:200]!r} does not map onto an indicator type")
                return None
            return mapped[0], mapped[1], None
        if pattern_type == PATTERN_TYPE:
            m = _OUR_PATTERN_RE.match(pattern)
            if m is None or m["type"] not in set(IndicatorType):
                raise o.err(
                    "pattern", f"is not a {PATTERN_TYPE} pattern (distillguard:<type>:<epoch>:<value>)"
                )
            return IndicatorType(m["type"]), m["value"], None if m["epoch"] == "-" else int(m["epoch"])
        self.skip(o, f"pattern_type {pattern_type!r} is not supported")
        return None

    def provenance(self, o: _Obj) -> list[Provenance]:
        raw = (o.ext or {}).get("provenance", [])
        path = f"extensions.{EXTENSION_ID}.provenance"
        if not isinstance(raw, list):
            raise o.err(path, "must be a list")
        out = []
        for i, p in enumerate(raw):
            if not isinstance(p, dict):
                raise o.err(f"{path}[{i}]", "must be an object")
            received = _parse_ts(p.get("received"))
            if received is None:
                raise o.err(f"{path}[{i}].received", "is missing or not a STIX timestamp")
            try:
                out.append(Provenance.model_validate({**p, "received": received}, strict=False))
            except ValidationError as exc:
                loc = exc.errors()[0].get("loc") or ("",)
                raise o.err(f"{path}[{i}].{loc[0]}", exc.errors()[0]["msg"]) from None
        return out

    def sighting(self, o: _Obj, skipped: set[str]) -> Sighting | None:
        target = o.req_str("sighting_of_ref")
        if not _is_id(target, "indicator"):
            self.skip(o, f"sighting of {target}, not of an indicator")
            return None
        if target in skipped:
            self.skip(o, f"sighting of {target}, which was skipped")
            return None
        count = o.integer("count", 0, 999_999_999)
        if count == 0:
            self.skip(o, "count is 0")
            return None
        kind = o.text("sighting_kind", ext=True) or SightingKind.SEEN.value
        if kind not in set(SightingKind):
            raise o.err(f"extensions.{EXTENSION_ID}.sighting_kind", f"is not a sighting kind: {kind!r}")
        where = o.items("where_sighted_refs")
        reporter = o.text("reporter", ext=True) or (where[0] if where else None) or o.text("created_by_ref")
        first_seen = o.ts("first_seen") or o.req_ts("created")
        last_seen = o.ts("last_seen") or o.req_ts("modified")
        if last_seen < first_seen:
            raise o.err("last_seen", "is earlier than first_seen")
        try:
            return Sighting(
                id=o.id,
                indicator_id=target,
                kind=SightingKind(kind),
                count=count or 1,
                first_seen=first_seen,
                last_seen=last_seen,
                reporter=reporter or "unknown",
                note=o.text("note", ext=True),
            )
        except ValidationError as exc:
            raise _pydantic_error(o, exc, {}) from None


def load_bundle(
    data: bytes | bytearray | str | dict[str, Any] | Path | IO[bytes],
    max_bytes: int = MAX_BUNDLE_BYTES,
    max_depth: int = MAX_DEPTH,
) -> BundleImport:
    """Read a STIX 2.1 bundle: the records, and what was skipped. All or nothing: raises `StixError`."""
    doc = _read(data, max_bytes, max_depth)
    if not isinstance(doc, dict):
        raise StixError(f"not a bundle: the document is a JSON {type(doc).__name__}, not an object")
    if doc.get("type") != "bundle":
        raise StixError(f"not a bundle: type is {doc.get('type')!r}", field="type")
    bundle_id = doc.get("id")
    if not (isinstance(bundle_id, str) and _is_id(bundle_id, "bundle")):
        raise StixError(f"not of the form bundle--<uuid>: {bundle_id!r}", field="id")
    if "spec_version" in doc and doc["spec_version"] != "2.1":
        # STIX 2.0 put spec_version on the bundle; 2.1 bundles have none
        raise StixError(
            f"must be '2.1', not {doc['spec_version']!r}", object_id=bundle_id, field="spec_version"
        )
    raw_objects = doc.get("objects", [])
    if not isinstance(raw_objects, list):
        raise StixError("must be a list", object_id=bundle_id, field="objects")
    for key, value in doc.items():
        if key != "objects" and isinstance(value, dict | list) and 1 + _depth(value) > max_depth:
            raise StixError(f"nested deeper than {max_depth} levels", object_id=bundle_id, field=key)
    objects: list[_Obj] = []
    first_index: dict[str, int] = {}
    for i, d in enumerate(raw_objects):
        _check_object(d, i, max_depth)
        seen = first_index.get(d["id"])
        if seen is not None:
            if raw_objects[seen] != d:
                raise StixError(
                    f"duplicate id with different content (first at objects[{seen}])",
                    object_id=d["id"],
                    index=i,
                    field="id",
                )
            continue  # the same object twice: harmless
        first_index[d["id"]] = i
        objects.append(_Obj(d, i))
    result = _Importer(objects).run()
    for s in result.skipped:
        log.info("STIX import skipped %s: %s", s.id, s.reason)
    return result


def from_bundle(
    data: bytes | bytearray | str | dict[str, Any] | Path | IO[bytes],
    max_bytes: int = MAX_BUNDLE_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Records:
    """The records of a STIX 2.1 bundle (see `load_bundle` for what was skipped)."""
    return load_bundle(data, max_bytes=max_bytes, max_depth=max_depth).records


# ---------------------------------------------------------------------------------------------------------
# validation


def check(bundle: dict[str, Any] | bytes | str) -> Validation:
    """Run the OASIS `stix2-validator` on a bundle: its errors and warnings."""
    try:
        from stix2validator import ValidationOptions, validate_instance
    except ImportError as exc:  # a dev dependency, not a runtime one
        raise RuntimeError("validation needs stix2-validator (pip install stix2-validator)") from exc
    doc = bundle if isinstance(bundle, dict) else orjson.loads(bundle)
    try:
        result = validate_instance(doc, ValidationOptions(version="2.1"))
    except Exception as exc:  # the validator raises on documents too broken to check
        return Validation(errors=[str(exc)], warnings=[])
    return Validation(errors=[str(e) for e in result.errors], warnings=[str(w) for w in result.warnings])


def validate(bundle: dict[str, Any] | bytes | str) -> list[str]:
    """The validator's errors for a bundle; empty when it is valid STIX 2.1."""
    return check(bundle).errors
