"""co-purchase counts keep each unordered pair once (item_a <= item_b), and a view that reads both ways

Revision ID: b8d0f2a4c6e9
Revises: a7c9e1f3b5d7
Create Date: 2026-12-02 00:00:00

"Items a and b shared a basket" is symmetric: storing both orders doubled the rows (about 20 per
purchase row on the bundled shop) and the publish transaction's insert. Existing counts keep their
lower-ordered half, which holds the same numbers; ``copurchase_pairs`` reads each pair from both
items' side, as audits ask ("the partners of item X"). ``copurchase_cuts.pair_rows`` is recounted
from the rows each version holds now (after any erasures), in both directions.
"""
from alembic import op

revision = "b8d0f2a4c6e9"
down_revision = "a7c9e1f3b5d7"
branch_labels = None
depends_on = None

PAIRS_VIEW = """
CREATE VIEW copurchase_pairs AS
SELECT version, item_a AS item_id, item_b AS partner, baskets FROM copurchase_counts
UNION ALL
SELECT version, item_b, item_a, baskets FROM copurchase_counts WHERE item_a <> item_b"""


def upgrade() -> None:
    op.execute("DELETE FROM copurchase_counts WHERE item_a > item_b")
    op.execute("UPDATE copurchase_cuts c SET pair_rows = (SELECT count(*) FROM copurchase_counts k WHERE k.version = c.version)")
    op.create_check_constraint(op.f("ck_copurchase_counts_unordered"), "copurchase_counts", "item_a <= item_b")
    op.execute(PAIRS_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW copurchase_pairs")
    op.drop_constraint(op.f("ck_copurchase_counts_unordered"), "copurchase_counts", type_="check")
    op.execute("INSERT INTO copurchase_counts (version, item_a, item_b, baskets) "
               "SELECT version, item_b, item_a, baskets FROM copurchase_counts WHERE item_a < item_b")
    op.execute("UPDATE copurchase_cuts c SET pair_rows = (SELECT count(*) FROM copurchase_counts k WHERE k.version = c.version)")
