"""Intel test fixtures: every store test runs on an SQLite file and on the real PostgreSQL server.

PostgreSQL tests get a schema of their own (search_path in the URL), dropped afterwards, so tests never
see each other's rows. Without a server they skip locally and fail when `CI` is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

PG_URL = os.environ.get("DISTILLGUARD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_or_skip() -> None:
    try:
        with create_engine(PG_URL).connect() as c:
            c.execute(text("select 1"))
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_URL} is needed in CI: {exc}")
        pytest.skip(f"no PostgreSQL at {PG_URL}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose tables live in a fresh schema (dropped after the test)."""
    _pg_or_skip()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as c:
        c.execute(text(f'create schema "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as c:
            c.execute(text(f'drop schema "{schema}" cascade'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Both backends: an SQLite file, and PostgreSQL in a schema of its own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'intel.db'}"
    return str(request.getfixturevalue("pg_url"))
