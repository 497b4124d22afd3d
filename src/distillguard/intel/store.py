"""The indicator store: indicators, sightings, campaigns and organisations in SQL (alembic branch `store`).

`IntelStore` is the API the rest of `intel` uses (STIX import and export, TAXII, matching, publishing).
`add` writes a `Records` in one transaction: a batch is stored whole or not at all. Objects are upserted
by id: a newer `modified` replaces the stored version, an equal or older one is ignored. Each indicator
keeps its provenance (who asserted it, when this store received it, and how) in a table of its own, so a
disputed indicator can be traced to whoever introduced it (`provenance`, `asserted_by`).

Policy (`StorePolicy`, documented on `effective_confidence` and `assess`): confidence decays with the
time since an indicator was last seen by anyone (`decay.py`); it is 0 once the indicator is past
`valid_until` or reported `expired`, and 0 when its source organisation, or `false_positive_quorum`
other organisations, report it as a false positive. An indicator blocks on its own only when its
decayed confidence reaches the threshold, enough independent organisations assert it, and it names no
warninglisted infrastructure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from distillguard.intel.db import Base, DatabaseError, open_db
from distillguard.intel.decay import DecaySettings
from distillguard.intel.indicator import (
    Campaign,
    Indicator,
    IndicatorType,
    Organisation,
    Provenance,
    Records,
    Sighting,
    SightingKind,
)
from distillguard.intel.warninglist import Warninglists

# SQLite only auto-numbers an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key
_BIG_PK = BigInteger().with_variant(Integer(), "sqlite")
_ID = 300  # STIX ids are `<type>--<uuid>`; 300 leaves room for custom types
_CHUNK = 500  # ids per IN (...) list: well under every backend's bind-parameter limit


class StoreError(RuntimeError):
    """An intel store operation failed; the message says what and (where known) which object."""


# -- tables -----------------------------------------------------------------------------------------------
class IndicatorRow(Base):
    __tablename__ = "intel_indicators"
    __table_args__ = (
        # (type, sha256 of value): skeleton sketches are kilobytes, too long for a B-tree key on PostgreSQL
        Index("ix_intel_indicators_type_value", "type", "value_hash"),
        Index("ix_intel_indicators_source_org", "source_org"),
        Index("ix_intel_indicators_campaign_id", "campaign_id"),
        CheckConstraint("confidence >= 0 AND confidence <= 100", name="ck_intel_indicators_confidence"),
        CheckConstraint("min_corroboration >= 1", name="ck_intel_indicators_min_corroboration"),
    )

    id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(Text)
    value_hash: Mapped[str] = mapped_column(String(64))
    key_epoch: Mapped[int | None] = mapped_column(Integer)
    confidence: Mapped[int] = mapped_column(SmallInteger)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    tlp: Mapped[str] = mapped_column(String(16))
    source_org: Mapped[str] = mapped_column(String(_ID))
    campaign_id: Mapped[str | None] = mapped_column(String(_ID))
    techniques: Mapped[list[str]] = mapped_column(JSON)
    name: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    min_corroboration: Mapped[int] = mapped_column(Integer)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    modified: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ProvenanceRow(Base):
    """One hop of an indicator's history: `org` asserted it, this store got it at `received` via `via`."""

    __tablename__ = "intel_provenance"
    __table_args__ = (
        Index("ix_intel_provenance_indicator_id", "indicator_id"),
        Index("ix_intel_provenance_org", "org"),
    )

    pk: Mapped[int] = mapped_column(_BIG_PK, primary_key=True, autoincrement=True)
    indicator_id: Mapped[str] = mapped_column(ForeignKey("intel_indicators.id", ondelete="CASCADE"))
    org: Mapped[str] = mapped_column(String(_ID))
    received: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    via: Mapped[str] = mapped_column(Text)


class SightingRow(Base):
    # No foreign key to the indicator: a peer may send sightings of an indicator this store does not
    # hold (yet); they count as soon as the indicator arrives.
    __tablename__ = "intel_sightings"
    __table_args__ = (
        Index("ix_intel_sightings_indicator_id", "indicator_id"),
        CheckConstraint("count >= 1", name="ck_intel_sightings_count"),
    )

    id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    indicator_id: Mapped[str] = mapped_column(String(_ID))
    kind: Mapped[str] = mapped_column(String(16))
    count: Mapped[int] = mapped_column(BigInteger)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reporter: Mapped[str] = mapped_column(String(_ID))
    note: Mapped[str | None] = mapped_column(Text)


