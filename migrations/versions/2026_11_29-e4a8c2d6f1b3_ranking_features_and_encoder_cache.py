"""ranking features (user_profiles.n_baskets, item_daily_stats) and the encoder-state cache

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
    op.create_table(
        "item_daily_stats",
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("events_7d", sa.Integer(), nullable=False),
        sa.Column("events_28d", sa.Integer(), nullable=False),
        sa.Column("buyers", sa.Integer(), nullable=False),
        sa.Column("repeat_buyers", sa.Integer(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.item_id"], name=op.f("fk_item_daily_stats_item_id_items")),
        sa.PrimaryKeyConstraint("item_id", "valid_from", name=op.f("pk_item_daily_stats")),
    )
    op.create_index("ix_item_daily_stats_valid_from", "item_daily_stats", ["valid_from"], unique=False)
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
    op.drop_index("ix_item_daily_stats_valid_from", table_name="item_daily_stats")
    op.drop_table("item_daily_stats")
    op.drop_column("user_profiles", "n_baskets")
