"""The TAXII server's tables (alembic branch `taxii`, migration `0001_taxii`).

Timestamps the server assigns are integers of microseconds since the epoch: exact on every backend (SQLite
has no timestamp type, and string timestamps compare wrongly across precisions), and cheap to page by.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from distillguard.intel.db import Base


class ApiRoot(Base):
    """An API root: a URL path segment (`/<name>/`) that groups collections."""

    __tablename__ = "taxii_api_roots"
    __table_args__ = (UniqueConstraint("name", name="uq_taxii_api_roots_name"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(Text)
    max_content_length: Mapped[int] = mapped_column(BigInteger)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_us: Mapped[int] = mapped_column(BigInteger)


class Collection(Base):
    """A collection. `clock_us` is the last date_added given out in it.

    Every ingest locks this row (an UPDATE) before it reads the clock, so writers to one collection are
    serialised and each object gets max(now, clock + 1 µs): date_added is strictly increasing in commit
    order, which makes `added_after` and `next` paging exact (no object skipped or returned twice).
    """

    __tablename__ = "taxii_collections"
    __table_args__ = (UniqueConstraint("id", name="uq_taxii_collections_id"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64))  # the TAXII collection id (a UUID)
    api_root_pk: Mapped[int] = mapped_column(ForeignKey("taxii_api_roots.pk", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(Text)
    alias: Mapped[str | None] = mapped_column(String(128))
    # rights every valid key has, on top of its own grants
    default_read: Mapped[bool] = mapped_column(Boolean, default=False)
    default_write: Mapped[bool] = mapped_column(Boolean, default=False)
    clock_us: Mapped[int] = mapped_column(BigInteger, default=0)
    created_us: Mapped[int] = mapped_column(BigInteger)


class StoredObject(Base):
    """One version of one STIX object in one collection; the object itself is kept as JSON bytes."""

    __tablename__ = "taxii_objects"
    __table_args__ = (
        # paging key: unique because the collection clock is strictly increasing
        UniqueConstraint("collection_pk", "date_added_us", name="uq_taxii_objects_added"),
        # one row per (collection, id, version): re-posting a version is a no-op; also serves version filters
        UniqueConstraint("collection_pk", "object_id", "version_us", name="uq_taxii_objects_version"),
        # the TLP:RED containment check looks an id up across collections
        Index("ix_taxii_objects_object_id", "object_id"),
    )

    pk: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    collection_pk: Mapped[int] = mapped_column(ForeignKey("taxii_collections.pk", ondelete="CASCADE"))
    object_id: Mapped[str] = mapped_column(String(300))  # <type up to 250>--<uuid>
    type: Mapped[str] = mapped_column(String(250))
    version_us: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[str] = mapped_column(String(40))  # as the object wrote it (modified or created)
    spec_version: Mapped[str] = mapped_column(String(8))
    date_added_us: Mapped[int] = mapped_column(BigInteger)
    tlp: Mapped[str | None] = mapped_column(String(16))  # from object_marking_refs; 'red' never leaves
    body: Mapped[bytes] = mapped_column(LargeBinary)


class ApiKey(Base):
    """An API key: only the SHA-256 of the token is stored (tokens are 256-bit random, so no KDF needed)."""

    __tablename__ = "taxii_api_keys"
    __table_args__ = (
        UniqueConstraint("name", name="uq_taxii_api_keys_name"),
        UniqueConstraint("key_hash", name="uq_taxii_api_keys_hash"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64))
    created_us: Mapped[int] = mapped_column(BigInteger)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class KeyRight(Base):
    """What one key may do in one collection."""

    __tablename__ = "taxii_key_rights"

    key_pk: Mapped[int] = mapped_column(ForeignKey("taxii_api_keys.pk", ondelete="CASCADE"), primary_key=True)
    collection_pk: Mapped[int] = mapped_column(
        ForeignKey("taxii_collections.pk", ondelete="CASCADE"), primary_key=True
    )
    can_read: Mapped[bool] = mapped_column(Boolean, default=False)
    can_write: Mapped[bool] = mapped_column(Boolean, default=False)


class StatusRecord(Base):
    """The status resource of one POST, kept so `GET .../status/<id>/` can return it later."""

    __tablename__ = "taxii_status"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    api_root_pk: Mapped[int] = mapped_column(ForeignKey("taxii_api_roots.pk", ondelete="CASCADE"))
    key_pk: Mapped[int | None] = mapped_column(ForeignKey("taxii_api_keys.pk", ondelete="SET NULL"))
    created_us: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[bytes] = mapped_column(LargeBinary)


MODELS = (ApiRoot, Collection, StoredObject, ApiKey, KeyRight, StatusRecord)
TABLE_NAMES = frozenset(m.__tablename__ for m in MODELS)
