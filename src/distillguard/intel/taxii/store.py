"""The TAXII server's data layer: admin functions, key checks, bulk ingest and paged queries.

Kept apart from the HTTP layer (`server.py`) so the CLI and tests can manage api roots, collections and
keys without a running server. Every function takes an SQLAlchemy `Engine` whose schema is migrated
(`distillguard.intel.db.open_db`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, Engine, and_, delete, func, insert, literal, or_, select, text, update
from sqlalchemy.sql.elements import ColumnElement

from .tables import ApiKey, ApiRoot, Collection, KeyRight, StatusRecord, StoredObject

MEDIA_TYPE_TAXII = "application/taxii+json;version=2.1"
MEDIA_TYPE_STIX = "application/stix+json;version=2.1"
DEFAULT_MAX_CONTENT_LENGTH = 10 * 1024 * 1024

# TLP marking definitions: TLP 2.0 (the ones we write) and TLP 1.0 (the ones older peers write).
TLP_MARKINGS: dict[str, str] = {
    "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487": "clear",
    "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb": "green",
    "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421": "amber",
    "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003": "amber+strict",
    "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1": "red",
    "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9": "clear",  # TLP 1.0 WHITE
    "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da": "green",
    "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82": "amber",
    "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed": "red",
}
TLP_RED_IDS = frozenset(k for k, v in TLP_MARKINGS.items() if v == "red")
_TLP_ORDER = {"clear": 0, "green": 1, "amber": 2, "amber+strict": 3, "red": 4}

_ID_RE = re.compile(
    r"^([a-z0-9][a-z0-9-]{0,248}[a-z0-9]|[a-z0-9])--[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"
)
_ROOT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.~-]{0,63}$")
_IN_CHUNK = 500  # bound on bind parameters per IN (...) list


class TaxiiStoreError(ValueError):
    """A bad admin request (unknown api root, collection or key; a name already taken)."""


# --- time -------------------------------------------------------------------------------------------------


def now_us() -> int:
    return time.time_ns() // 1000


def us_to_timestamp(us: int) -> str:
    """Microseconds since the epoch as a TAXII timestamp (always six fractional digits)."""
    secs, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:06d}Z"


def timestamp_to_us(ts: str) -> int:
    """A STIX/TAXII timestamp (any fractional precision, 'Z' or an offset) as microseconds since the epoch."""
    if not isinstance(ts, str) or len(ts) < 20 or ts[10] not in "Tt":
        raise ValueError(f"not a timestamp: {ts!r}")
    dt = datetime.fromisoformat(ts)
    if dt.tzinfo is None:  # STIX timestamps are UTC even when a peer forgets the Z
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# --- admin ------------------------------------------------------------------------------------------------


def create_api_root(
    engine: Engine,
    name: str,
    title: str,
    description: str | None = None,
    *,
    max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH,
    default: bool = False,
) -> str:
    """Create the api root served at `/<name>/`; returns its name."""
    if not _ROOT_NAME_RE.match(name) or name == "taxii2":
        raise TaxiiStoreError(f"api root name {name!r} must be a URL path segment (letters, digits, _.~-)")
    with engine.begin() as conn:
        if conn.execute(select(ApiRoot.pk).where(ApiRoot.name == name)).first():
            raise TaxiiStoreError(f"api root {name!r} exists")
        if default:
            conn.execute(update(ApiRoot).values(is_default=False))
        conn.execute(
            insert(ApiRoot).values(
                name=name,
                title=title,
                description=description,
                max_content_length=max_content_length,
                is_default=default,
                created_us=now_us(),
            )
        )
    return name


def create_collection(
    engine: Engine,
    api_root: str,
    title: str,
    description: str | None = None,
    *,
    alias: str | None = None,
    can_read: bool = False,
    can_write: bool = False,
    collection_id: str | None = None,
) -> str:
    """Create a collection under `api_root`; returns its id.

    `can_read` / `can_write` are the rights every valid API key gets on it (a shared feed); keys get
    more through `create_api_key` / `grant`.
    """
    cid = collection_id or str(uuid.uuid4())
    with engine.begin() as conn:
        root_pk = conn.execute(select(ApiRoot.pk).where(ApiRoot.name == api_root)).scalar()
        if root_pk is None:
            raise TaxiiStoreError(f"no api root {api_root!r}")
        if conn.execute(select(Collection.pk).where(Collection.id == cid)).first():
            raise TaxiiStoreError(f"collection {cid} exists")
        conn.execute(
            insert(Collection).values(
                id=cid,
                api_root_pk=root_pk,
                title=title,
                description=description,
                alias=alias,
                default_read=can_read,
                default_write=can_write,
                clock_us=0,
                created_us=now_us(),
            )
        )
    return cid


def root_exists(engine: Engine, name: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(ApiRoot.pk).where(ApiRoot.name == name)).first() is not None


def add_local(engine: Engine, collection: str, objects: Sequence[Any]) -> dict[str, Any]:
    """Add objects to one of this server's collections (by id, title or alias) without going through
    HTTP: how `distillguard intel publish` offers what it published. Returns the status resource."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Collection.pk, Collection.api_root_pk, Collection.id).where(
                (Collection.id == collection)
                | (Collection.title == collection)
                | (Collection.alias == collection)
            )
        ).all()
    if not rows:
        raise TaxiiStoreError(
            f"no collection {collection!r} on this server (`distillguard intel collection` creates one)"
        )
    if len(rows) > 1:
        raise TaxiiStoreError(f"{len(rows)} collections are called {collection!r}; give its id")
    pk, root_pk, _ = rows[0]
    return ingest(engine, pk, objects, api_root_pk=root_pk, key_pk=None)


