"""alembic environment: run against the connection `db.upgrade` hands in, or a URL (`alembic -x url=...`)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from distillguard.intel.db import Base, url_of

target_metadata = Base.metadata
conn = context.config.attributes.get("connection")
if conn is None:  # run from the alembic command line
    url = context.get_x_argument(as_dictionary=True).get("url", "sqlite:///intel.db")
    with create_engine(url_of(url)).begin() as c:
        context.configure(connection=c, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
