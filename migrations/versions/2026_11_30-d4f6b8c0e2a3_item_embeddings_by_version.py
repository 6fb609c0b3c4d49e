"""item_embeddings partitioned by version: one HNSW index per version

One HNSW index over every version's vectors grew by the whole catalog at each publish, and a search
filtered by version lost recall in it (HNSW filters after it walks the graph). A partition per
version has its own index: a search in one version walks that version's graph only, and dropping a
version's vectors is dropping its partition.

Revision ID: d4f6b8c0e2a3
Revises: c3e5a7b9d1f2
Create Date: 2026-11-30 16:00:00
"""
from alembic import op

revision = "d4f6b8c0e2a3"
down_revision = "c3e5a7b9d1f2"
branch_labels = None
depends_on = None

_RENAME_OLD = """
ALTER TABLE item_embeddings RENAME CONSTRAINT pk_item_embeddings TO pk_item_embeddings_old;
ALTER TABLE item_embeddings RENAME CONSTRAINT fk_item_embeddings_item_id_items TO fk_item_embeddings_old_item;
ALTER TABLE item_embeddings RENAME CONSTRAINT fk_item_embeddings_version_model_versions TO fk_item_embeddings_old_version;
ALTER INDEX ix_item_embeddings_hnsw RENAME TO ix_item_embeddings_old_hnsw;
ALTER TABLE item_embeddings RENAME TO item_embeddings_old"""
_CREATE = """
CREATE TABLE item_embeddings (
    version integer NOT NULL,
    item_id text NOT NULL,
    embedding vector(128) NOT NULL,
    CONSTRAINT pk_item_embeddings PRIMARY KEY (version, item_id),
    CONSTRAINT fk_item_embeddings_item_id_items FOREIGN KEY (item_id) REFERENCES items (item_id),
    CONSTRAINT fk_item_embeddings_version_model_versions FOREIGN KEY (version) REFERENCES model_versions (version)
) {partitioned};
CREATE INDEX ix_item_embeddings_hnsw ON item_embeddings USING hnsw (embedding vector_cosine_ops)"""
_PARTITIONS = """
DO $$
DECLARE v integer;
BEGIN
    FOR v IN SELECT DISTINCT version FROM item_embeddings_old LOOP
        EXECUTE format('CREATE TABLE item_embeddings_v%s PARTITION OF item_embeddings FOR VALUES IN (%s)', v, v);
    END LOOP;
END $$"""


def _swap(partitioned: bool) -> None:
    for statement in _RENAME_OLD.strip().split(";\n"):
        op.execute(statement)
    for statement in _CREATE.format(partitioned="PARTITION BY LIST (version)" if partitioned else "").strip().split(";\n"):
        op.execute(statement)
    if partitioned:
        op.execute(_PARTITIONS)
    op.execute("INSERT INTO item_embeddings (version, item_id, embedding) SELECT version, item_id, embedding "
               "FROM item_embeddings_old")
    op.execute("DROP TABLE item_embeddings_old")


def upgrade() -> None:
    _swap(partitioned=True)


def downgrade() -> None:
    _swap(partitioned=False)