Right = Literal["r", "w", "rw"]


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_key(engine: Engine, name: str, rights: dict[str, Right] | None = None) -> str:
    """Create an API key with per-collection rights; returns the token (the only time it is visible)."""
    token = "dgk_" + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        if conn.execute(select(ApiKey.pk).where(ApiKey.name == name)).first():
            raise TaxiiStoreError(f"API key {name!r} exists")
        key_pk = conn.execute(
            insert(ApiKey)
            .values(name=name, key_hash=_hash_token(token), created_us=now_us(), revoked=False)
            .returning(ApiKey.pk)
        ).scalar_one()
        _set_rights(conn, key_pk, rights or {})
    return token


def grant(engine: Engine, key_name: str, rights: dict[str, Right]) -> None:
    """Set a key's rights on the given collections (replacing what it had on them)."""
    with engine.begin() as conn:
        key_pk = conn.execute(select(ApiKey.pk).where(ApiKey.name == key_name)).scalar()
        if key_pk is None:
            raise TaxiiStoreError(f"no API key {key_name!r}")
        _set_rights(conn, key_pk, rights)


def revoke_api_key(engine: Engine, key_name: str) -> None:
    with engine.begin() as conn:
        if not conn.execute(update(ApiKey).where(ApiKey.name == key_name).values(revoked=True)).rowcount:
            raise TaxiiStoreError(f"no API key {key_name!r}")


def _set_rights(conn: Connection, key_pk: int, rights: dict[str, Right]) -> None:
    for cid, right in rights.items():
        if right not in ("r", "w", "rw"):
            raise TaxiiStoreError(f"right for {cid} must be 'r', 'w' or 'rw', not {right!r}")
        coll_pk = conn.execute(select(Collection.pk).where(Collection.id == cid)).scalar()
        if coll_pk is None:
            raise TaxiiStoreError(f"no collection {cid}")
        conn.execute(delete(KeyRight).where(KeyRight.key_pk == key_pk, KeyRight.collection_pk == coll_pk))
        conn.execute(
            insert(KeyRight).values(
                key_pk=key_pk, collection_pk=coll_pk, can_read="r" in right, can_write="w" in right
            )
        )


# --- authentication and rights ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CollectionInfo:
    pk: int
    id: str
    api_root_pk: int
    title: str
    description: str | None
    alias: str | None
    can_read: bool  # for the key asking
    can_write: bool

    def resource(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "title": self.title}
        if self.description:
            out["description"] = self.description
        if self.alias:
            out["alias"] = self.alias
        out.update(can_read=self.can_read, can_write=self.can_write, media_types=[MEDIA_TYPE_STIX])
        return out


@dataclass(frozen=True)
class RootInfo:
    pk: int
    name: str
    title: str
    description: str | None
    max_content_length: int

    def resource(self) -> dict[str, Any]:
        out: dict[str, Any] = {"title": self.title}
        if self.description:
            out["description"] = self.description
        out.update(versions=[MEDIA_TYPE_TAXII], max_content_length=self.max_content_length)
        return out


