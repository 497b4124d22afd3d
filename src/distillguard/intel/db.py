"""The intel database: one SQLAlchemy engine, schema managed by alembic migrations.

An SQLite file by default (`sqlite:///intel.db`), PostgreSQL by URL
(`postgresql+psycopg://user@host/db`). `open_db` creates or upgrades the schema to the newest revision
of every migration branch (the indicator store and the TAXII server each own a branch, so either can
change its tables without touching the other's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase

MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    """Declarative base of every intel table (store and TAXII server)."""


class DatabaseError(RuntimeError):
    pass


def url_of(target: str | Path) -> str:
    """A database URL from a URL or a file path (a bare path means an SQLite file)."""
    s = str(target)
    if "://" in s:
        if s.startswith("postgresql://"):  # the driver we ship is psycopg 3
            s = "postgresql+psycopg://" + s.removeprefix("postgresql://")
        return s
    return f"sqlite:///{Path(s).expanduser()}"


def make_engine(target: str | Path) -> Engine:
    url = url_of(target)
    if url.startswith("sqlite"):
        engine = create_engine(url)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL: readers (TAXII GETs) do not block the writer; foreign keys are off by default in SQLite
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            if ":memory:" not in url:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def upgrade(engine: Engine, target: str = "heads") -> None:
    """Bring the schema to `target`: the newest revision of every branch, or of one (`gateway@head`,
    `ui@head`: a component migrates its own tables and leaves the others alone). Idempotent."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, target)


def open_db(target: str | Path) -> Engine:
    engine = make_engine(target)
    try:
        upgrade(engine)
    except Exception as exc:
        raise DatabaseError(f"cannot open intel database {url_of(target)}: {exc}") from exc
    return engine
