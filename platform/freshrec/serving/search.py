"""The search side of an API process.

It holds the pre-trained encoder, every item's search vector and the typo vocabulary, and keeps them
current with the catalog: every poll it looks at the newest transaction that wrote an item, and
when that moved, encodes the new texts (``search.index.catch_up``) and reloads. A version lends it
its query adapter and search configuration; with no version at all (day one) the pre-trained
encoder and the full-text leg answer alone, and the response says so (``version`` null).
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from datetime import datetime, timezone

import numpy as np
import sqlalchemy as sa
import torch

from freshrec.models.base import resolve
from freshrec.search import lexical
from freshrec.search.index import ITEM_TEXT, ItemVectors, catalog_horizon, normalised
from freshrec.search.pipeline import SearchConfig, SearchHit, SearchPipeline
from freshrec.serving.snapshot import Snapshot
from freshrec.updater.search_stage import QUERY_TOKENS, SearchSide, base_side, popularity_at

log = logging.getLogger("freshrec.serving")
POPULARITY_TTL_SECONDS = 60.0


class SearchService:
    def __init__(self, engine, base_model: str | None, cache_size: int = 20_000):
        self.engine, self.base_model = engine, base_model
        self.side: SearchSide | None = None
        self._base: str | None = None  # the resolved base model path the side was built from
        self._horizon: str | None = None
        self._lock = threading.Lock()
        self._queries: OrderedDict = OrderedDict()  # query text -> pre-trained embedding, this process only
        self._cache_size = cache_size
        self._popularity: tuple[float, dict[str, float]] | None = None

    @property
    def ready(self) -> bool:
        return self.side is not None

    def sync(self, snapshot: Snapshot | None) -> None:
        """Build the side for the serving version's base model (or the configured one), or catch up
        with the catalog if it changed."""
        base = snapshot.loaded.manifest.get("base_model") if snapshot is not None and snapshot.loaded else None
        path = str(resolve(base or self.base_model))
        with self.engine.connect() as conn:
            horizon = catalog_horizon(conn)
        if path == self._base and horizon == self._horizon:
            return
        with self._lock:
            # A head version's encoder is its base, unchanged: share it instead of loading it again.
            shared = snapshot is not None and snapshot.loaded is not None and snapshot.loaded.encoder_is_base \
                and path == self._base_of(snapshot)
            module = snapshot.ranking.encoder.model.encoder if shared else None
            tokenizer = snapshot.ranking.encoder.tokenizer if shared else None
            side = base_side(self.engine, path, torch.device("cpu"), module, tokenizer)
            if path != self._base:
                self._queries.clear()
            self.side, self._base, self._horizon = side, path, horizon
            log.info("search: %d items, base model %s", len(side.items.item_ids), path)

    @staticmethod
    def _base_of(snapshot: Snapshot) -> str:
        return str(resolve(snapshot.loaded.manifest.get("base_model")))

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Pre-trained query embeddings, through this process's LRU: queries are open-ended, so they
        are not written to the shared encoder-state cache."""
        out = [self._queries.get(t) for t in texts]
        missing = [n for n, v in enumerate(out) if v is None]
        if missing:
            fresh = self.side.encode_uncached([texts[n] for n in missing])
            for n, vec in zip(missing, fresh):
                out[n] = self._queries[texts[n]] = vec
            while len(self._queries) > self._cache_size:
                self._queries.popitem(last=False)
        return np.stack(out)

    def popularity(self, snapshot: Snapshot | None) -> dict[str, float]:
        """Items' interactions over 28 days: the serving version's day state, or (day one) the table's."""
        if snapshot is not None:
            day = snapshot.day_state()
            return dict(zip(snapshot.item_ids, day.item_stats[:, 1].tolist()))
        now = datetime.now(timezone.utc).timestamp()
        cached = self._popularity
        if cached is None or now - cached[0] > POPULARITY_TTL_SECONDS:
            cached = (now, popularity_at(self.engine, self.side, None))
            self._popularity = cached
        return cached[1]

    @staticmethod
    def adapter_and_config(snapshot: Snapshot | None) -> tuple[object, SearchConfig]:
        """The serving version's query adapter and search configuration, or day one's."""
        if snapshot is not None and snapshot.loaded and snapshot.loaded.search:
            return snapshot.loaded.search
        return None, SearchConfig()

    def uses_history(self, snapshot: Snapshot | None) -> bool:
        """Whether the serving configuration weighs a customer's purchases at all (else none are read)."""
        return self.adapter_and_config(snapshot)[1].history_weight > 0

    def search(self, conn, text: str, k: int, snapshot: Snapshot | None,
               history: dict[str, float] | None = None) -> list[SearchHit]:
        """The k best items for the text: the version's search pipeline, or day one's."""
        side = self.side
        adapter, config = self.adapter_and_config(snapshot)
        pipeline = SearchPipeline(side.items, self._encode, adapter, config, side.vocabulary)
        found = [item for item, _ in lexical.search(conn, text, pipeline.vocabulary, config.depth)]
        popularity = self.popularity(snapshot)
        return pipeline.rank([text], [found], lambda ids: {i: popularity.get(i, 0.0) for i in ids},
                             [history], k, extra=self._newcomers(conn, found))[0]

    def _newcomers(self, conn, found: list[str]) -> ItemVectors | None:
        """Items the full-text leg found that committed after the last catch-up: embedded now, so a new
        item competes in the dense leg from its first second (the next poll stores its vector)."""
        new = [i for i in found if i not in self.side.items.row_of]
        if not new:
            return None
        rows = conn.execute(sa.text(f"SELECT i.item_id, i.title, {ITEM_TEXT} FROM items i WHERE i.item_id = ANY(:ids) "
                                    "ORDER BY i.item_id"), {"ids": new}).all()
        encoder = self.side.encoder
        encoder.model.eval()
        with torch.no_grad():
            vecs = normalised(encoder.pooled([r[2] for r in rows], QUERY_TOKENS).cpu().numpy())
        return ItemVectors(np.array([r[0] for r in rows], dtype=object), [r[1] for r in rows], vecs)

    def title(self, item_id: str, conn) -> str:
        row = self.side.items.row_of.get(item_id)
        if row is not None:
            return self.side.items.titles[row]
        # An item committed after the last catch-up: found already, named from its row.
        return conn.execute(sa.text("SELECT title FROM items WHERE item_id = :i"), {"i": item_id}).scalar() or item_id
