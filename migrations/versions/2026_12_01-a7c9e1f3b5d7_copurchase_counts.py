"""co-purchase pair counts as SQL state: what each version's cut added, and which versions are counted

Revision ID: a7c9e1f3b5d7
Revises: f6b8d0e2a4c5
Create Date: 2026-12-01 00:00:00

Versions published before this revision are counted from their watermarks when a descendant first
needs them (``freshrec.ranking.pair_counts.count_lineage``): the upgrade needs no backfill here.
"""
import sqlalchemy as sa
from alembic import op

revision = "a7c9e1f3b5d7"
down_revision = "f6b8d0e2a4c5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "copurchase_counts",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("item_a", sa.Text(), nullable=False),
        sa.Column("item_b", sa.Text(), nullable=False),
        sa.Column("baskets", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["version"], ["model_versions.version"],
                                name=op.f("fk_copurchase_counts_version_model_versions")),
        sa.PrimaryKeyConstraint("version", "item_a", "item_b", name=op.f("pk_copurchase_counts")),
    )
    op.create_table(
        "copurchase_cuts",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("pair_rows", sa.BigInteger(), nullable=False),
        sa.Column("counted_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["version"], ["model_versions.version"],
                                name=op.f("fk_copurchase_cuts_version_model_versions")),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_copurchase_cuts")),
    )


def downgrade() -> None:
    op.drop_table("copurchase_cuts")
    op.drop_table("copurchase_counts")
