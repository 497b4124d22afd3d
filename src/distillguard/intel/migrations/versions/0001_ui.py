"""Review console: analysts, their decisions on flagged accounts and campaigns, and the audit log.

Revision ID: ui_0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "ui_0001"
down_revision = None
branch_labels = ("ui",)
depends_on = None

# SQLite only auto-numbers an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key
_BIG_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ui_users",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(128), nullable=False),
        sa.Column("created", _time(), nullable=False),
    )
    op.create_table(
        "ui_decisions",
        sa.Column("id", _BIG_PK, primary_key=True, autoincrement=True),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("user", sa.String(100), nullable=False),
        sa.Column("at", _time(), nullable=False),
        sa.Column("scan", sa.Text(), nullable=False),
    )
    op.create_index("ix_ui_decisions_subject", "ui_decisions", ["subject"])
    op.create_table(
        "ui_audit",
        sa.Column("id", _BIG_PK, primary_key=True, autoincrement=True),
        sa.Column("at", _time(), nullable=False),
        sa.Column("user", sa.String(100), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(200), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("ui_audit")
    op.drop_index("ix_ui_decisions_subject", "ui_decisions")
    op.drop_table("ui_decisions")
    op.drop_table("ui_users")
