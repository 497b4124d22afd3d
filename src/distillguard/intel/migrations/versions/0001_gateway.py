"""Gateway identity: organisations, accounts, API keys (hashed) and the change log replicas poll.

Revision ID: gateway_0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "gateway_0001"
down_revision = None
branch_labels = ("gateway",)
depends_on = None

# SQLite only auto-numbers an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key
_BIG_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "gateway_orgs",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("tier", sa.String(64), nullable=True),
        sa.Column("country", sa.String(2), nullable=True),
        sa.Column("created", _time(), nullable=False),
    )
    op.create_table(
        "gateway_accounts",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("org_id", sa.String(100), sa.ForeignKey("gateway_orgs.id"), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("tier", sa.String(64), nullable=True),
        sa.Column("created", _time(), nullable=False),
        sa.Column("disabled_at", _time(), nullable=True),
    )
    op.create_index("ix_gateway_accounts_org_id", "gateway_accounts", ["org_id"])
    op.create_table(
        "gateway_keys",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("account_id", sa.String(100), sa.ForeignKey("gateway_accounts.id"), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("created", _time(), nullable=False),
        sa.Column("expires_at", _time(), nullable=True),
        sa.Column("revoked_at", _time(), nullable=True),
        sa.Column("replaced_by", sa.String(100), nullable=True),
    )
    op.create_index("ux_gateway_keys_hash", "gateway_keys", ["hash"], unique=True)
    op.create_index("ix_gateway_keys_account_id", "gateway_keys", ["account_id"])
    op.create_table(
        "gateway_changes",
        sa.Column("revision", _BIG_PK, primary_key=True, autoincrement=True),
        sa.Column("at", _time(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(100), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gateway_changes")
    op.drop_index("ix_gateway_keys_account_id", table_name="gateway_keys")
    op.drop_index("ux_gateway_keys_hash", table_name="gateway_keys")
    op.drop_table("gateway_keys")
    op.drop_index("ix_gateway_accounts_org_id", table_name="gateway_accounts")
    op.drop_table("gateway_accounts")
    op.drop_table("gateway_orgs")
