from __future__ import annotations

from sqlalchemy import inspect

from distillguard.intel.db import open_db, url_of


def test_url_of_paths_and_urls() -> None:
    assert url_of("intel.db") == "sqlite:///intel.db"
    assert url_of("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert url_of("sqlite:///:memory:") == "sqlite:///:memory:"


def test_open_db_creates_and_reopens(db_url: str) -> None:
    engine = open_db(db_url)
    first = set(inspect(engine).get_table_names())
    engine.dispose()
    engine = open_db(db_url)  # idempotent: a second open upgrades nothing and loses nothing
    assert set(inspect(engine).get_table_names()) == first
    assert "alembic_version" in first
