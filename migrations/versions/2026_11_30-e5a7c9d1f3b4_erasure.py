"""erasure: requests and their log, tombstones, erased versions and what replaced them, the proof view

Revision ID: e5a7c9d1f3b4
Revises: d4f6b8c0e2a3
Create Date: 2026-11-30 18:00:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import freshrec.db.models

revision = "e5a7c9d1f3b4"
down_revision = "d4f6b8c0e2a3"
branch_labels = None
depends_on = None

STATUSES_BEFORE = "('training', 'candidate', 'promoted', 'rejected')"
STATUSES = "('training', 'candidate', 'promoted', 'rejected', 'erased')"
ACTIONS_BEFORE = "('promote', 'rollback')"
ACTIONS = "('promote', 'rollback', 'erase')"

# The proof: an erased row's transaction inside a live version's lineage, in a watermark that was not
# replayed without that erasure. Joined on the transaction id (not on the versions the log named at
# request time), so it also catches a version published later from a cut that still held the rows.
# After an erasure is done this returns no row.
PROOF = """
SELECT a.version, e.erasure_id, w.version AS consumed_by, e.xid
FROM erasure_log e
JOIN watermarks w ON e.xid >= w.xid_from AND e.xid < w.xid_to AND NOT (e.erasure_id = ANY (w.excludes_erasures))
JOIN version_ancestry a ON a.ancestor = w.version
JOIN model_versions v ON v.version = a.version
WHERE v.status <> 'erased'"""


def _checks(statuses: str, actions: str) -> None:
    op.drop_constraint(op.f("ck_model_versions_status"), "model_versions", type_="check")
    op.create_check_constraint(op.f("ck_model_versions_status"), "model_versions", f"status IN {statuses}")
    op.drop_constraint(op.f("ck_deployments_action"), "deployments", type_="check")
    op.create_check_constraint(op.f("ck_deployments_action"), "deployments", f"action IN {actions}")


def upgrade() -> None:
    _checks(STATUSES, ACTIONS)
    op.add_column("model_versions", sa.Column("replaced_by", sa.Integer(), nullable=True))
    op.create_foreign_key(op.f("fk_model_versions_replaced_by_model_versions"), "model_versions", "model_versions",
                          ["replaced_by"], ["version"])
    op.add_column("watermarks", sa.Column("excludes_erasures", postgresql.ARRAY(sa.BigInteger()),
                                          server_default=sa.text("'{}'::bigint[]"), nullable=False))
    op.create_table(
        "erasures",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("users", sa.Integer(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("now", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("clean_version", sa.Integer(), nullable=True),
        sa.Column("serving_version", sa.Integer(), nullable=True),
        sa.Column("tainted_head", sa.Integer(), nullable=True),
        sa.Column("replay", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("requested_by", sa.Text(), server_default="cli", nullable=False),
        sa.CheckConstraint("state IN ('pending', 'replaying', 'done', 'failed')", name=op.f("ck_erasures_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasures")),
    )
    op.create_table(
        "erasure_log",
        sa.Column("erasure_id", sa.BigInteger(), nullable=False),
        sa.Column("xid", freshrec.db.models.XID8(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("versions", postgresql.ARRAY(sa.Integer()), server_default=sa.text("'{}'::integer[]"),
                  nullable=False),
        sa.ForeignKeyConstraint(["erasure_id"], ["erasures.id"], name=op.f("fk_erasure_log_erasure_id_erasures")),
        sa.PrimaryKeyConstraint("erasure_id", "xid", name=op.f("pk_erasure_log")),
    )
    op.create_table(
        "tombstones",
        sa.Column("key_hash", sa.LargeBinary(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("erasure_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind IN ('user', 'event')", name=op.f("ck_tombstones_kind")),
        sa.ForeignKeyConstraint(["erasure_id"], ["erasures.id"], name=op.f("fk_tombstones_erasure_id_erasures")),
        sa.PrimaryKeyConstraint("kind", "key_hash", name=op.f("pk_tombstones")),
    )
    op.execute(f"CREATE VIEW erasure_proof AS {PROOF}")


def downgrade() -> None:
    op.execute("DROP VIEW erasure_proof")
    op.drop_table("tombstones")
    op.drop_table("erasure_log")
    op.drop_table("erasures")
    op.drop_column("watermarks", "excludes_erasures")
    op.drop_constraint(op.f("fk_model_versions_replaced_by_model_versions"), "model_versions", type_="foreignkey")
    op.drop_column("model_versions", "replaced_by")
    op.execute("UPDATE model_versions SET status = 'rejected' WHERE status = 'erased'")
    op.execute("DELETE FROM deployments WHERE action = 'erase'")
    _checks(STATUSES_BEFORE, ACTIONS_BEFORE)
