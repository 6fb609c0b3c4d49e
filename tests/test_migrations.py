"""Migrations are code: upgrade to head, down to base, up again, and no drift from the ORM."""
import sqlalchemy as sa
from alembic import command

from freshrec.db import downgrade, get_engine, upgrade
from freshrec.db.migrate import alembic_config

TABLES = {"users", "items", "interactions", "user_profiles", "model_versions", "watermarks", "item_embeddings", "deployments"}
VIEWS = {"current_version", "version_ancestry", "version_consumed_rows", "watermark_audit", "copurchase_pairs"}


def _relations(url):
    with get_engine().connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        views = set(sa.inspect(conn).get_view_names())
        schemas = set(sa.inspect(conn).get_schema_names())
    return tables, views, schemas


def test_upgrade_downgrade_upgrade(make_database):
    url = make_database("mig")
    tables, views, schemas = _relations(url)
    assert TABLES <= tables and VIEWS <= views
    assert {"feast_registry", "feast_online"} <= schemas  # Feast's tables get schemas of their own

    downgrade(url, "base")
    tables, views, schemas = _relations(url)
    assert not (TABLES | VIEWS) & (tables | views)
    assert "feast_registry" not in schemas

    upgrade(url)
    tables, views, _ = _relations(url)
    assert TABLES <= tables and VIEWS <= views


def test_models_match_migrations(make_database):
    url = make_database("drift")
    command.check(alembic_config(url))  # raises if autogenerate would add anything


def test_interactions_record_their_transaction(conn):
    conn.execute(sa.text("INSERT INTO users (user_id) VALUES ('u1')"))
    conn.execute(sa.text("INSERT INTO items (item_id, title, valid_from) VALUES ('i1', 'mug', now())"))
    conn.execute(
        sa.text(
            "INSERT INTO interactions (event_key, user_id, item_id, event_type, event_time) "
            "VALUES ('k1', 'u1', 'i1', 'purchase', now())"
        )
    )
    row = conn.execute(sa.text("SELECT ingest_xid = pg_current_xact_id() FROM interactions WHERE event_key='k1'"))
    assert row.scalar() is True