class CampaignRow(Base):
    __tablename__ = "intel_campaigns"

    id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    source_org: Mapped[str] = mapped_column(String(_ID))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    techniques: Mapped[list[str]] = mapped_column(JSON)
    tlp: Mapped[str] = mapped_column(String(16))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    modified: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OrganisationRow(Base):
    __tablename__ = "intel_organisations"

    id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    sector: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))


STORE_TABLE_NAMES = (
    "intel_indicators",
    "intel_provenance",
    "intel_sightings",
    "intel_campaigns",
    "intel_organisations",
)
STORE_TABLES: tuple[Table, ...] = tuple(Base.metadata.tables[n] for n in STORE_TABLE_NAMES)


# -- results and policy -------------------------------------------------------------------------------------
class AddResult(BaseModel):
    """What `add` did: objects new to the store, replaced by a newer version, and ignored as not newer."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def total(self) -> int:
        return self.added + self.updated + self.unchanged


class StorePolicy(BaseModel):
    """When an indicator may block on its own (typed, so it can come from the TOML config)."""

    model_config = ConfigDict(extra="forbid")
    block_threshold: float = Field(50.0, ge=0, le=100, description="Effective confidence needed to block.")
    false_positive_quorum: int = Field(
        2, ge=1, description="Organisations other than the source whose false-positive reports withdraw it."
    )
    decay: DecaySettings = Field(default_factory=DecaySettings)


class Assessment(BaseModel):
    """Whether an indicator may block on its own at a time, and why, in words an analyst can read."""

    indicator_id: str
    at: datetime
    blocks: bool
    confidence: float = Field(description="Effective (decayed) confidence, 0-100.")
    threshold: float
    corroboration: int
    min_corroboration: int
    warninglist: str | None = None
    reasons: list[str]


Record = Indicator | Sighting | Campaign | Organisation
_R = TypeVar("_R", Campaign, Organisation, Sighting)


@dataclass
class _Sightings:
    """What the sightings of one indicator say, independent of the time of assessment."""

    seen: dict[str, datetime] = field(default_factory=dict)  # reporter -> latest last_seen
    false_positive: set[str] = field(default_factory=set)
    expired: dict[str, datetime] = field(default_factory=dict)  # reporter -> earliest report


_NO_SIGHTINGS = _Sightings()


def _utc(t: datetime) -> datetime:
    # SQLite hands datetimes back naive; everything stored is UTC
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _value_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for k in range(0, len(ids), _CHUNK):
        yield ids[k : k + _CHUNK]


def _db_message(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).strip().splitlines()[0]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- the store ---------------------------------------------------------------------------------------------
class IntelStore:
    """Indicators, sightings, campaigns and organisations, with decay, corroboration and warninglists.

    `indicators(...)` takes a snapshot of the sightings of the indicators it returns, and
    `effective_confidence`/`assess` of those indicators use it (so scoring 100k indicators costs one
    query, not 100k) until this store writes or lists again. Use `fresh=True` on those calls to re-read.
    """

    def __init__(
        self,
        engine: Engine,
        policy: StorePolicy | None = None,
        warninglists: Warninglists | None = None,
    ) -> None:
        self.engine = engine
        self.policy = policy or StorePolicy()
        self.warninglists = Warninglists.load_default() if warninglists is None else warninglists
        self._snapshot: dict[str, _Sightings] = {}

    @classmethod
    def open(
        cls,
        target: str | Path,
        policy: StorePolicy | None = None,
        warninglists: Warninglists | None = None,
    ) -> IntelStore:
        """Open (creating or upgrading the schema of) the store at a path (SQLite) or database URL."""
        try:
            engine = open_db(target)
        except DatabaseError as exc:
            raise StoreError(str(exc)) from exc
        return cls(engine, policy, warninglists)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> IntelStore:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------------------
    def add(self, records: Records, via: str = "local", org: str | None = None) -> AddResult:
        """Store `records` in one transaction: all of them, or (on any error) none.

        Indicators and campaigns are upserted by id and `modified`; sightings and organisations by id
        (a different version replaces the stored one). Every indicator gets a provenance entry: `org`
        (default: its source organisation) asserted it, received now, via `via`; entries it carries
        from earlier hops are kept. Re-adding an unchanged indicator through the same org and channel
        records nothing, so a retried import is idempotent.
        """
        received = datetime.now(UTC)
        res = AddResult()
        try:
            with Session(self.engine) as s, s.begin():
                self._upsert_replace(s, OrganisationRow, records.organisations, res)
                self._upsert_versioned(s, CampaignRow, records.campaigns, res)
                self._add_indicators(s, records.indicators, via, org, received, res)
                self._upsert_replace(s, SightingRow, records.sightings, res)
        except (SQLAlchemyError, ValueError, TypeError) as exc:
            msg = _db_message(exc) if isinstance(exc, SQLAlchemyError) else str(exc)
            raise StoreError(
                f"cannot add {_plural(len(records), 'record')}; nothing was stored: {msg}"
            ) from exc
        finally:
            self._snapshot.clear()
        return res

    def add_sighting(self, sighting: Sighting) -> AddResult:
        """Record a sighting of an indicator this store holds (StoreError if it holds none by that id)."""
        with Session(self.engine) as s:
            if s.get(IndicatorRow, sighting.indicator_id) is None:
                raise StoreError(
                    f"sighting {sighting.id}: no indicator {sighting.indicator_id!r} in the store"
                )
        return self.add(Records(sightings=[sighting]))

    def _existing(self, s: Session, row: type[Base], ids: Sequence[str]) -> dict[str, Any]:
        table = row.__table__
        out: dict[str, Any] = {}
        for part in _chunks(ids):
            for r in s.execute(select(table).where(table.c.id.in_(part))).mappings():
                out[r["id"]] = r
        return out

    def _upsert_versioned(
        self, s: Session, row: type[Base], recs: Sequence[Indicator | Campaign], res: AddResult
    ) -> dict[str, str]:
        """Upsert by `modified`: each input counts once as added, updated (newer) or unchanged (not newer);
        a batch holding one id twice stores the newest. Returns id -> how the stored object changed."""
        existing = {
            i: _utc(r["modified"]) for i, r in self._existing(s, row, list({r.id for r in recs})).items()
        }
        latest: dict[str, Indicator | Campaign] = {}
        for rec in recs:
            cur = latest.get(rec.id)
            have = cur.modified if cur is not None else existing.get(rec.id)
            if have is None:
                res.added += 1
            elif rec.modified > have:
                res.updated += 1
            else:
                res.unchanged += 1
                continue
            latest[rec.id] = rec
        self._write(s, row, {i: self._row(r) for i, r in latest.items()}, existing)
        status = {r.id: "unchanged" for r in recs}
        status.update({i: "updated" if i in existing else "added" for i in latest})
        return status

    def _upsert_replace(
        self, s: Session, row: type[Base], recs: Sequence[Sighting | Organisation], res: AddResult
    ) -> None:
        """Upsert records that have no version: a different content replaces, the same is unchanged."""
        existing = self._existing(s, row, list({r.id for r in recs}))
        latest: dict[str, dict[str, Any]] = {}
        for rec in recs:
            vals = self._row(rec)
            have = latest.get(rec.id) or existing.get(rec.id)
            if have is None:
                res.added += 1
            elif not self._same(have, vals):
                res.updated += 1
            else:
                res.unchanged += 1
                continue
            latest[rec.id] = vals
        self._write(s, row, latest, existing)

    @staticmethod
    def _write(
        s: Session, row: type[Base], latest: dict[str, dict[str, Any]], existing: dict[str, Any]
    ) -> None:
        new = [v for i, v in latest.items() if i not in existing]
        changed = [v for i, v in latest.items() if i in existing]
        if new:
            s.execute(insert(row), new)
        if changed:  # ORM bulk UPDATE by primary key
            s.execute(update(row), changed)

    @staticmethod
    def _same(old: Any, new: dict[str, Any]) -> bool:
        for k, v in new.items():
            o = old[k]
            if isinstance(o, datetime) and isinstance(v, datetime):
                o, v = _utc(o), _utc(v)
            if o != v:
                return False
        return True

    @staticmethod
    def _row(rec: Record) -> dict[str, Any]:
        d = rec.model_dump(exclude={"provenance"})
        for k, v in d.items():
            if isinstance(v, datetime):
                d[k] = _utc(v)
            elif isinstance(v, Enum):  # plain text in the database, whatever the driver makes of enums
                d[k] = v.value
        if isinstance(rec, Indicator):
            d["value_hash"] = _value_hash(rec.value)
        return d

    def _add_indicators(
        self,
        s: Session,
        recs: Sequence[Indicator],
        via: str,
        org: str | None,
        received: datetime,
        res: AddResult,
    ) -> None:
        if not recs:
            return
        status = self._upsert_versioned(s, IndicatorRow, recs, res)
        ids = list(status)
        known: dict[str, set[tuple[str, str, datetime]]] = {i: set() for i in ids}
        for part in _chunks(ids):
            q = select(
                ProvenanceRow.indicator_id, ProvenanceRow.org, ProvenanceRow.via, ProvenanceRow.received
            )
            for iid, o, v, t in s.execute(q.where(ProvenanceRow.indicator_id.in_(part))):
                known[iid].add((o, v, _utc(t)))
        rows: list[dict[str, Any]] = []
        for rec in recs:
            have = known[rec.id]
            for p in rec.provenance:  # hops before this store: keep those we do not have
                key = (p.org, p.via, _utc(p.received))
                if key not in have:
                    have.add(key)
                    rows.append({"indicator_id": rec.id, "org": p.org, "via": p.via, "received": key[2]})
            who = org or rec.source_org
            if status[rec.id] == "unchanged" and any(o == who and v == via for o, v, _ in have):
                continue  # the same party re-sent what we hold: nothing new to trace
            key = (who, via, received)
            if key not in have:
                have.add(key)
                rows.append({"indicator_id": rec.id, "org": who, "via": via, "received": received})
        if rows:
            s.execute(insert(ProvenanceRow), rows)

    def delete(self, ids: Iterable[str]) -> int:
        """Remove indicators (with their provenance and sightings) by id; returns how many were removed."""
        ids = list(ids)
        n = 0
        with Session(self.engine) as s, s.begin():
            for part in _chunks(ids):
                s.execute(delete(SightingRow).where(SightingRow.indicator_id.in_(part)))
                s.execute(delete(ProvenanceRow).where(ProvenanceRow.indicator_id.in_(part)))
                n += s.execute(delete(IndicatorRow).where(IndicatorRow.id.in_(part))).rowcount or 0  # type: ignore[attr-defined]
        self._snapshot.clear()
        return n

    # -- reading -------------------------------------------------------------------------------------------
    def _indicators_from(self, s: Session, rows: Sequence[Any]) -> list[Indicator]:
        prov: dict[str, list[dict[str, Any]]] = {r["id"]: [] for r in rows}
        ids = list(prov)
        for part in _chunks(ids):
            q = (
                select(
                    ProvenanceRow.indicator_id, ProvenanceRow.org, ProvenanceRow.via, ProvenanceRow.received
                )
                .where(ProvenanceRow.indicator_id.in_(part))
                .order_by(ProvenanceRow.pk)
            )
            for iid, o, v, t in s.execute(q):
                prov[iid].append({"org": o, "via": v, "received": t})
        out = []
        for r in rows:
            d = dict(r)
            d.pop("value_hash")
            d["provenance"] = prov[d["id"]]
            try:
                out.append(Indicator.model_validate(d))
            except ValidationError as exc:  # only if someone wrote the table by hand
                raise StoreError(f"indicator {d['id']} in the store is invalid: {exc}") from exc
        return out

    def indicators(
        self,
        type: IndicatorType | str | None = None,
        campaign_id: str | None = None,
        source_org: str | None = None,
        active_at: datetime | None = None,
        limit: int | None = None,
        ids: Iterable[str] | None = None,
    ) -> list[Indicator]:
        """Indicators by filter, ordered by id. `active_at`: only those with effective confidence > 0 then."""
        t = IndicatorRow.__table__
        q = select(t).order_by(t.c.id)
        if type is not None:
            q = q.where(t.c.type == IndicatorType(type).value)
        if campaign_id is not None:
            q = q.where(t.c.campaign_id == campaign_id)
        if source_org is not None:
            q = q.where(t.c.source_org == source_org)
        if active_at is not None:
            q = q.where(or_(t.c.valid_until.is_(None), t.c.valid_until > _utc(active_at)))
        elif limit is not None:
            q = q.limit(limit)
        with Session(self.engine) as s:
            if ids is not None:
                rows = [
                    r for part in _chunks(list(ids)) for r in s.execute(q.where(t.c.id.in_(part))).mappings()
                ]
                rows.sort(key=lambda r: r["id"])
            else:
                rows = list(s.execute(q).mappings())
            filtered = not (type is None and campaign_id is None and source_org is None and ids is None)
            summaries = self._summaries(s, [r["id"] for r in rows] if filtered else None)
            self._snapshot = {r["id"]: summaries.get(r["id"], _NO_SIGHTINGS) for r in rows}
            if active_at is not None:
                conf = self._evaluate(rows, active_at)
                rows = [r for r, c in zip(rows, conf, strict=True) if c > 0][:limit]
            return self._indicators_from(s, rows)

    def lookup(self, type: IndicatorType | str, value: str) -> list[Indicator]:
        """Indicators of a type with this (already normalised) value, through the (type, value) index."""
        t = IndicatorRow.__table__
        kind = IndicatorType(type).value
        q = select(t).where(t.c.type == kind, t.c.value_hash == _value_hash(value), t.c.value == value)
        with Session(self.engine) as s:
            return self._indicators_from(s, list(s.execute(q.order_by(t.c.id)).mappings()))

    def get(self, id: str) -> Record | None:
        """The indicator, sighting, campaign or organisation with this id, or None."""
        kinds: list[tuple[type[Base], type[Record]]] = [
            (IndicatorRow, Indicator),
            (SightingRow, Sighting),
            (CampaignRow, Campaign),
            (OrganisationRow, Organisation),
        ]
        prefix = id.split("--", 1)[0]
        first = {"indicator": 0, "sighting": 1, "campaign": 2, "identity": 3}.get(prefix)
        if first is not None:  # look where the id's type says first, then everywhere else
            kinds.insert(0, kinds.pop(first))
        with Session(self.engine) as s:
            for row, model in kinds:
                t = row.__table__
                r = s.execute(select(t).where(t.c.id == id)).mappings().first()
                if r is None:
                    continue
                if model is Indicator:
                    return self._indicators_from(s, [r])[0]
                return model.model_validate(dict(r))
        return None

    def _all(self, row: type[Base], model: type[_R], where: Any = None) -> list[_R]:
        t = row.__table__
        q = select(t).order_by(t.c.id)
        if where is not None:
            q = q.where(where)
        with Session(self.engine) as s:
            return [model.model_validate(dict(r)) for r in s.execute(q).mappings()]

    def campaigns(self, ids: Iterable[str] | None = None) -> list[Campaign]:
        where = None if ids is None else CampaignRow.__table__.c.id.in_(list(ids))
        return self._all(CampaignRow, Campaign, where)

    def organisations(self) -> list[Organisation]:
        return self._all(OrganisationRow, Organisation)

    def sightings(
        self, indicator_id: str | None = None, kind: SightingKind | str | None = None
    ) -> list[Sighting]:
        c = SightingRow.__table__.c
        conds = []
        if indicator_id is not None:
            conds.append(c.indicator_id == indicator_id)
        if kind is not None:
            conds.append(c.kind == SightingKind(kind).value)
        return self._all(SightingRow, Sighting, and_(*conds) if conds else None)

    def records(
        self,
        type: IndicatorType | str | None = None,
        campaign_id: str | None = None,
        source_org: str | None = None,
        active_at: datetime | None = None,
        ids: Iterable[str] | None = None,
    ) -> Records:
        """A `Records` for export. Unfiltered: everything. Filtered: the matching indicators, their
        sightings, the campaigns they belong to, and the organisations that created or sighted them."""
        inds = self.indicators(type, campaign_id, source_org, active_at, ids=ids)
        if type is None and campaign_id is None and source_org is None and active_at is None and ids is None:
            return Records(
                indicators=inds,
                sightings=self.sightings(),
                campaigns=self.campaigns(),
                organisations=self.organisations(),
            )
        wanted = {i.id for i in inds}
        sightings = [x for x in self.sightings() if x.indicator_id in wanted] if wanted else []
        camps = self.campaigns({i.campaign_id for i in inds if i.campaign_id})
        orgs = {i.source_org for i in inds} | {x.reporter for x in sightings} | {c.source_org for c in camps}
        return Records(
            indicators=inds,
            sightings=sightings,
            campaigns=camps,
            organisations=[o for o in self.organisations() if o.id in orgs or o.name in orgs],
        )

    def count(self, type: IndicatorType | str | None = None) -> int:
        """Number of indicators (of one type, or all)."""
        q = select(func.count()).select_from(IndicatorRow)
        if type is not None:
            q = q.where(IndicatorRow.type == IndicatorType(type).value)
        with Session(self.engine) as s:
            return int(s.execute(q).scalar_one())

    def counts(self) -> dict[str, int]:
        """Rows per kind of record: indicators, provenance, sightings, campaigns, organisations."""
        with Session(self.engine) as s:
            return {
                t.name.removeprefix("intel_"): int(
                    s.execute(select(func.count()).select_from(t)).scalar_one()
                )
                for t in STORE_TABLES
            }

    # -- provenance ----------------------------------------------------------------------------------------
    def provenance(self, indicator_id: str) -> list[Provenance]:
        """Every recorded hop of an indicator, oldest first."""
        q = (
            select(ProvenanceRow.org, ProvenanceRow.via, ProvenanceRow.received)
            .where(ProvenanceRow.indicator_id == indicator_id)
            .order_by(ProvenanceRow.pk)
        )
        with Session(self.engine) as s:
            return [Provenance(org=o, via=v, received=t) for o, v, t in s.execute(q)]

    def asserted_by(self, org: str) -> list[str]:
        """Ids of the indicators an organisation created or passed on (for tracing a dispute)."""
        q1 = select(ProvenanceRow.indicator_id).where(ProvenanceRow.org == org)
        q2 = select(IndicatorRow.id).where(IndicatorRow.source_org == org)
        with Session(self.engine) as s:
            return sorted(set(s.scalars(q1)) | set(s.scalars(q2)))

    # -- corroboration, decay, assessment -------------------------------------------------------------------
    def _summaries(
        self, s: Session, ids: Sequence[str] | None, type: str | None = None
    ) -> dict[str, _Sightings]:
        """Sightings per indicator, aggregated per (kind, reporter): for `ids`, one type, or everything."""
        c = SightingRow.__table__.c
        q = select(
            c.indicator_id, c.kind, c.reporter, func.max(c.last_seen), func.min(c.first_seen)
        ).group_by(c.indicator_id, c.kind, c.reporter)
        if type is not None:
            q = q.join(IndicatorRow, IndicatorRow.id == c.indicator_id).where(IndicatorRow.type == type)
        queries = [q] if ids is None else [q.where(c.indicator_id.in_(p)) for p in _chunks(ids)]
        out: dict[str, _Sightings] = {}
        for qq in queries:
            for iid, kind, reporter, last, first in s.execute(qq):
                sm = out.setdefault(iid, _Sightings())
                if kind == SightingKind.SEEN:
                    sm.seen[reporter] = _utc(last)
                elif kind == SightingKind.FALSE_POSITIVE:
                    sm.false_positive.add(reporter)
                elif kind == SightingKind.EXPIRED:
                    sm.expired[reporter] = _utc(first)
        return out

    def _sightings_of(self, indicator_id: str, fresh: bool) -> _Sightings:
        if not fresh and indicator_id in self._snapshot:
            return self._snapshot[indicator_id]
        with Session(self.engine) as s:
            return self._summaries(s, [indicator_id]).get(indicator_id, _NO_SIGHTINGS)

    @staticmethod
    def _independent(source_org: str, sm: _Sightings) -> set[str]:
        return ({source_org} | set(sm.seen)) - sm.false_positive

    def corroboration(self, indicator_id: str) -> int:
        """Independent organisations asserting the indicator: its source organisation and every reporter
        of a `seen` sighting, less every organisation that reported it as a false positive."""
        with Session(self.engine) as s:
            src = s.scalar(select(IndicatorRow.source_org).where(IndicatorRow.id == indicator_id))
            if src is None:
                raise StoreError(f"no indicator {indicator_id!r} in the store")
            sm = self._summaries(s, [indicator_id]).get(indicator_id, _NO_SIGHTINGS)
        return len(self._independent(src, sm))

    def _withdrawn(self, source_org: str, sm: _Sightings) -> bool:
        others = sm.false_positive - {source_org}
        return source_org in sm.false_positive or len(others) >= self.policy.false_positive_quorum

    def _evaluate(self, rows: Sequence[Any], at: datetime) -> np.ndarray:
        """Effective confidence of stored rows (mappings of the indicator table) at `at`, vectorised."""
        at = _utc(at)
        n = len(rows)
        base = np.empty(n)
        elapsed = np.empty(n)
        kinds = np.empty(n, dtype=object)
        for k, r in enumerate(rows):
            sm = self._snapshot.get(r["id"], _NO_SIGHTINGS)
            valid_until = r["valid_until"]
            dead = (valid_until is not None and _utc(valid_until) <= at) or self._withdrawn(
                r["source_org"], sm
            )
            dead = dead or any(t <= at for t in sm.expired.values())
            base[k] = 0.0 if dead else r["confidence"]
            elapsed[k] = (at - self._reference(_utc(r["last_seen"]), sm)).total_seconds()
            kinds[k] = r["type"]
        return self.policy.decay.scores(kinds, base, elapsed)

    @staticmethod
    def _reference(last_seen: datetime, sm: _Sightings) -> datetime:
        # a sighting by an organisation that did not call it a false positive renews the indicator
        seen = [t for org, t in sm.seen.items() if org not in sm.false_positive]
        return max([last_seen, *seen])

    def effective_confidence(self, indicator: Indicator, at: datetime, fresh: bool = False) -> float:
        """Confidence (0-100) at `at`, by these rules:

        - 0 from `valid_until` on, and from the first `expired` sighting on (any reporter: expiring an
          indicator can only stop it from blocking, never get anyone blocked);
        - 0 if its source organisation reported it as a false positive, or if `false_positive_quorum`
          other organisations did (fewer only lower its corroboration);
        - otherwise the base confidence decayed (decay.py, per type) over the time since it was last
          seen: the later of its `last_seen` and the last `seen` sighting of any organisation.
        """
        sm = self._sightings_of(indicator.id, fresh)
        return self._confidence(indicator, sm, at)

    def _confidence(self, indicator: Indicator, sm: _Sightings, at: datetime) -> float:
        at = _utc(at)
        if indicator.valid_until is not None and indicator.valid_until <= at:
            return 0.0
        if self._withdrawn(indicator.source_org, sm) or any(t <= at for t in sm.expired.values()):
            return 0.0
        elapsed = (at - self._reference(indicator.last_seen, sm)).total_seconds()
        return self.policy.decay.score(indicator.type, float(indicator.confidence), elapsed)

    def effective_confidences(self, indicators: Sequence[Indicator], at: datetime) -> np.ndarray:
        """`effective_confidence` of many indicators, with one query for all their sightings."""
        rows = [self._row(i) for i in indicators]
        missing = [i.id for i in indicators if i.id not in self._snapshot]
        if missing:
            with Session(self.engine) as s:
                got = self._summaries(s, missing)
            self._snapshot.update({i: got.get(i, _NO_SIGHTINGS) for i in missing})
        return self._evaluate(rows, at)

    def assess(self, indicator: Indicator, at: datetime, fresh: bool = False) -> Assessment:
        """May the indicator block on its own at `at`? It may when all three hold:

        1. its effective confidence reaches `policy.block_threshold`;
        2. at least `indicator.min_corroboration` independent organisations assert it (`corroboration`);
        3. it names no warninglisted infrastructure (a warninglisted indicator adds evidence only).
        """
        at = _utc(at)
        sm = self._sightings_of(indicator.id, fresh)
        conf = self._confidence(indicator, sm, at)
        thr = self.policy.block_threshold
        orgs = self._independent(indicator.source_org, sm)
        need = indicator.min_corroboration
        wl = self.warninglists.hit(indicator)
        reasons: list[str] = []

        expired = sorted((t, o) for o, t in sm.expired.items() if t <= at)
        if indicator.valid_until is not None and indicator.valid_until <= at:
            reasons.append(f"expired: valid until {indicator.valid_until:%Y-%m-%d %H:%M} UTC")
        elif expired:
            reasons.append(f"reported expired by {expired[0][1]} on {expired[0][0]:%Y-%m-%d}")
        fps = sorted(sm.false_positive)
        if indicator.source_org in sm.false_positive:
            reasons.append(
                f"withdrawn: its source organisation {indicator.source_org} reported a false positive"
            )
        elif len(fps) >= self.policy.false_positive_quorum:
            reasons.append(
                f"withdrawn: reported as a false positive by {len(fps)} organisations ({', '.join(fps)}); "
                f"{self.policy.false_positive_quorum} are enough"
            )
        elif fps:
            reasons.append(f"disputed: reported as a false positive by {', '.join(fps)}")
        if conf > 0 or not reasons:
            days = max((at - self._reference(indicator.last_seen, sm)).total_seconds(), 0.0) / 86_400
            cmp = "reaches" if conf >= thr else "is below"
            reasons.append(
                f"effective confidence {conf:.0f} (base {indicator.confidence}, last seen {days:.0f} days ago) "
                f"{cmp} the blocking threshold {thr:.0f}"
            )
        who = ", ".join(sorted(orgs)) or "nobody"
        word = "organisation" if len(orgs) == 1 else "organisations"
        if len(orgs) >= need:
            reasons.append(f"asserted by {len(orgs)} independent {word} ({who}); {need} required")
        else:
            reasons.append(f"asserted by only {len(orgs)} independent {word} ({who}); {need} required")
        if wl is not None:
            reasons.append(
                f"on warninglist {wl!r}: shared infrastructure, adds evidence but never blocks alone"
            )
        blocks = conf >= thr and conf > 0 and len(orgs) >= need and wl is None
        reasons.append("blocks on its own" if blocks else "does not block on its own: adds evidence only")
        return Assessment(
            indicator_id=indicator.id,
            at=at,
            blocks=blocks,
            confidence=conf,
            threshold=thr,
            corroboration=len(orgs),
            min_corroboration=need,
            warninglist=wl,
            reasons=reasons,
        )

    def assess_many(self, indicators: Sequence[Indicator], at: datetime) -> list[Assessment]:
        """`assess` for many indicators with one query for all their sightings."""
        self.effective_confidences(indicators, at)  # fills the snapshot for the ones it lacks
        return [self.assess(i, at) for i in indicators]

    def active_values(
        self, type: IndicatorType | str, at: datetime
    ) -> list[tuple[str, str, int | None, float]]:
        """(id, value, key_epoch, effective confidence) of every indicator of a type alive at `at`:
        two queries and one vectorised decay, for loading a matcher."""
        kind = IndicatorType(type).value
        t = IndicatorRow.__table__
        cols = [
            t.c.id,
            t.c.value,
            t.c.key_epoch,
            t.c.confidence,
            t.c.last_seen,
            t.c.valid_until,
            t.c.source_org,
        ]
        q = select(*cols).where(t.c.type == kind, or_(t.c.valid_until.is_(None), t.c.valid_until > _utc(at)))
        with Session(self.engine) as s:
            rows = [dict(r, type=kind) for r in s.execute(q.order_by(t.c.id)).mappings()]
            sm = self._summaries(s, None, type=kind)
        saved, self._snapshot = self._snapshot, {r["id"]: sm.get(r["id"], _NO_SIGHTINGS) for r in rows}
        try:
            conf = self._evaluate(rows, at)
        finally:
            self._snapshot = saved | self._snapshot
        return [
            (r["id"], r["value"], r["key_epoch"], float(c)) for r, c in zip(rows, conf, strict=True) if c > 0
        ]
