"""Analysts, review decisions and the audit log, in the intel database (alembic branch `ui`).

One decision per subject (account or campaign) is in force: the newest. Older ones stay in the table,
so a reversed call can be traced. Every login, reveal and decision is also written to `ui_audit`
(who, when, what, which subject); notes and prompt text are never copied into the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, cast

from sqlalchemy import BigInteger, DateTime, Engine, Float, Integer, String, Table, Text, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from distillguard.intel.db import Base, make_engine, upgrade, url_of
from distillguard.ui.auth import check_password, hash_password, new_password

Decision = Literal["confirm", "dismiss", "escalate"]
DECISIONS: tuple[Decision, ...] = ("confirm", "dismiss", "escalate")
_BIG_PK = BigInteger().with_variant(Integer(), "sqlite")


class DecisionError(RuntimeError):
    pass


def _time() -> DateTime:
    return DateTime(timezone=True)


class UserRow(Base):
    __tablename__ = "ui_users"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    salt: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(128))
    created: Mapped[datetime] = mapped_column(_time())


class DecisionRow(Base):
    __tablename__ = "ui_decisions"
    id: Mapped[int] = mapped_column(_BIG_PK, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Float(), nullable=True)
    note: Mapped[str | None] = mapped_column(Text(), nullable=True)
    user: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(_time())
    scan: Mapped[str] = mapped_column(Text())


class AuditRow(Base):
    __tablename__ = "ui_audit"
    id: Mapped[int] = mapped_column(_BIG_PK, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(_time())
    user: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(String(200), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text(), nullable=True)


_USERS = cast(Table, UserRow.__table__)
_DECISIONS = cast(Table, DecisionRow.__table__)
_AUDIT = cast(Table, AuditRow.__table__)


@dataclass(frozen=True)
class DecisionRecord:
    subject: str
    kind: str
    decision: str
    score: float | None
    note: str | None
    user: str
    at: datetime
    scan: str


def _utc(d: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d


def open_review_db(target: str | Path) -> Engine:
    """Engine on `target` with the `ui` branch migrated to its head (other branches untouched)."""
    engine = make_engine(target)
    try:
        upgrade(engine, "ui@head")
    except Exception as exc:
        raise DecisionError(f"cannot open review database {url_of(target)}: {exc}") from exc
    return engine


class ReviewStore:
    """Users, decisions and audit entries of the review console."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, target: str | Path) -> ReviewStore:
        return cls(open_review_db(target))

    def close(self) -> None:
        self.engine.dispose()

    def add_user(self, name: str) -> str:
        """Create (or reset) analyst `name`; returns the one-time password, stored only as a hash."""
        if not name or len(name) > 100 or not name.isprintable():
            raise DecisionError(f"user name {name!r}: 1-100 printable characters")
        password = new_password()
        salt, h = hash_password(password)
        with self.engine.begin() as c:
            c.execute(_USERS.delete().where(_USERS.c.name == name))
            c.execute(insert(_USERS).values(name=name, salt=salt, hash=h, created=datetime.now(UTC)))
        return password

    def check_login(self, name: str, password: str) -> bool:
        with self.engine.connect() as c:
            row = c.execute(select(_USERS.c.salt, _USERS.c.hash).where(_USERS.c.name == name)).first()
        if row is None:
            # hash anyway, so an unknown name takes as long as a wrong password
            hash_password(password)
            return False
        return check_password(password, row.salt, row.hash)

    def audit(self, user: str, action: str, subject: str | None = None, detail: str | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(
                insert(_AUDIT).values(
                    at=datetime.now(UTC), user=user, action=action, subject=subject, detail=detail
                )
            )

    def decide(
        self,
        user: str,
        subject: str,
        kind: str,
        decision: str,
        scan: str,
        score: float | None = None,
        note: str | None = None,
    ) -> None:
        """Record a decision and its audit entry in one transaction."""
        if decision not in DECISIONS:
            raise DecisionError(
                f"decision {decision!r} for {subject}: expected one of {', '.join(DECISIONS)}"
            )
        if kind not in ("account", "campaign"):
            raise DecisionError(f"subject kind {kind!r} for {subject}: expected account or campaign")
        at = datetime.now(UTC)
        try:
            with self.engine.begin() as c:
                c.execute(
                    insert(_DECISIONS).values(
                        subject=subject,
                        kind=kind,
                        decision=decision,
                        score=score,
                        note=(note or None),
                        user=user,
                        at=at,
                        scan=scan,
                    )
                )
                c.execute(
                    insert(_AUDIT).values(at=at, user=user, action=decision, subject=subject, detail=kind)
                )
        except SQLAlchemyError as exc:
            raise DecisionError(f"cannot record {decision} of {subject}: {exc}") from exc

    def decisions(self) -> dict[str, DecisionRecord]:
        """The decision in force for each subject (the newest)."""
        out: dict[str, DecisionRecord] = {}
        with self.engine.connect() as c:
            for r in c.execute(select(_DECISIONS).order_by(_DECISIONS.c.id)):
                out[r.subject] = DecisionRecord(
                    r.subject, r.kind, r.decision, r.score, r.note, r.user, _utc(r.at), r.scan
                )
        return out

    def audit_log(self, limit: int = 1000) -> list[dict[str, object]]:
        with self.engine.connect() as c:
            rows = c.execute(select(_AUDIT).order_by(_AUDIT.c.id.desc()).limit(limit)).mappings().all()
        return [dict(r) | {"at": _utc(r["at"])} for r in rows]
