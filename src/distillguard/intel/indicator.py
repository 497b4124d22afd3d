"""The intel records: indicators, sightings, campaigns, organisations.

These are the domain records every part of `intel` speaks (store, STIX, TAXII, matching). They are plain
pydantic models; the store maps them to tables, `stix` maps them to STIX 2.1 objects.
"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


class IndicatorType(StrEnum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    CIDR = "cidr"  # an IPv4 or IPv6 network
    ASN = "asn"
    USER_AGENT = "user-agent"
    ACCOUNT = "account"  # keyed digest
    ORGANISATION = "organisation"  # keyed digest
    PAYMENT = "payment"  # keyed digest of a payment fingerprint
    DEVICE = "device"  # keyed digest of a device fingerprint
    SKELETON = "skeleton"  # keyed MinHash sketch of a prompt skeleton
    CAMPAIGN = "campaign"  # a campaign id, as a keyed digest of the publisher's campaign id


# Identifiers of customers: these never leave a provider raw, only as keyed digests.
DIGEST_TYPES = frozenset(
    {
        IndicatorType.ACCOUNT,
        IndicatorType.ORGANISATION,
        IndicatorType.PAYMENT,
        IndicatorType.DEVICE,
        IndicatorType.CAMPAIGN,
    }
)
# Values shared as they are (they identify infrastructure, not customers).
NETWORK_TYPES = frozenset(
    {
        IndicatorType.IPV4,
        IndicatorType.IPV6,
        IndicatorType.CIDR,
        IndicatorType.ASN,
        IndicatorType.USER_AGENT,
    }
)
KEYED_TYPES = DIGEST_TYPES | {IndicatorType.SKELETON}


class TLP(StrEnum):
    """TLP 2.0 (FIRST). RED never leaves the collection it was put in."""

    CLEAR = "clear"
    GREEN = "green"
    AMBER = "amber"
    AMBER_STRICT = "amber+strict"
    RED = "red"


class SightingKind(StrEnum):
    SEEN = "seen"
    FALSE_POSITIVE = "false_positive"
    EXPIRED = "expired"


# MITRE ATLAS techniques that distillation campaigns use.
ATLAS_EXTRACT_MODEL = "AML.T0024.002"  # Exfiltration via AI Inference API: Extract AI Model
ATLAS_TRAIN_PROXY = "AML.T0005.001"  # Create Proxy AI Model: Train Proxy via Replication
ATLAS_TECHNIQUES = {
    ATLAS_EXTRACT_MODEL: "Extract AI Model",
    ATLAS_TRAIN_PROXY: "Train Proxy via Replication",
}

Confidence = Annotated[int, Field(ge=0, le=100)]


def now() -> datetime:
    return datetime.now(UTC)


def new_id(kind: str) -> str:
    """A STIX-style id (`indicator--<uuid4>`), so records keep their id through STIX and TAXII."""
    return f"{kind}--{uuid.uuid4()}"


def _aware(v: datetime) -> datetime:
    # naive times (SQLite gives them back naive) are UTC; aware ones are kept in UTC
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


Time = Annotated[datetime, AfterValidator(_aware)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Provenance(BaseModel):
    """Where an indicator came from, one entry per hop, so a dispute can be traced to its source."""

    model_config = ConfigDict(extra="forbid")
    org: str = Field(description="Organisation (identity id or name) that asserted it.")
    received: Time = Field(description="When this store received it.")
    via: str = Field("local", description="`local`, `stix:<file>`, `taxii:<collection url>`, `scan:<dir>`.")


class Indicator(_Record):
    """One shareable fact about a scraping operation."""

    id: str = Field(default_factory=lambda: new_id("indicator"))
    type: IndicatorType
    value: str = Field(
        description="Address, CIDR, AS number (digits), user agent; a keyed digest (hex) for identifiers; "
        "a keyed MinHash signature (base64 of little-endian uint64) for skeletons."
    )
    key_epoch: int | None = Field(None, description="Consortium key epoch of a digest or sketch.")
    confidence: Confidence = 50
    first_seen: Time = Field(default_factory=now)
    last_seen: Time = Field(default_factory=now)
    valid_until: Time | None = None
    tlp: TLP = TLP.AMBER
    source_org: str = Field(description="Organisation that created it (identity id or name).")
    campaign_id: str | None = None
    techniques: list[str] = Field(default_factory=lambda: [ATLAS_EXTRACT_MODEL])
    name: str | None = None
    description: str | None = None
    min_corroboration: int = Field(
        1, ge=1, description="Independent providers that must report it before it blocks by itself."
    )
    provenance: list[Provenance] = Field(default_factory=list)
    created: Time = Field(default_factory=now)
    modified: Time = Field(default_factory=now)

    @model_validator(mode="after")
    def _check_value(self) -> Indicator:
        # object.__setattr__: the record is built here, there is nothing to re-validate
        object.__setattr__(self, "value", normalise_value(self.type, self.value))
        if self.type in KEYED_TYPES and self.key_epoch is None:
            raise ValueError(f"{self.type} indicators are keyed: key_epoch is required")
        return self


class Sighting(_Record):
    """A report that an indicator was seen (or was a false positive, or has expired)."""

    id: str = Field(default_factory=lambda: new_id("sighting"))
    indicator_id: str
    kind: SightingKind = SightingKind.SEEN
    count: int = Field(1, ge=1)
    first_seen: Time = Field(default_factory=now)
    last_seen: Time = Field(default_factory=now)
    reporter: str = Field(description="Organisation that saw it.")
    note: str | None = None


class Campaign(_Record):
    id: str = Field(default_factory=lambda: new_id("campaign"))
    name: str
    description: str | None = None
    source_org: str
    first_seen: Time = Field(default_factory=now)
    last_seen: Time = Field(default_factory=now)
    techniques: list[str] = Field(default_factory=lambda: [ATLAS_EXTRACT_MODEL, ATLAS_TRAIN_PROXY])
    tlp: TLP = TLP.AMBER
    created: Time = Field(default_factory=now)
    modified: Time = Field(default_factory=now)


class Organisation(_Record):
    id: str = Field(default_factory=lambda: new_id("identity"))
    name: str
    sector: str | None = None
    created: Time = Field(default_factory=now)


def normalise_value(kind: IndicatorType, value: str) -> str:
    """The canonical text of a value, so that equal values compare equal; ValueError if it is invalid."""
    v = value.strip()
    if not v:
        raise ValueError(f"{kind} indicator has an empty value")
    if kind is IndicatorType.IPV4:
        return str(ipaddress.IPv4Address(v))
    if kind is IndicatorType.IPV6:
        return str(ipaddress.IPv6Address(v))
    if kind is IndicatorType.CIDR:
        return str(ipaddress.ip_network(v, strict=False))
    if kind is IndicatorType.ASN:
        digits = v.upper().removeprefix("AS")
        if not digits.isdigit() or not 0 <= int(digits) < 2**32:
            raise ValueError(f"asn indicator {value!r} is not an AS number")
        return str(int(digits))
    if kind in DIGEST_TYPES:
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v.lower()):
            raise ValueError(f"{kind} indicator must be a keyed digest (64 hex characters), not a raw value")
        return v.lower()
    return v


class Records(_Record):
    """A set of intel records moved together: a STIX bundle's content, a TAXII page, a store import."""

    indicators: list[Indicator] = Field(default_factory=list)
    sightings: list[Sighting] = Field(default_factory=list)
    campaigns: list[Campaign] = Field(default_factory=list)
    organisations: list[Organisation] = Field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indicators) + len(self.sightings) + len(self.campaigns) + len(self.organisations)
