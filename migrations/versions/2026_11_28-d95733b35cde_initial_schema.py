"""initial schema

Revision ID: d95733b35cde
Revises: 
Create Date: 2026-11-28 15:44:26.646417
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
import pgvector.sqlalchemy

import freshrec.db.models
from freshrec.config import get_settings

revision = 'd95733b35cde'
down_revision = None
branch_labels = None
depends_on = None


def _feast_schemas() -> tuple[str, str]:
    feast = get_settings().feast
    return feast.registry_schema, feast.online_schema


def upgrade() -> None:
    # pgvector is not a trusted extension: only a superuser (or a managed server's admin role) may
    # create it. An application role finds it created, or gets told exactly what to ask for.
    op.execute(
        """
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'vector') THEN
                CREATE EXTENSION vector;
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'pgvector is not enabled in database % and role % may not enable it: '
                            'have an administrator run CREATE EXTENSION vector there', current_database(), current_user;
        END $$
        """
    )
    # Feast's registry and online tables have generic names ("projects", "feature_views", ...):
    # they get schemas of their own so they never collide with ours.
    for schema in _feast_schemas():
        op.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    op.create_table('items',
    sa.Column('item_id', sa.Text(), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('category', sa.Text(), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('price', sa.Numeric(precision=12, scale=2), nullable=True),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('item_id', name=op.f('pk_items'))
    )
    op.create_table('model_versions',
    sa.Column('version', sa.Integer(), sa.Identity(always=False), nullable=False),
    sa.Column('parent_version', sa.Integer(), nullable=True),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('strategy', sa.Text(), nullable=False),
    sa.Column('base_model', sa.Text(), nullable=False),
    sa.Column('artifact_uri', sa.Text(), nullable=False),
    sa.Column('artifact_sha256', sa.String(length=64), nullable=False),
    sa.Column('params', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('metrics', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('feast_project', sa.Text(), nullable=False),
    sa.Column('feature_refs', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('code_version', sa.Text(), nullable=False),
    sa.Column('device', sa.Text(), nullable=False),
    sa.Column('timings', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('training', 'candidate', 'promoted', 'rejected')", name=op.f('ck_model_versions_status')),
    sa.CheckConstraint("strategy IN ('head', 'lora', 'full')", name=op.f('ck_model_versions_strategy')),
    sa.ForeignKeyConstraint(['parent_version'], ['model_versions.version'], name=op.f('fk_model_versions_parent_version_model_versions')),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_model_versions'))
    )
    op.create_table('users',
    sa.Column('user_id', sa.Text(), nullable=False),
    sa.Column('country', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_users'))
    )
    op.create_table('deployments',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('previous_version', sa.Integer(), nullable=True),
    sa.Column('action', sa.Text(), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("action IN ('promote', 'rollback')", name=op.f('ck_deployments_action')),
    sa.ForeignKeyConstraint(['previous_version'], ['model_versions.version'], name=op.f('fk_deployments_previous_version_model_versions')),
    sa.ForeignKeyConstraint(['version'], ['model_versions.version'], name=op.f('fk_deployments_version_model_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deployments'))
    )
    op.create_table('interactions',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('event_key', sa.Text(), nullable=False),
    sa.Column('user_id', sa.Text(), nullable=False),
    sa.Column('item_id', sa.Text(), nullable=False),
    sa.Column('event_type', sa.Text(), nullable=False),
    sa.Column('quantity', sa.Integer(), server_default='1', nullable=False),
    sa.Column('query', sa.Text(), nullable=True),
    sa.Column('event_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ingest_time', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('ingest_xid', freshrec.db.models.XID8(), server_default=sa.text('pg_current_xact_id()'), nullable=False),
    sa.CheckConstraint("event_type IN ('view', 'click', 'cart', 'purchase')", name=op.f('ck_interactions_event_type')),
    sa.CheckConstraint('quantity > 0', name=op.f('ck_interactions_quantity_positive')),
    sa.ForeignKeyConstraint(['item_id'], ['items.item_id'], name=op.f('fk_interactions_item_id_items')),
    sa.ForeignKeyConstraint(['user_id'], ['users.user_id'], name=op.f('fk_interactions_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_interactions')),
    sa.UniqueConstraint('event_key', name=op.f('uq_interactions_event_key'))
    )
    op.create_index('ix_interactions_event_time', 'interactions', ['event_time'], unique=False)
    op.create_index('ix_interactions_ingest_xid', 'interactions', ['ingest_xid'], unique=False)
    op.create_index('ix_interactions_user_time', 'interactions', ['user_id', 'event_time'], unique=False)
    op.create_table('item_embeddings',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Text(), nullable=False),
    sa.Column('embedding', pgvector.sqlalchemy.vector.VECTOR(dim=128), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.item_id'], name=op.f('fk_item_embeddings_item_id_items')),
    sa.ForeignKeyConstraint(['version'], ['model_versions.version'], name=op.f('fk_item_embeddings_version_model_versions')),
    sa.PrimaryKeyConstraint('version', 'item_id', name=op.f('pk_item_embeddings'))
    )
    op.create_table('user_profiles',
    sa.Column('user_id', sa.Text(), nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('profile_text', sa.Text(), nullable=False),
    sa.Column('n_events', sa.Integer(), nullable=False),
    sa.Column('ingested_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.user_id'], name=op.f('fk_user_profiles_user_id_users')),
    sa.PrimaryKeyConstraint('user_id', 'valid_from', name=op.f('pk_user_profiles'))
    )
    op.create_table('watermarks',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('xid_from', freshrec.db.models.XID8(), nullable=False),
    sa.Column('xid_to', freshrec.db.models.XID8(), nullable=False),
    sa.Column('row_count', sa.BigInteger(), nullable=False),
    sa.Column('id_sum', sa.Numeric(precision=38, scale=0), nullable=False),
    sa.Column('event_time_min', sa.DateTime(timezone=True), nullable=True),
    sa.Column('event_time_max', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('xid_from <= xid_to', name=op.f('ck_watermarks_ordered')),
    sa.ForeignKeyConstraint(['version'], ['model_versions.version'], name=op.f('fk_watermarks_version_model_versions')),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_watermarks'))
    )
    op.execute(
        "CREATE INDEX ix_item_embeddings_hnsw ON item_embeddings USING hnsw (embedding vector_cosine_ops)"
    )


def downgrade() -> None:
    op.drop_table('watermarks')
    op.drop_table('user_profiles')
    op.drop_table('item_embeddings')
    op.drop_index('ix_interactions_user_time', table_name='interactions')
    op.drop_index('ix_interactions_ingest_xid', table_name='interactions')
    op.drop_index('ix_interactions_event_time', table_name='interactions')
    op.drop_table('interactions')
    op.drop_table('deployments')
    op.drop_table('users')
    op.drop_table('model_versions')
    op.drop_table('items')
    for schema in _feast_schemas():
        op.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
