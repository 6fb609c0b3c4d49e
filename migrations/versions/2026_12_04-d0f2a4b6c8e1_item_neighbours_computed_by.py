"""item_neighbours.computed_by: the version that ranked an item's list, which a child carries over

An item's co-purchase partners, P(partner | item), change only when a basket holding the item does:
a child version ranks again only the items of its cut's baskets (about half the catalog in a week)
and carries its parent's other lists over unchanged, in SQL. ``computed_by`` names the version that
ranked a list; the online store holds each list once, keyed by that version (Feast's
``item_neighbours`` source reads the rows a version ranked itself). Existing rows were each ranked
by their own version.

Revision ID: d0f2a4b6c8e1
Revises: c9e1f3a5b7d9
Create Date: 2026-12-04 00:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "d0f2a4b6c8e1"
down_revision = "c9e1f3a5b7d9"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("item_neighbours", sa.Column("computed_by", sa.Integer(), nullable=True))
    op.execute("UPDATE item_neighbours SET computed_by = version")
    op.alter_column("item_neighbours", "computed_by", nullable=False)


def downgrade() -> None:
    op.drop_column("item_neighbours", "computed_by")
