"""Indicator store: indicators, their provenance, sightings, campaigns, organisations.

Revision ID: store_0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "store_0001"
down_revision = None
branch_labels = ("store",)
depends_on = None

# SQLite only auto-numbers an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key
_BIG_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "intel_indicators",
        sa.Column("id", sa.String(300), primary_key=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("value_hash", sa.String(64), nullable=False),
        sa.Column("key_epoch", sa.Integer(), nullable=True),
        sa.Column("confidence", sa.SmallInteger(), nullable=False),
        sa.Column("first_seen", _time(), nullable=False),
        sa.Column("last_seen", _time(), nullable=False),
        sa.Column("valid_until", _time(), nullable=True),
        sa.Column("tlp", sa.String(16), nullable=False),
        sa.Column("source_org", sa.String(300), nullable=False),
        sa.Column("campaign_id", sa.String(300), nullable=True),
        sa.Column("techniques", sa.JSON(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("min_corroboration", sa.Integer(), nullable=False),
        sa.Column("created", _time(), nullable=False),
        sa.Column("modified", _time(), nullable=False),
        sa.CheckConstraint("confidence >= 0 AND confidence <= 100", name="ck_intel_indicators_confidence"),
        sa.CheckConstraint("min_corroboration >= 1", name="ck_intel_indicators_min_corroboration"),
    )
    op.create_index("ix_intel_indicators_type_value", "intel_indicators", ["type", "value_hash"])
    op.create_index("ix_intel_indicators_source_org", "intel_indicators", ["source_org"])
    op.create_index("ix_intel_indicators_campaign_id", "intel_indicators", ["campaign_id"])
    op.create_table(
        "intel_provenance",
        sa.Column("pk", _BIG_PK, primary_key=True, autoincrement=True),
        sa.Column(
            "indicator_id",
            sa.String(300),
            sa.ForeignKey("intel_indicators.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("org", sa.String(300), nullable=False),
        sa.Column("received", _time(), nullable=False),
        sa.Column("via", sa.Text(), nullable=False),
    )
    op.create_index("ix_intel_provenance_indicator_id", "intel_provenance", ["indicator_id"])
    op.create_index("ix_intel_provenance_org", "intel_provenance", ["org"])
    op.create_table(
        "intel_sightings",
        sa.Column("id", sa.String(300), primary_key=True),
        sa.Column("indicator_id", sa.String(300), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("first_seen", _time(), nullable=False),
        sa.Column("last_seen", _time(), nullable=False),
        sa.Column("reporter", sa.String(300), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint("count >= 1", name="ck_intel_sightings_count"),
    )
    op.create_index("ix_intel_sightings_indicator_id", "intel_sightings", ["indicator_id"])
    op.create_table(
        "intel_campaigns",
        sa.Column("id", sa.String(300), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("source_org", sa.String(300), nullable=False),
        sa.Column("first_seen", _time(), nullable=False),
        sa.Column("last_seen", _time(), nullable=False),
        sa.Column("techniques", sa.JSON(), nullable=False),
        sa.Column("tlp", sa.String(16), nullable=False),
        sa.Column("created", _time(), nullable=False),
        sa.Column("modified", _time(), nullable=False),
    )
    op.create_table(
        "intel_organisations",
        sa.Column("id", sa.String(300), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("sector", sa.Text(), nullable=True),
        sa.Column("created", _time(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("intel_organisations")
    op.drop_table("intel_campaigns")
    op.drop_index("ix_intel_sightings_indicator_id", table_name="intel_sightings")
    op.drop_table("intel_sightings")
    op.drop_index("ix_intel_provenance_org", table_name="intel_provenance")
    op.drop_index("ix_intel_provenance_indicator_id", table_name="intel_provenance")
    op.drop_table("intel_provenance")
    op.drop_index("ix_intel_indicators_campaign_id", table_name="intel_indicators")
    op.drop_index("ix_intel_indicators_source_org", table_name="intel_indicators")
    op.drop_index("ix_intel_indicators_type_value", table_name="intel_indicators")
    op.drop_table("intel_indicators")
