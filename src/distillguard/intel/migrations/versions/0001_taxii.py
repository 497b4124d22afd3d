"""TAXII 2.1 server: api roots, collections, objects, API keys and their rights, status records.

Revision ID: taxii_0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "taxii_0001"
down_revision = None
branch_labels = ("taxii",)
depends_on = None

# SQLite only auto-numbers an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key
_BIG_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "taxii_api_roots",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("title", sa.String(256), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("max_content_length", sa.BigInteger(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("name", name="uq_taxii_api_roots_name"),
    )
    op.create_table(
        "taxii_collections",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column(
            "api_root_pk",
            sa.Integer(),
            sa.ForeignKey("taxii_api_roots.pk", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("title", sa.String(256), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("alias", sa.String(128), nullable=True),
        sa.Column("default_read", sa.Boolean(), nullable=False),
        sa.Column("default_write", sa.Boolean(), nullable=False),
        sa.Column("clock_us", sa.BigInteger(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("id", name="uq_taxii_collections_id"),
    )
    op.create_index("ix_taxii_collections_api_root_pk", "taxii_collections", ["api_root_pk"])
    op.create_table(
        "taxii_objects",
        sa.Column("pk", _BIG_PK, primary_key=True, autoincrement=True),
        sa.Column(
            "collection_pk",
            sa.Integer(),
            sa.ForeignKey("taxii_collections.pk", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("object_id", sa.String(300), nullable=False),
        sa.Column("type", sa.String(250), nullable=False),
        sa.Column("version_us", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.String(40), nullable=False),
        sa.Column("spec_version", sa.String(8), nullable=False),
        sa.Column("date_added_us", sa.BigInteger(), nullable=False),
        sa.Column("tlp", sa.String(16), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("collection_pk", "date_added_us", name="uq_taxii_objects_added"),
        sa.UniqueConstraint("collection_pk", "object_id", "version_us", name="uq_taxii_objects_version"),
    )
    op.create_index("ix_taxii_objects_object_id", "taxii_objects", ["object_id"])
    op.create_table(
        "taxii_api_keys",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("name", name="uq_taxii_api_keys_name"),
        sa.UniqueConstraint("key_hash", name="uq_taxii_api_keys_hash"),
    )
    op.create_table(
        "taxii_key_rights",
        sa.Column(
            "key_pk",
            sa.Integer(),
            sa.ForeignKey("taxii_api_keys.pk", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "collection_pk",
            sa.Integer(),
            sa.ForeignKey("taxii_collections.pk", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("can_read", sa.Boolean(), nullable=False),
        sa.Column("can_write", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "taxii_status",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "api_root_pk",
            sa.Integer(),
            sa.ForeignKey("taxii_api_roots.pk", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "key_pk",
            sa.Integer(),
            sa.ForeignKey("taxii_api_keys.pk", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("taxii_status")
    op.drop_table("taxii_key_rights")
    op.drop_table("taxii_api_keys")
    op.drop_index("ix_taxii_objects_object_id", table_name="taxii_objects")
    op.drop_table("taxii_objects")
    op.drop_index("ix_taxii_collections_api_root_pk", table_name="taxii_collections")
    op.drop_table("taxii_collections")
    op.drop_table("taxii_api_roots")