def discovery(engine: Engine) -> tuple[list[str], str | None]:
    """Names of all api roots, and the default's."""
    with engine.connect() as conn:
        rows = conn.execute(select(ApiRoot.name, ApiRoot.is_default).order_by(ApiRoot.pk)).all()
    default = next((r.name for r in rows if r.is_default), None)
    return [r.name for r in rows], default


def _collections_query(key_pk: int) -> Any:
    kr = KeyRight.__table__
    return select(
        Collection.pk,
        Collection.id,
        Collection.api_root_pk,
        Collection.title,
        Collection.description,
        Collection.alias,
        or_(Collection.default_read, and_(kr.c.can_read.is_not(None), kr.c.can_read)).label("r"),
        or_(Collection.default_write, and_(kr.c.can_write.is_not(None), kr.c.can_write)).label("w"),
    ).outerjoin(kr, and_(kr.c.collection_pk == Collection.pk, kr.c.key_pk == key_pk))


def _info(r: Any) -> CollectionInfo:
    return CollectionInfo(r.pk, r.id, r.api_root_pk, r.title, r.description, r.alias, bool(r.r), bool(r.w))


def list_collections(engine: Engine, root_pk: int, key_pk: int) -> list[CollectionInfo]:
    """The collections of an api root that the key has some right on."""
    with engine.connect() as conn:
        rows = conn.execute(
            _collections_query(key_pk).where(Collection.api_root_pk == root_pk).order_by(Collection.pk)
        ).all()
    return [i for i in map(_info, rows) if i.can_read or i.can_write]


@dataclass(frozen=True)
class Access:
    """What one request resolves to: the caller's key, and the api root and collection it names."""

    key_pk: int | None
    root: RootInfo | None = None
    collection: CollectionInfo | None = None


def resolve(engine: Engine, token: str | None, root_name: str | None, collection_id: str | None) -> Access:
    """Key, api root and collection (with the key's rights) in one connection: one pool checkout and one
    thread-pool hop per request instead of three."""
    if not token or len(token) > 256:
        return Access(None)
    digest = _hash_token(token)
    with engine.connect() as conn:
        key = conn.execute(
            select(ApiKey.pk, ApiKey.key_hash, ApiKey.revoked).where(ApiKey.key_hash == digest)
        ).first()
        # the lookup is by hash already; compare_digest keeps the final check constant-time anyway
        if key is None or key.revoked or not hmac.compare_digest(key.key_hash, digest):
            return Access(None)
        if root_name is None:
            return Access(key.pk)
        r = conn.execute(
            select(
                ApiRoot.pk, ApiRoot.name, ApiRoot.title, ApiRoot.description, ApiRoot.max_content_length
            ).where(ApiRoot.name == root_name)
        ).first()
        if r is None:
            return Access(key.pk)
        root = RootInfo(r.pk, r.name, r.title, r.description, r.max_content_length)
        if collection_id is None:
            return Access(key.pk, root)
        c = conn.execute(
            _collections_query(key.pk).where(
                Collection.api_root_pk == root.pk, Collection.id == collection_id
            )
        ).first()
        return Access(key.pk, root, None if c is None else _info(c))


# --- ingest -----------------------------------------------------------------------------------------------


def tlp_of(obj: dict[str, Any]) -> str | None:
    """The most restrictive TLP marking on the object (object or granular markings), or None."""
    refs: list[Any] = list(obj.get("object_marking_refs") or ())
    for gm in obj.get("granular_markings") or ():
        if isinstance(gm, dict):
            refs.append(gm.get("marking_ref"))
    best: str | None = None
    for ref in refs:
        level = TLP_MARKINGS.get(ref) if isinstance(ref, str) else None
        if level is not None and (best is None or _TLP_ORDER[level] > _TLP_ORDER[best]):
            best = level
    return best


def spec_version_of(obj: dict[str, Any]) -> str:
    sv = obj.get("spec_version")
    if isinstance(sv, str):
        return sv
    # STIX 2.0 objects carry no spec_version; 2.1 SCOs may omit it but have neither created nor modified
    return "2.1" if "created" not in obj and "modified" not in obj else "2.0"


@dataclass
class _Candidate:
    obj: dict[str, Any]
    object_id: str
    version: str | None  # None: no created/modified, the version is date_added
    version_us: int | None
    tlp: str | None


