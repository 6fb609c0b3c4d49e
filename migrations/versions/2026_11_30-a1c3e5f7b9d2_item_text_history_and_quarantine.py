"""item text history, quarantined rows, deferred update runs, and lineage that shows skipped rows

Revision ID: a1c3e5f7b9d2
Revises: e4a8c2d6f1b3
Create Date: 2026-11-30 09:00:00
"""
import sqlalchemy as sa
from alembic import op

import freshrec.db.models

revision = "a1c3e5f7b9d2"
down_revision = "e4a8c2d6f1b3"
branch_labels = None
depends_on = None

RUN_STATUSES_BEFORE = "('running', 'created', 'no-new-rows', 'locked', 'failed', 'abandoned')"
RUN_STATUSES = "('running', 'created', 'no-new-rows', 'locked', 'failed', 'abandoned', 'deferred')"

# version_consumed_rows, now with the reason a row was consumed but not trained on (quarantined).
CONSUMED_BEFORE = """
    SELECT a.version, a.ancestor AS consumed_by, a.depth,
           i.id AS interaction_id, i.user_id, i.item_id, i.event_type, i.event_time, i.ingest_xid
    FROM version_ancestry a
    JOIN watermarks w ON w.version = a.ancestor
    JOIN interactions i ON i.ingest_xid >= w.xid_from AND i.ingest_xid < w.xid_to"""
CONSUMED = """
    SELECT a.version, a.ancestor AS consumed_by, a.depth,
           i.id AS interaction_id, i.user_id, i.item_id, i.event_type, i.event_time, i.ingest_xid,
           q.reason AS skipped_reason
    FROM version_ancestry a
    JOIN watermarks w ON w.version = a.ancestor
    JOIN interactions i ON i.ingest_xid >= w.xid_from AND i.ingest_xid < w.xid_to
    LEFT JOIN quarantined_rows q ON q.version = a.ancestor AND q.interaction_id = i.id"""


def upgrade() -> None:
    op.create_table(
        "item_texts",
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("written_xid", freshrec.db.models.XID8(), server_default=sa.text("pg_current_xact_id()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.item_id"], name=op.f("fk_item_texts_item_id_items")),
        sa.PrimaryKeyConstraint("item_id", "valid_from", name=op.f("pk_item_texts")),
    )
    op.create_index("ix_item_texts_written_xid", "item_texts", ["written_xid"], unique=False)
    # Every item's text so far becomes its first version.
    op.execute("INSERT INTO item_texts (item_id, valid_from, title, category, description) "
               "SELECT item_id, valid_from, title, category, description FROM items")
    op.create_table(
        "quarantined_rows",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("interaction_id", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["version"], ["model_versions.version"],
                                name=op.f("fk_quarantined_rows_version_model_versions")),
        sa.PrimaryKeyConstraint("version", "interaction_id", name=op.f("pk_quarantined_rows")),
    )
    op.drop_constraint(op.f("ck_update_runs_status"), "update_runs", type_="check")
    op.create_check_constraint(op.f("ck_update_runs_status"), "update_runs", f"status IN {RUN_STATUSES}")
    op.execute(f"CREATE OR REPLACE VIEW version_consumed_rows AS {CONSUMED}")


def downgrade() -> None:
    op.execute("DROP VIEW version_consumed_rows")
    op.execute(f"CREATE VIEW version_consumed_rows AS {CONSUMED_BEFORE}")
    op.execute("UPDATE update_runs SET status = 'no-new-rows' WHERE status = 'deferred'")
    op.drop_constraint(op.f("ck_update_runs_status"), "update_runs", type_="check")
    op.create_check_constraint(op.f("ck_update_runs_status"), "update_runs", f"status IN {RUN_STATUSES_BEFORE}")
    op.drop_table("quarantined_rows")
    op.drop_index("ix_item_texts_written_xid", table_name="item_texts")
    op.drop_table("item_texts")
