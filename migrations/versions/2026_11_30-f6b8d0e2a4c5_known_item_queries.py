"""the known-item queries search is judged on: fixed once written, never trained on

Revision ID: f6b8d0e2a4c5
Revises: e5a7c9d1f3b4
Create Date: 2026-11-30 19:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "f6b8d0e2a4c5"
down_revision = "e5a7c9d1f3b4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "known_item_queries",
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("variant", sa.Text(), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("item_id", "variant", name=op.f("pk_known_item_queries")),
    )


def downgrade() -> None:
    op.drop_table("known_item_queries")