def _check_object(obj: Any) -> _Candidate | str:
    """A candidate row, or why the object is refused."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    oid, otype = obj.get("id"), obj.get("type")
    if not isinstance(oid, str) or not _ID_RE.match(oid):
        return "missing or malformed 'id' (want <type>--<uuid>)"
    if not isinstance(otype, str) or oid.split("--", 1)[0] != otype:
        return "'type' missing or not the prefix of 'id'"
    sv = obj.get("spec_version")
    if sv is not None and sv not in ("2.0", "2.1"):
        return f"unsupported spec_version {sv!r}"
    version = obj.get("modified", obj.get("created"))
    if version is None:
        return _Candidate(obj, oid, None, None, tlp_of(obj))
    try:
        vus = timestamp_to_us(version)
    except (ValueError, TypeError):
        return f"malformed 'modified'/'created' timestamp {version!r}"
    return _Candidate(obj, oid, version, vus, tlp_of(obj))


def _chunks(seq: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(seq), _IN_CHUNK):
        yield seq[i : i + _IN_CHUNK]


def ingest(
    engine: Engine,
    collection_pk: int,
    objects: Sequence[Any],
    *,
    api_root_pk: int,
    key_pk: int | None,
) -> dict[str, Any]:
    """Add an envelope's objects to a collection in one transaction; returns the TAXII status resource.

    Per object: stored (success), already there with that version (success, idempotent so that a client
    may retry a batch), or refused (failure, with the reason). A TLP:RED object whose id is already held
    in another collection is refused: RED never leaves the collection it was first posted into.
    """
    request_us = now_us()
    successes: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    cands: list[_Candidate] = []
    for obj in objects:  # checked before the lock is taken, to hold it for as short as possible
        c = _check_object(obj)
        if isinstance(c, str):
            oid = obj.get("id") if isinstance(obj, dict) else None
            failures.append({"id": oid if isinstance(oid, str) else "", "version": "", "message": c})
        else:
            cands.append(c)
    with engine.begin() as conn:
        # lock the collection row first: serialises writers, so the clock read below is the latest
        conn.execute(
            update(Collection).where(Collection.pk == collection_pk).values(clock_us=Collection.clock_us)
        )
        clock = conn.execute(select(Collection.clock_us).where(Collection.pk == collection_pk)).scalar_one()

        ids = sorted({c.object_id for c in cands})
        present: set[tuple[str, int]] = set()
        present_ids: set[str] = set()
        for chunk in _chunks(ids):
            for oid, vus in conn.execute(
                select(StoredObject.object_id, StoredObject.version_us).where(
                    StoredObject.collection_pk == collection_pk, StoredObject.object_id.in_(chunk)
                )
            ):
                present.add((oid, vus))
                present_ids.add(oid)
        red_elsewhere: set[str] = set()
        red_ids = sorted({c.object_id for c in cands if c.tlp == "red"})
        for chunk in _chunks(red_ids):
            red_elsewhere.update(
                conn.execute(
                    select(StoredObject.object_id).where(
                        StoredObject.object_id.in_(chunk),
                        StoredObject.collection_pk != collection_pk,
                        StoredObject.tlp == "red",
                    )
                ).scalars()
            )

        rows: list[dict[str, Any]] = []
        t = max(request_us, clock + 1)
        for c in cands:
            if c.object_id in red_elsewhere:
                failures.append(
                    {
                        "id": c.object_id,
                        "version": c.version or "",
                        "message": "TLP:RED object held in another collection; it never leaves that collection",
                    }
                )
                continue
            dup = (
                c.object_id in present_ids if c.version_us is None else (c.object_id, c.version_us) in present
            )
            if dup:
                successes.append(
                    {"id": c.object_id, "version": c.version or "", "message": "already present"}
                )
                continue
            vus = t if c.version_us is None else c.version_us
            version = c.version if c.version is not None else us_to_timestamp(t)
            present.add((c.object_id, vus))
            present_ids.add(c.object_id)
            rows.append(
                {
                    "collection_pk": collection_pk,
                    "object_id": c.object_id,
                    "type": c.obj["type"],
                    "version_us": vus,
                    "version": version[:40],
                    "spec_version": spec_version_of(c.obj),
                    "date_added_us": t,
                    "tlp": c.tlp,
                    "body": orjson.dumps(c.obj),
                }
            )
            successes.append({"id": c.object_id, "version": version})
            t += 1
        if rows:
            conn.execute(insert(StoredObject), rows)
            conn.execute(update(Collection).where(Collection.pk == collection_pk).values(clock_us=t - 1))
        status: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "status": "complete",
            "request_timestamp": us_to_timestamp(request_us),
            "total_count": len(successes) + len(failures),
            "success_count": len(successes),
            "successes": successes,
            "failure_count": len(failures),
            "failures": failures,
            "pending_count": 0,
        }
        conn.execute(
            insert(StatusRecord).values(
                id=status["id"],
                api_root_pk=api_root_pk,
                key_pk=key_pk,
                created_us=request_us,
                body=orjson.dumps(status),
            )
        )
    if rows:
        _maybe_analyze(engine, len(rows))
    return status


# PostgreSQL plans pages from table statistics, and autovacuum refreshes them only a minute or more after a
# bulk load: meanwhile a freshly filled table looks empty, the planner sorts every remaining row instead of
# walking the date_added index, and each page costs a full scan. So ANALYZE after every 20% of growth.
_growth: weakref.WeakKeyDictionary[Engine, list[float]] = weakref.WeakKeyDictionary()
_growth_lock = threading.Lock()


def _maybe_analyze(engine: Engine, added: int) -> None:
    if engine.dialect.name != "postgresql":
        return  # SQLite walks the index for ORDER BY ... LIMIT without statistics
    with _growth_lock:
        state = _growth.get(engine)
        if state is None:
            with engine.connect() as conn:
                known = conn.execute(
                    text("SELECT reltuples FROM pg_class WHERE oid = 'taxii_objects'::regclass")
                ).scalar()
            state = _growth[engine] = [0.0, max(float(known or 0), 0.0)]
        state[0] += added
        if state[0] < max(1000.0, state[1] / 5):
            return
        state[1] += state[0]
        state[0] = 0.0
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE taxii_objects"))


def get_status(engine: Engine, root_pk: int, status_id: str, key_pk: int) -> bytes | None:
    """A status resource as JSON, only for the key that made the request."""
    with engine.connect() as conn:
        return conn.execute(
            select(StatusRecord.body).where(
                StatusRecord.id == status_id,
                StatusRecord.api_root_pk == root_pk,
                StatusRecord.key_pk == key_pk,
            )
        ).scalar()


# --- queries ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """The TAXII filters of one request (`match[...]`, `added_after`); `versions` defaults to last."""

    ids: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    versions: tuple[str, ...] = ("last",)
    spec_versions: tuple[str, ...] = ()
    added_after_us: int | None = None
    version_us: tuple[int, ...] = field(default=(), compare=False)

    def fingerprint(self) -> str:
        """A short hash of the filters, carried in `next` so a token cannot be reused with other filters."""
        raw = orjson.dumps([self.ids, self.types, self.versions, self.spec_versions, self.added_after_us])
        return hashlib.sha256(raw).hexdigest()[:12]


def encode_next(cursor_us: int, filters: Filters) -> str:
    raw = orjson.dumps([cursor_us, filters.fingerprint()])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_next(token: str, filters: Filters) -> int:
    """The cursor in a `next` token; ValueError if it is malformed or was made for other filters."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        cursor, fp = orjson.loads(raw)
        cursor = int(cursor)
    except Exception as exc:
        raise ValueError("malformed 'next'") from exc
    if fp != filters.fingerprint():
        raise ValueError("'next' was issued for other filter parameters")
    return cursor


