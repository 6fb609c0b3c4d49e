"""lineage views, and a role for Feast's offline reads

Revision ID: b7c1e2f3a4d5
Revises: d95733b35cde
Create Date: 2026-11-28 16:00:00
"""
from alembic import op

from freshrec.config import get_settings

revision = "b7c1e2f3a4d5"
down_revision = "d95733b35cde"
branch_labels = None
depends_on = None

VIEWS = {
    # The newest deployments row is the serving version; history stays in deployments.
    "current_version": """
        SELECT version, previous_version, action, actor, reason, created_at AS since
        FROM deployments ORDER BY id DESC LIMIT 1""",
    # Every version with each of its ancestors (itself at depth 0).
    "version_ancestry": """
        WITH RECURSIVE chain(version, ancestor, depth) AS (
            SELECT version, version, 0 FROM model_versions
            UNION ALL
            SELECT c.version, m.parent_version, c.depth + 1
            FROM chain c JOIN model_versions m ON m.version = c.ancestor
            WHERE m.parent_version IS NOT NULL
        )
        SELECT version, ancestor, depth FROM chain""",
    # The rows each version learned from: directly (depth 0) or through an ancestor.
    "version_consumed_rows": """
        SELECT a.version, a.ancestor AS consumed_by, a.depth,
               i.id AS interaction_id, i.user_id, i.item_id, i.event_type, i.event_time, i.ingest_xid
        FROM version_ancestry a
        JOIN watermarks w ON w.version = a.ancestor
        JOIN interactions i ON i.ingest_xid >= w.xid_from AND i.ingest_xid < w.xid_to""",
    # What each watermark recorded at consumption time against what its range holds now.
    "watermark_audit": """
        SELECT w.version, w.xid_from, w.xid_to,
               w.row_count AS recorded_rows, count(i.id) AS rows_in_range,
               w.id_sum AS recorded_id_sum, coalesce(sum(i.id), 0) AS id_sum_in_range,
               w.row_count = count(i.id) AND w.id_sum = coalesce(sum(i.id), 0) AS consistent
        FROM watermarks w
        LEFT JOIN interactions i ON i.ingest_xid >= w.xid_from AND i.ingest_xid < w.xid_to
        GROUP BY w.version, w.xid_from, w.xid_to, w.row_count, w.id_sum""",
}


def upgrade() -> None:
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body}")
    role = get_settings().feast.offline_user
    # Feast's point-in-time join falls off a planner cliff into nested loops (66k entity rows:
    # 290 s with defaults, 1.8 s without nested loops). The settings ride on a role of its own, so
    # our other queries keep the default planner. Creating a role and changing its settings need
    # CREATEROLE; an application role on a managed server has neither: there an administrator
    # creates the role with its settings (README, "A managed PostgreSQL"), and this only grants
    # it read access to the tables this role owns.
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                IF (SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                    CREATE ROLE "{role}" LOGIN;
                ELSE
                    RAISE NOTICE 'cannot create role {role}: an administrator must (see the README)';
                    RETURN;
                END IF;
            END IF;
            BEGIN
                ALTER ROLE "{role}" SET enable_nestloop = off;
                ALTER ROLE "{role}" SET statement_timeout = '15min';
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE NOTICE 'cannot change the settings of role {role}: an administrator must (see the README)';
            END;
            GRANT USAGE ON SCHEMA public TO "{role}";
            GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}";
            ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO "{role}";
        END $$
        """
    )


def downgrade() -> None:
    role = get_settings().feast.offline_user
    # The role is cluster-wide and may serve other databases: only this database's grants go.
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM "{role}";
                REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM "{role}";
                REVOKE USAGE ON SCHEMA public FROM "{role}";
            END IF;
        END $$
        """
    )
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
