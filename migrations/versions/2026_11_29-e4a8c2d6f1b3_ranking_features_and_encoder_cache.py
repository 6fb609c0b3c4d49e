"""ranking features (n_baskets, item_daily_stats), the encoder-state cache, cursors, update runs and a NOTIFY trigger

Revision ID: e4a8c2d6f1b3
Revises: b7c1e2f3a4d5
Create Date: 2026-11-29 09:00:00
"""
import sqlalchemy as sa
from alembic import op

import freshrec.db.models

revision = "e4a8c2d6f1b3"
down_revision = "b7c1e2f3a4d5"
branch_labels = None
depends_on = None

# What the profile refresh writes, for the rows that exist already.
_BACKFILL_BASKETS = """
UPDATE user_profiles p SET n_baskets = (
    SELECT count(DISTINCT i.event_time) FROM interactions i
    WHERE i.user_id = p.user_id AND i.event_time < p.valid_from)"""


def upgrade() -> None:
    op.add_column("user_profiles", sa.Column("n_baskets", sa.Integer(), server_default="0", nullable=False))
    op.execute(_BACKFILL_BASKETS)
    # The writing transaction of every Feast source row: `features materialize` cuts by it.
    for table in ("user_profiles", "items"):
        op.add_column(table, sa.Column("written_xid", freshrec.db.models.XID8(),
                                       server_default=sa.text("pg_current_xact_id()"), nullable=False))
        op.create_index(f"ix_{table}_written_xid", table, ["written_xid"], unique=False)
    op.create_table(
        "item_daily_stats",
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("events_7d", sa.Integer(), nullable=False),
        sa.Column("events_28d", sa.Integer(), nullable=False),
        sa.Column("buyers", sa.Integer(), nullable=False),
        sa.Column("repeat_buyers", sa.Integer(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("written_xid", freshrec.db.models.XID8(), server_default=sa.text("pg_current_xact_id()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.item_id"], name=op.f("fk_item_daily_stats_item_id_items")),
        sa.PrimaryKeyConstraint("item_id", "valid_from", name=op.f("pk_item_daily_stats")),
    )
    op.create_index("ix_item_daily_stats_valid_from", "item_daily_stats", ["valid_from"], unique=False)
    op.create_index("ix_item_daily_stats_written_xid", "item_daily_stats", ["written_xid"], unique=False)
    op.create_table(
        "update_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("rows", sa.BigInteger(), nullable=True),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("trigger", sa.Text(), server_default="cli", nullable=False),
        sa.Column("host", sa.Text(), server_default="", nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.CheckConstraint("status IN ('running', 'created', 'no-new-rows', 'locked', 'failed', 'abandoned')",
                           name=op.f("ck_update_runs_status")),
        sa.ForeignKeyConstraint(["version"], ["model_versions.version"], name=op.f("fk_update_runs_version_model_versions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_update_runs")),
    )
    # Wake a watching updater when rows arrive (one notification per statement, not per row).
    op.execute("""
        CREATE FUNCTION freshrec_notify_interactions() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_notify('freshrec_interactions', ''); RETURN NULL; END $$""")
    op.execute("""
        CREATE TRIGGER interactions_notify AFTER INSERT ON interactions
        FOR EACH STATEMENT EXECUTE FUNCTION freshrec_notify_interactions()""")
    op.create_table(
        "feature_cursors",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("xid_horizon", freshrec.db.models.XID8(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_feature_cursors")),
    )
    op.create_table(
        "encoder_states",
        sa.Column("encoder", sa.Text(), nullable=False),
        sa.Column("max_tokens", sa.SmallInteger(), nullable=False),
        sa.Column("text_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("encoder", "max_tokens", "text_sha256", name=op.f("pk_encoder_states")),
    )
    op.create_index("ix_encoder_states_last_used_at", "encoder_states", ["last_used_at"], unique=False)
    # The first catch-up fills the new aggregate from the rows already loaded.


def downgrade() -> None:
    op.drop_index("ix_encoder_states_last_used_at", table_name="encoder_states")
    op.drop_table("encoder_states")
    op.drop_table("feature_cursors")
    op.execute("DROP TRIGGER IF EXISTS interactions_notify ON interactions")
    op.execute("DROP FUNCTION IF EXISTS freshrec_notify_interactions()")
    op.drop_table("update_runs")
    op.drop_index("ix_item_daily_stats_written_xid", table_name="item_daily_stats")
    op.drop_index("ix_item_daily_stats_valid_from", table_name="item_daily_stats")
    op.drop_table("item_daily_stats")
    for table in ("items", "user_profiles"):
        op.drop_index(f"ix_{table}_written_xid", table_name=table)
        op.drop_column(table, "written_xid")
    op.drop_column("user_profiles", "n_baskets")
