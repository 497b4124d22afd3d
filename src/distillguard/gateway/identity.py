"""Organisations, accounts and API keys (alembic branch `gateway`), and the per-replica key cache.

Keys are `dg-` plus 256 random bits. Only their SHA-256 is stored; a presented key is hashed, looked up
by hash and the stored hash compared with `hmac.compare_digest`. The secret is shown once, at creation,
and never logged.

Revocation reaches every replica within 1 s by polling, not pub/sub: every admin change appends a row to
`gateway_changes`, and each replica reads `SELECT max(revision)` every `revocation_poll_s` (<= 0.5 s);
a new revision empties its cache. If polling fails for `stale_after_s` (<= 1 s) the cache is bypassed
and every request reads the database, so a replica cut off from change notices fails closed on time
instead of serving stale keys. Expiry (the end of a rotation's grace period) needs no notice: it is
checked against the clock on every request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import DateTime, Engine, ForeignKey, String, Table, Text, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from distillguard.gateway.background import cancel_task
from distillguard.gateway.errors import GatewayError, unauthorized
from distillguard.intel.db import Base, make_engine, upgrade, url_of

log = logging.getLogger("distillguard.gateway.identity")

KEY_PREFIX = "dg-"


class IdentityError(RuntimeError):
    """An admin operation that cannot be done (unknown id, duplicate, unknown tier)."""


# -- tables (created by migration gateway_0001) -------------------------------------------------------


def _time() -> DateTime:
    return DateTime(timezone=True)


class OrgRow(Base):
    __tablename__ = "gateway_orgs"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    tier: Mapped[str | None] = mapped_column(String(64))
    country: Mapped[str | None] = mapped_column(String(2))
    created: Mapped[datetime] = mapped_column(_time())


class AccountRow(Base):
    __tablename__ = "gateway_accounts"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    org_id: Mapped[str | None] = mapped_column(String(100), ForeignKey("gateway_orgs.id"))
    name: Mapped[str] = mapped_column(Text)
    tier: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(_time())
    disabled_at: Mapped[datetime | None] = mapped_column(_time())


class KeyRow(Base):
    __tablename__ = "gateway_keys"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(100), ForeignKey("gateway_accounts.id"))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(_time())
    expires_at: Mapped[datetime | None] = mapped_column(_time())
    revoked_at: Mapped[datetime | None] = mapped_column(_time())
    replaced_by: Mapped[str | None] = mapped_column(String(100))


class ChangeRow(Base):
    __tablename__ = "gateway_changes"
    revision: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(_time())
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(100))


# Core tables for the statements below (the ORM classes above only declare them).
_ORGS = cast(Table, OrgRow.__table__)
_ACCOUNTS = cast(Table, AccountRow.__table__)
_KEYS = cast(Table, KeyRow.__table__)
_CHANGES = cast(Table, ChangeRow.__table__)


def open_identity_db(target: str | Path) -> Engine:
    """Engine on `target` with the `gateway` branch migrated to its head (other branches untouched)."""
    engine = make_engine(target)
    try:
        upgrade(engine, "gateway@head")
    except Exception as exc:
        raise IdentityError(f"cannot open gateway database {url_of(target)}: {exc}") from exc
    return engine


# -- records --------------------------------------------------------------------------------------------


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def _utc(d: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if d is None:
        return None
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    """What a request needs to know about its key, flattened for the cache (no secret in here)."""

    key_id: str
    key_hash: str
    account_id: str
    org_id: str | None
    tier: str
    expires_at: float | None  # epoch seconds
    revoked: bool
    account_disabled: bool


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    account_id: str
    prefix: str
    name: str | None
    created: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    replaced_by: str | None


def _key_info(r: Any) -> KeyInfo:
    m = r._mapping
    return KeyInfo(
        m["id"],
        m["account_id"],
        m["prefix"],
        m["name"],
        _utc(m["created"]),  # type: ignore[arg-type]
        _utc(m["expires_at"]),
        _utc(m["revoked_at"]),
        m["replaced_by"],
    )


class IdentityStore:
    """Admin operations and key lookups on the gateway tables (synchronous; the cache calls it in a thread)."""

    def __init__(self, engine: Engine, tiers: set[str], default_tier: str) -> None:
        self.engine = engine
        self.tiers = tiers
        self.default_tier = default_tier

    def _check_tier(self, tier: str | None) -> None:
        if tier is not None and tier not in self.tiers:
            raise IdentityError(f"unknown tier {tier!r} (configured: {', '.join(sorted(self.tiers))})")

    @staticmethod
    def _change(conn: Any, kind: str, subject: str) -> None:
        conn.execute(insert(_CHANGES).values(at=datetime.now(UTC), kind=kind, subject=subject))

    def create_org(
        self, name: str, tier: str | None = None, org_id: str | None = None, country: str | None = None
    ) -> str:
        self._check_tier(tier)
        oid = org_id or _new_id("org")
        try:
            with self.engine.begin() as c:
                c.execute(
                    insert(_ORGS).values(
                        id=oid, name=name, tier=tier, country=country, created=datetime.now(UTC)
                    )
                )
                self._change(c, "org.create", oid)
        except SQLAlchemyError as e:
            raise IdentityError(f"cannot create organisation {oid!r}: {e.__class__.__name__}") from e
        return oid

    def create_account(
        self, name: str, org_id: str | None = None, tier: str | None = None, account_id: str | None = None
    ) -> str:
        self._check_tier(tier)
        aid = account_id or _new_id("acct")
        with self.engine.begin() as c:
            if (
                org_id is not None
                and c.execute(select(_ORGS.c.id).where(_ORGS.c.id == org_id)).first() is None
            ):
                raise IdentityError(f"unknown organisation {org_id!r}")
            try:
                c.execute(
                    insert(_ACCOUNTS).values(
                        id=aid, org_id=org_id, name=name, tier=tier, created=datetime.now(UTC)
                    )
                )
            except SQLAlchemyError as e:
                raise IdentityError(f"cannot create account {aid!r}: {e.__class__.__name__}") from e
            self._change(c, "account.create", aid)
        return aid

    def set_tier(self, kind: str, subject: str, tier: str | None) -> None:
        """Move an account or an organisation to another tier (takes effect on every replica in < 1 s)."""
        self._check_tier(tier)
        table = {"account": _ACCOUNTS, "org": _ORGS}[kind]
        with self.engine.begin() as c:
            if c.execute(update(table).where(table.c.id == subject).values(tier=tier)).rowcount == 0:
                raise IdentityError(f"unknown {kind} {subject!r}")
            self._change(c, f"{kind}.tier", subject)

    def disable_account(self, account_id: str) -> None:
        with self.engine.begin() as c:
            q = update(_ACCOUNTS).where(_ACCOUNTS.c.id == account_id).values(disabled_at=datetime.now(UTC))
            if c.execute(q).rowcount == 0:
                raise IdentityError(f"unknown account {account_id!r}")
            self._change(c, "account.disable", account_id)

    def create_key(
        self, account_id: str, name: str | None = None, expires_at: datetime | None = None
    ) -> tuple[KeyInfo, str]:
        """A new key for `account_id`: (its record, the secret; shown once, never stored)."""
        with self.engine.begin() as c:
            return self._create_key(c, account_id, name, expires_at)

    def _create_key(
        self, c: Any, account_id: str, name: str | None, expires_at: datetime | None
    ) -> tuple[KeyInfo, str]:
        conn = c  # a Connection inside the caller's transaction
        if conn.execute(select(_ACCOUNTS.c.id).where(_ACCOUNTS.c.id == account_id)).first() is None:
            raise IdentityError(f"unknown account {account_id!r}")
        secret = new_secret()
        kid = _new_id("key")
        now = datetime.now(UTC)
        prefix = secret[: len(KEY_PREFIX) + 4]
        conn.execute(
            insert(_KEYS).values(
                id=kid,
                account_id=account_id,
                hash=hash_key(secret),
                prefix=prefix,
                name=name,
                created=now,
                expires_at=expires_at,
            )
        )
        self._change(conn, "key.create", kid)
        return KeyInfo(kid, account_id, prefix, name, now, expires_at, None, None), secret

    def rotate_key(self, key_id: str, grace: timedelta) -> tuple[KeyInfo, str]:
        """A new key for the same account; the old one keeps working for `grace`, then expires."""
        with self.engine.begin() as c:
            old = c.execute(select(_KEYS).where(_KEYS.c.id == key_id)).first()
            if old is None:
                raise IdentityError(f"unknown key {key_id!r}")
            if old.revoked_at is not None:
                raise IdentityError(f"key {key_id!r} is revoked; create a new key instead")
            info, secret = self._create_key(c, old.account_id, old.name, None)
            until = datetime.now(UTC) + grace
            old_exp = _utc(old.expires_at)
            c.execute(
                update(_KEYS)
                .where(_KEYS.c.id == key_id)
                .values(expires_at=min(until, old_exp) if old_exp else until, replaced_by=info.id)
            )
            self._change(c, "key.rotate", key_id)
        return info, secret

    def revoke_key(self, key_id: str) -> None:
        with self.engine.begin() as c:
            q = update(_KEYS).where(_KEYS.c.id == key_id).values(revoked_at=datetime.now(UTC))
            if c.execute(q).rowcount == 0:
                raise IdentityError(f"unknown key {key_id!r}")
            self._change(c, "key.revoke", key_id)

    def list_orgs(self) -> list[dict[str, object]]:
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(select(_ORGS).order_by(_ORGS.c.id))]

    def list_accounts(self, org_id: str | None = None) -> list[dict[str, object]]:
        q = select(_ACCOUNTS).order_by(_ACCOUNTS.c.id)
        if org_id is not None:
            q = q.where(_ACCOUNTS.c.org_id == org_id)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def list_keys(self, account_id: str | None = None) -> list[KeyInfo]:
        q = select(
            _KEYS.c.id,
            _KEYS.c.account_id,
            _KEYS.c.prefix,
            _KEYS.c.name,
            _KEYS.c.created,
            _KEYS.c.expires_at,
            _KEYS.c.revoked_at,
            _KEYS.c.replaced_by,
        ).order_by(_KEYS.c.created)
        if account_id is not None:
            q = q.where(_KEYS.c.account_id == account_id)
        with self.engine.connect() as c:
            return [_key_info(r) for r in c.execute(q)]

    def lookup(self, key_hash: str) -> ResolvedKey | None:
        """The key with this hash, its account, organisation and effective tier (None: no such key)."""
        q = (
            select(
                _KEYS.c.id,
                _KEYS.c.hash,
                _KEYS.c.expires_at,
                _KEYS.c.revoked_at,
                _ACCOUNTS.c.id.label("account_id"),
                _ACCOUNTS.c.org_id,
                _ACCOUNTS.c.tier.label("account_tier"),
                _ACCOUNTS.c.disabled_at,
                _ORGS.c.tier.label("org_tier"),
            )
            .join(_ACCOUNTS, _ACCOUNTS.c.id == _KEYS.c.account_id)
            .outerjoin(_ORGS, _ORGS.c.id == _ACCOUNTS.c.org_id)
            .where(_KEYS.c.hash == key_hash)
        )
        with self.engine.connect() as c:
            r = c.execute(q).first()
        if r is None:
            return None
        exp = _utc(r.expires_at)
        # The account's own tier wins, then its organisation's (KYC is often done per organisation).
        tier = r.account_tier or r.org_tier or self.default_tier
        return ResolvedKey(
            key_id=r.id,
            key_hash=r.hash,
            account_id=r.account_id,
            org_id=r.org_id,
            tier=tier,
            expires_at=exp.timestamp() if exp else None,
            revoked=r.revoked_at is not None,
            account_disabled=r.disabled_at is not None,
        )

    def revision(self) -> int:
        with self.engine.connect() as c:
            return int(c.execute(select(func.max(_CHANGES.c.revision))).scalar() or 0)


# -- the per-replica cache ----------------------------------------------------------------------------


class KeyCache:
    """Resolves presented keys from memory, emptied whenever the change revision moves."""

    _MAX = 100_000  # entries (negative ones included) before the cache is emptied wholesale

    def __init__(self, store: IdentityStore, poll_s: float = 0.25, stale_after_s: float = 1.0) -> None:
        self.store = store
        self.poll_s = poll_s
        self.stale_after_s = stale_after_s
        self._cache: dict[str, ResolvedKey | None] = {}
        self._revision = -1
        self._generation = 0  # bumped on every clear: a lookup that straddles a clear is not cached
        self._last_ok = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._poll_once()
        self._task = asyncio.create_task(self._poll_forever(), name="dg-key-revision-poll")

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None

    def clear(self) -> None:
        self._cache.clear()
        self._generation += 1

    async def _poll_once(self) -> None:
        rev = await asyncio.to_thread(self.store.revision)
        if rev != self._revision:
            self.clear()
            self._revision = rev
        self._last_ok = time.monotonic()

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self._poll_once()
            except Exception as e:  # keep polling; the cache is bypassed once stale (fails closed in time)
                log.warning("key revision poll failed", extra={"error": e.__class__.__name__})

    async def resolve(self, authorization: str | None) -> ResolvedKey:
        """The key behind an `Authorization: Bearer dg-...` header, or a 401 GatewayError."""
        if not authorization:
            raise unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer dg-...'.", "missing_api_key"
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(KEY_PREFIX):
            raise unauthorized("Incorrect API key provided: expected 'Authorization: Bearer dg-...'.")
        h = hash_key(token)
        fresh = time.monotonic() - self._last_ok < self.stale_after_s
        if fresh and h in self._cache:
            rec = self._cache[h]
        else:
            gen = self._generation
            try:
                rec = await asyncio.to_thread(self.store.lookup, h)
            except SQLAlchemyError as e:
                raise GatewayError(
                    503,
                    "The key store is unavailable; try again shortly.",
                    "service_unavailable",
                    "identity_unavailable",
                ) from e
            if fresh and gen == self._generation:
                if len(self._cache) >= self._MAX:
                    self.clear()
                else:
                    self._cache[h] = rec
        # Looked up by hash; compared again in constant time so no code path compares secrets byte-wise.
        if rec is None or not hmac.compare_digest(rec.key_hash, h):
            raise unauthorized("Incorrect API key provided.")
        who = {"account_id": rec.account_id, "org_id": rec.org_id, "api_key_id": rec.key_id}
        if rec.revoked:
            refusal = unauthorized("This API key has been revoked.", "api_key_revoked")
            refusal.record.update(who)
            raise refusal
        if rec.expires_at is not None and time.time() >= rec.expires_at:
            refusal = unauthorized(
                "This API key has expired (rotated or past its end date).", "api_key_expired"
            )
            refusal.record.update(who)
            raise refusal
        if rec.account_disabled:
            raise GatewayError(
                403, "This account is disabled.", "permission_denied", "account_disabled", record=who
            )
        return rec
