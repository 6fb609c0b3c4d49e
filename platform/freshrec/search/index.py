"""The search side's item vectors: the pre-trained encoder's embedding of each item's current text.

They belong to no version (only the query side trains), so they are written once per item text, as
soon as an item commits: ``catch_up`` encodes every item whose text has no vector yet (through the
encoder-state cache) and stores it in ``item_search_vectors``, under the encoder's digest. The API
runs it at start and then every poll, the updater before it trains; a catalog loaded a second
ago is searchable by meaning, not only by its words.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlalchemy as sa

from freshrec.db.vectors import copy_vectors, read_vectors
from freshrec.models.encoder import Encoder

ITEM_TEXT = "concat_ws(' | ', i.title, i.category, i.description)"
_STALE = f"""
SELECT i.item_id, {ITEM_TEXT} AS text FROM items i
LEFT JOIN item_search_vectors v ON v.item_id = i.item_id AND v.encoder = :encoder
WHERE v.item_id IS NULL OR v.text_sha256 <> sha256(convert_to({ITEM_TEXT}, 'UTF8'))
ORDER BY i.item_id"""
_UPSERT = """
INSERT INTO item_search_vectors (encoder, item_id, text_sha256, embedding)
SELECT :encoder, item_id, sha256(convert_to(text, 'UTF8')), embedding FROM _search_vectors
ON CONFLICT (encoder, item_id) DO UPDATE SET text_sha256 = EXCLUDED.text_sha256, embedding = EXCLUDED.embedding,
    written_xid = pg_current_xact_id()"""
_LOAD = f"""
SELECT v.item_id, i.title, v.embedding FROM item_search_vectors v JOIN items i USING (item_id)
WHERE v.encoder = %(encoder)s AND v.text_sha256 = sha256(convert_to({ITEM_TEXT}, 'UTF8')) ORDER BY v.item_id"""
_CHANGED = "SELECT coalesce(max(written_xid)::text, '0') FROM items"


def normalised(states: np.ndarray) -> np.ndarray:
    return states / np.maximum(np.linalg.norm(states, axis=1, keepdims=True), 1e-12)


def catch_up(engine, encoder: Encoder, digest: str, max_tokens: int = 32, batch: int = 2048) -> int:
    """Encode and store the vector of every item whose current text has none; returns how many."""
    with engine.connect() as conn:
        stale = pd.read_sql(sa.text(_STALE), conn, params={"encoder": digest})
    for start in range(0, len(stale), batch):
        part = stale.iloc[start : start + batch]
        vecs = normalised(encoder.pooled_all(part["text"].tolist(), max_tokens).cpu().numpy())
        with engine.begin() as conn:
            raw = conn.connection.driver_connection
            with raw.cursor() as cursor:
                cursor.execute("CREATE TEMP TABLE _search_vectors (item_id text, text text, embedding vector) "
                               "ON COMMIT DROP")
            copy_vectors(raw, "COPY _search_vectors (item_id, text, embedding) FROM STDIN (FORMAT BINARY)",
                         ["text", "text", "vector"], zip(part["item_id"], part["text"], vecs))
            conn.execute(sa.text(_UPSERT), {"encoder": digest})
    return len(stale)


def catalog_horizon(conn) -> str:
    """The newest transaction that wrote an item: when it moves, the catalog changed."""
    return conn.execute(sa.text(_CHANGED)).scalar()


@dataclass
class ItemVectors:
    """Every item's search vector, in item-id order, with its title."""

    item_ids: np.ndarray
    titles: list[str]
    vectors: np.ndarray  # normalised, float32
    row_of: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.row_of = {item: n for n, item in enumerate(self.item_ids)}

    @classmethod
    def load(cls, engine, digest: str) -> ItemVectors:
        with engine.connect() as conn:
            rows, vectors = read_vectors(conn, _LOAD, {"encoder": digest})
        return cls(np.array([r[0] for r in rows], dtype=object), [r[1] for r in rows], vectors)
