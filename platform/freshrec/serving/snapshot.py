"""One loaded version: its towers and its item index, always used together.

A ``Snapshot`` is immutable once built. The API reads ``holder.current`` once per request and uses
that snapshot to the end, so a swap (one reference assignment) can never pair one version's user
tower with another version's item index.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import sqlalchemy as sa
import torch
from sqlalchemy.engine import Engine

from freshrec.db.vectors import from_literal
from freshrec.registry import artifacts
from freshrec.registry.versions import chain
from freshrec.training.train import Encoder

POPULAR_WINDOW_DAYS = 28


@dataclass(frozen=True)
class Hit:
    item_id: str
    title: str
    score: float


@dataclass
class Snapshot:
    version: int
    created_at: datetime
    sha256: str
    encoder: Encoder
    max_user_tokens: int
    item_ids: np.ndarray
    titles: list[str]
    item_vecs: np.ndarray  # unit rows, from pgvector: exactly what this version published
    popular: np.ndarray  # item rows by purchase lines in the 28 days before the version's newest row
    row_of: dict[str, int] = field(init=False)
    # (user_id, feature timestamp) -> user vector; the version is implied: one cache per snapshot.
    _user_cache: OrderedDict = field(init=False, default_factory=OrderedDict)
    _cache_lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    cache_size: int = 50_000

    def __post_init__(self) -> None:
        self.row_of = {item_id: i for i, item_id in enumerate(self.item_ids)}

    def embed(self, texts: list[str]) -> np.ndarray:
        """Users' profiles and search queries, through the user tower."""
        return self.encoder.users(texts, self.max_user_tokens)

    def user_vector(self, user_id: str, text: str, feature_ts: int) -> np.ndarray:
        key = (user_id, feature_ts)
        with self._cache_lock:
            if key in self._user_cache:
                self._user_cache.move_to_end(key)
                return self._user_cache[key]
        vec = self.embed([text])[0]
        with self._cache_lock:
            self._user_cache[key] = vec
            while len(self._user_cache) > self.cache_size:
                self._user_cache.popitem(last=False)
        return vec

    def score(self, cosine: np.ndarray) -> np.ndarray:
        """The model's own score: sigmoid(scale * cos + bias)."""
        model = self.encoder.model
        logits = cosine * float(model.log_scale.detach().exp()) + float(model.bias.detach())
        return 1.0 / (1.0 + np.exp(-logits))

    def top_k(self, query: np.ndarray, k: int, exclude: int | None = None) -> list[Hit]:
        """Exact inner-product search over the version's item matrix (see the README's retrieval bench)."""
        cosine = self.item_vecs @ query
        if exclude is not None:
            cosine[exclude] = -np.inf
        k = min(k, len(cosine) - (exclude is not None))
        top = np.argpartition(-cosine, k - 1)[:k] if k < len(cosine) else np.arange(len(cosine))
        top = top[np.argsort(-cosine[top])][:k]
        return self.hits(top, self.score(cosine[top]))

    def hits(self, rows: np.ndarray, scores: np.ndarray) -> list[Hit]:
        return [Hit(str(self.item_ids[r]), self.titles[r], float(s)) for r, s in zip(rows, scores)]

    def popular_hits(self, k: int) -> list[Hit]:
        rows = self.popular[:k]
        return self.hits(rows, np.zeros(len(rows)))


_ITEMS_SQL = """
SELECT e.item_id, i.title, e.embedding::text AS embedding
FROM item_embeddings e JOIN items i USING (item_id) WHERE e.version = :v ORDER BY e.item_id"""
_POPULAR_SQL = """
WITH newest AS (SELECT max(w.event_time_max) AS t FROM version_ancestry a JOIN watermarks w ON w.version = a.ancestor
                WHERE a.version = :v)
SELECT item_id FROM interactions, newest
WHERE event_time > newest.t - make_interval(days => :days) AND event_time <= newest.t
GROUP BY item_id ORDER BY count(*) DESC, item_id LIMIT 1000"""


def load_snapshot(engine: Engine, version: int, dim: int = 128) -> Snapshot:
    """Load a version: verify every artifact in its chain (TamperedArtifact if one differs), then its index."""
    with engine.connect() as conn:
        lineage = chain(conn, version)
        created_at = conn.execute(sa.text("SELECT created_at FROM model_versions WHERE version = :v"), {"v": version}).scalar()
        items = conn.execute(sa.text(_ITEMS_SQL), {"v": version}).all()
        popular_ids = [r[0] for r in conn.execute(sa.text(_POPULAR_SQL), {"v": version, "days": POPULAR_WINDOW_DAYS})]
    loaded = artifacts.load_chain(lineage, dim)
    loaded.model.eval()
    item_ids = np.array([r.item_id for r in items], dtype=object)
    vecs = np.array([from_literal(r.embedding) for r in items], dtype=np.float32)
    row_of = {item_id: i for i, item_id in enumerate(item_ids)}
    popular = np.array([row_of[i] for i in popular_ids if i in row_of], dtype=int)
    return Snapshot(
        version=version, created_at=created_at, sha256=lineage[-1]["artifact_sha256"],
        encoder=Encoder(loaded.model, loaded.tokenizer, torch.device("cpu")),
        max_user_tokens=int(lineage[-1]["params"].get("max_user_tokens", 128)),
        item_ids=item_ids, titles=[r.title for r in items], item_vecs=vecs, popular=popular,
    )
