"""item neighbours: each version's top co-purchase partners per item (a Feast view keyed by version and item)

Revision ID: c3e5a7b9d1f2
Revises: b2d4f6a8c0e1
Create Date: 2026-11-30 15:00:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import freshrec.db.models

revision = "c3e5a7b9d1f2"
down_revision = "b2d4f6a8c0e1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "item_neighbours",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("partners", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("strengths", postgresql.ARRAY(sa.REAL()), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("written_xid", freshrec.db.models.XID8(), server_default=sa.text("pg_current_xact_id()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["version"], ["model_versions.version"],
                                name=op.f("fk_item_neighbours_version_model_versions")),
        sa.PrimaryKeyConstraint("version", "item_id", name=op.f("pk_item_neighbours")),
    )
    op.create_index("ix_item_neighbours_written_xid", "item_neighbours", ["written_xid"], unique=False)
    # The Feast role reads it (the grant of the earlier migration covers tables created since).


def downgrade() -> None:
    op.drop_index("ix_item_neighbours_written_xid", table_name="item_neighbours")
    op.drop_table("item_neighbours")
