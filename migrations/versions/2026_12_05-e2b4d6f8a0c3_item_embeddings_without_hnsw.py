"""item_embeddings without an HNSW index: a version's vectors are read whole, by the API, not searched in SQL

Every publish built an HNSW graph over the whole catalog's vectors in the version's partition (the
partitioned parent index forced one per partition), and nothing queried it: the API loads a
version's vectors once and ranks them in process. The build's cost followed the catalog, not the
new rows. Dropping the parent index drops every partition's. Whoever wants SQL nearest-neighbour
search over one version builds an index on its partition (``CREATE INDEX ON item_embeddings_v<N> USING hnsw (embedding vector_cosine_ops)``),
as ``freshrec bench serve``'s retrieval comparison does. The downgrade builds the index on every
version's partition again, in one transaction: minutes on a large catalog, with publishes waiting.

Revision ID: e2b4d6f8a0c3
Revises: d0f2a4b6c8e1
Create Date: 2026-12-05 00:00:00
"""
from alembic import op

revision = "e2b4d6f8a0c3"
down_revision = "d0f2a4b6c8e1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_item_embeddings_hnsw")


def downgrade() -> None:
    op.execute("CREATE INDEX ix_item_embeddings_hnsw ON item_embeddings USING hnsw (embedding vector_cosine_ops)")