@dataclass
class Page:
    rows: list[Any]
    more: bool

    @property
    def first_added(self) -> int | None:
        return self.rows[0].date_added_us if self.rows else None

    @property
    def last_added(self) -> int | None:
        return self.rows[-1].date_added_us if self.rows else None


def _range_conditions(collection_pk: int, f: Filters, after_us: int | None) -> list[ColumnElement[bool]]:
    """The filters that are plain column tests (cheap, and planned from the indexes)."""
    o = StoredObject.__table__
    conds: list[ColumnElement[bool]] = [o.c.collection_pk == collection_pk]
    lower = max(x for x in (after_us, f.added_after_us, -1) if x is not None)
    if lower >= 0:
        conds.append(o.c.date_added_us > lower)
    if f.ids:
        conds.append(o.c.object_id.in_(f.ids))
    if f.types:
        conds.append(o.c.type.in_(f.types))
    if f.spec_versions:
        conds.append(o.c.spec_version.in_(f.spec_versions))
    return conds


def _version_keep(f: Filters, row: Any) -> ColumnElement[bool] | None:
    """match[version] as a per-row flag over `row` (columns collection_pk, object_id, version_us); None
    for all versions. A scalar max/min per row is one probe of uq_taxii_objects_version."""
    if "all" in f.versions:
        return None
    o2 = StoredObject.__table__.alias("o2")
    same = and_(o2.c.collection_pk == row.collection_pk, o2.c.object_id == row.object_id)
    alts: list[ColumnElement[bool]] = []
    if "last" in f.versions:
        alts.append(row.version_us == select(func.max(o2.c.version_us)).where(same).scalar_subquery())
    if "first" in f.versions:
        alts.append(row.version_us == select(func.min(o2.c.version_us)).where(same).scalar_subquery())
    if f.version_us:
        alts.append(row.version_us.in_(f.version_us))
    return or_(*alts)


