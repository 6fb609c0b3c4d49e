"""search: a full-text document per item (GIN), the base encoder's item vectors, query events in lineage

Revision ID: b2d4f6a8c0e1
Revises: a1c3e5f7b9d2
Create Date: 2026-11-30 12:00:00
"""
import pgvector.sqlalchemy
import sqlalchemy as sa
from alembic import op

import freshrec.db.models

revision = "b2d4f6a8c0e1"
down_revision = "a1c3e5f7b9d2"
branch_labels = None
depends_on = None

# Generated from the item's text in the same row: an item is searchable the moment it commits.
SEARCH_DOC = ("to_tsvector('english', coalesce(title, '') || ' ' || coalesce(category, '') || ' ' || "
              "coalesce(description, ''))")

CONSUMED_BEFORE = """
    SELECT a.version, a.ancestor AS consumed_by, a.depth,
           i.id AS interaction_id, i.user_id, i.item_id, i.event_type, i.event_time, i.ingest_xid,
           q.reason AS skipped_reason
    FROM version_ancestry a
    JOIN watermarks w ON w.version = a.ancestor
    JOIN interactions i ON i.ingest_xid >= w.xid_from AND i.ingest_xid < w.xid_to
    LEFT JOIN quarantined_rows q ON q.version = a.ancestor AND q.interaction_id = i.id"""
# ... and the search that led to each row: which query events trained which version.
CONSUMED = CONSUMED_BEFORE.replace("q.reason AS skipped_reason", "q.reason AS skipped_reason, i.query")


def upgrade() -> None:
    op.execute(f"ALTER TABLE items ADD COLUMN search_doc tsvector GENERATED ALWAYS AS ({SEARCH_DOC}) STORED")
    op.execute("CREATE INDEX ix_items_search_doc ON items USING gin (search_doc)")
    op.create_table(
        "item_search_vectors",
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("encoder", sa.Text(), nullable=False),
        sa.Column("text_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("embedding", pgvector.sqlalchemy.vector.VECTOR(), nullable=False),
        sa.Column("written_xid", freshrec.db.models.XID8(), server_default=sa.text("pg_current_xact_id()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.item_id"], name=op.f("fk_item_search_vectors_item_id_items")),
        sa.PrimaryKeyConstraint("encoder", "item_id", name=op.f("pk_item_search_vectors")),
    )
    op.create_index("ix_item_search_vectors_written_xid", "item_search_vectors", ["written_xid"], unique=False)
    op.execute(f"CREATE OR REPLACE VIEW version_consumed_rows AS {CONSUMED}")


def downgrade() -> None:
    op.execute("DROP VIEW version_consumed_rows")
    op.execute(f"CREATE VIEW version_consumed_rows AS {CONSUMED_BEFORE}")
    op.drop_index("ix_item_search_vectors_written_xid", table_name="item_search_vectors")
    op.drop_table("item_search_vectors")
    op.execute("DROP INDEX ix_items_search_doc")
    op.execute("ALTER TABLE items DROP COLUMN search_doc")