def query_page(
    engine: Engine,
    collection_pk: int,
    f: Filters,
    limit: int,
    after_us: int | None = None,
    *,
    with_body: bool = True,
) -> Page:
    """One page of matching object versions in date_added order (keyset paging: exact under inserts).

    The version filter is not a WHERE clause: a correlated filter hides its selectivity, and PostgreSQL
    then reads and sorts every remaining row of the collection for each page. Instead an inner query
    walks the date_added index for a window of rows (LIMIT keeps it from being flattened), the version
    test comes back as a flag, and windows repeat until the page is full.
    """
    o = StoredObject.__table__
    window = limit + 1
    cols = [
        o.c.date_added_us,
        o.c.object_id,
        o.c.version,
        o.c.spec_version,
        o.c.collection_pk,
        o.c.version_us,
    ]
    if with_body:
        cols.append(o.c.body)
    out: list[Any] = []
    cursor = after_us
    with engine.connect() as conn:
        while True:
            inner = (
                select(*cols)
                .where(*_range_conditions(collection_pk, f, cursor))
                .order_by(o.c.date_added_us)
                .limit(window)
                .subquery("p")
            )
            keep = _version_keep(f, inner.c)
            flag = keep.label("keep") if keep is not None else literal(True).label("keep")
            rows = conn.execute(select(inner, flag).order_by(inner.c.date_added_us)).all()
            out.extend(r for r in rows if r.keep)
            if len(out) > limit or len(rows) < window:
                break
            cursor = rows[-1].date_added_us
    return Page(out[:limit], len(out) > limit)


def object_exists(engine: Engine, collection_pk: int, object_id: str) -> bool:
    with engine.connect() as conn:
        return (
            conn.execute(
                select(StoredObject.pk).where(
                    StoredObject.collection_pk == collection_pk, StoredObject.object_id == object_id
                )
            ).first()
            is not None
        )


def delete_object(engine: Engine, collection_pk: int, object_id: str, f: Filters) -> int:
    """Delete the matching versions of one object; returns how many rows went."""
    o = StoredObject.__table__
    with engine.begin() as conn:
        keep = _version_keep(f, o.c)
        q = select(o.c.pk).where(*_range_conditions(collection_pk, f, None), o.c.object_id == object_id)
        pks = conn.execute(q if keep is None else q.where(keep)).scalars().all()
        if pks:
            conn.execute(delete(StoredObject).where(StoredObject.pk.in_(pks)))
    return len(pks)


# --- server-side forwarding -------------------------------------------------------------------------------


@dataclass
class ForwardResult:
    copied: int
    refused_red: list[str]


def forward_objects(
    engine: Engine, source_collection: str, target_collection: str, object_ids: Iterable[str] | None = None
) -> ForwardResult:
    """Copy the latest versions of objects from one collection into another (e.g. to a partner feed).

    TLP:RED objects are never copied: they are listed in `refused_red` and stay where they were posted.
    """
    with engine.connect() as conn:
        src = conn.execute(select(Collection.pk).where(Collection.id == source_collection)).scalar()
        dst = conn.execute(
            select(Collection.pk, Collection.api_root_pk).where(Collection.id == target_collection)
        ).first()
    if src is None or dst is None:
        raise TaxiiStoreError(f"no collection {source_collection if src is None else target_collection}")
    f = Filters(ids=tuple(object_ids or ()))
    copied, refused = 0, []
    after: int | None = None
    while True:
        page = query_page(engine, src, f, 1000, after)
        batch = []
        for r in page.rows:
            obj = orjson.loads(r.body)
            if tlp_of(obj) == "red":  # the containment rule, enforced where objects could leave
                refused.append(r.object_id)
            else:
                batch.append(obj)
        if batch:
            status = ingest(engine, dst.pk, batch, api_root_pk=dst.api_root_pk, key_pk=None)
            copied += status["success_count"]
        if not page.more:
            break
        after = page.last_added
    return ForwardResult(copied, refused)
