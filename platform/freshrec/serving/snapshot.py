"""One loaded version: its towers, item index, ranker and co-purchase counts, always used together.

A ``Snapshot`` is immutable once built (its caches aside). The API reads ``holder.current`` once per
request and uses that snapshot to the end, so a swap (one reference assignment) can never pair one
version's user tower with another version's item index or ranker.

Recommendations run the pipeline (``freshrec.ranking``): candidates from the user's own rows (read
per request, so a purchase a second ago counts), the towers, co-purchase and popularity; the
ranker's features, with per-user and per-item features from Feast's online store; the ranker. The
benchmark scores a version through this same object, so it measures what the API serves.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
import torch
from sqlalchemy.engine import Engine

from freshrec.db.vectors import read_vectors
from freshrec.ranking import inputs
from freshrec.ranking.candidates import CandidateConfig, DayState
from freshrec.ranking.copurchase import FetchedNeighbours, Neighbours
from freshrec.ranking.pair_counts import has_neighbours, neighbour_owners, read_neighbours
from freshrec.ranking.scorer import RankingModel
from freshrec.ranking.pipeline import Queries, TowerIndex, day_of, rank
from freshrec.registry import artifacts
from freshrec.registry.versions import chain
from freshrec.serving import item_stats
from freshrec.serving.batcher import MicroBatcher
from freshrec.models.encoder import Encoder
from freshrec.models.state_cache import StateCache, encoder_digest, text_hash

log = logging.getLogger("freshrec.serving")
WARM_ITEMS = 500  # items whose partners one wake-up of the API's watcher reads (see Snapshot.warm)
STATS_TTL_SECONDS = 60.0  # item aggregates are daily: look for changed ones at most once a minute


def _day(clock: datetime) -> float:
    """The data clock's day (the day states' key)."""
    return float(day_of(np.array([clock.timestamp()]))[0])


@dataclass(frozen=True)
class Hit:
    item_id: str
    title: str
    score: float
    sources: tuple[str, ...] = ()


@dataclass
class Snapshot:
    version: int | None  # None: an unpublished model (the benchmark's full-retrain arm)
    created_at: datetime | None
    sha256: str
    ranking: RankingModel
    copurchase: Neighbours | FetchedNeighbours  # each item's top co-purchase partners (the lineage's baskets)
    item_ids: np.ndarray  # the index's order: item row i is item_ids[i]
    titles: list[str]
    store: object  # Feast, for the online per-item aggregates
    engine: Engine  # which items' aggregates changed since they were read (``serving.item_stats``)
    loaded: artifacts.LoadedVersion | None = None  # its manifest (base model) and search side
    row_of: dict[str, int] = field(init=False)
    item_index: pd.Index = field(init=False)  # item id -> row, built once (not per request)
    # sha256 of a profile text -> its user vector. Keyed by the text itself: a profile that changes at
    # the same feature timestamp (a basket's lines in two requests, a backfill, a renamed item) gets
    # a new vector. The version is implied: one cache per snapshot.
    _user_cache: OrderedDict = field(init=False, default_factory=OrderedDict)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    # the item aggregates held, and the day state built on them: see day_state
    _day: tuple[item_stats.HeldStats, DayState] | None = field(init=False, default=None)
    cache_size: int = 50_000
    # Items whose partners are read before a version serves: the head of popularity, where most
    # baskets' items are (about 0.1 s of SQL for 2,000 items with 100 partners each).
    primed_items: int = 2_000

    def __post_init__(self) -> None:
        self.row_of = {item_id: i for i, item_id in enumerate(self.item_ids)}
        self.item_index = pd.Index(self.item_ids)
        self._batcher = MicroBatcher(self._encode)

    @property
    def item_vecs(self) -> np.ndarray:
        return self.ranking.index.item_vecs

    def with_candidates(self, config: CandidateConfig) -> Snapshot:
        """The same version proposing other candidate counts (the benchmark's sweep)."""
        return replace(self, ranking=replace(self.ranking, config=config))

    def embed(self, texts: list[str]) -> np.ndarray:
        """Texts through the user tower: how search ranked before it had a side of its own (``freshrec.search``);
        the benchmarks keep it as a record and for the retrieval comparison."""
        encoder = self.ranking.encoder
        return Encoder(encoder.model, encoder.tokenizer, encoder.device).users(texts, self.ranking.max_user_tokens)

    def user_vectors(self, texts: list[str]) -> np.ndarray:
        """User-tower vectors of profile texts: this process's LRU first, then the shared encoder-state
        cache, then the encoder (a lone request shares a micro-batch)."""
        keys = [text_hash(t) for t in texts]
        out: list[np.ndarray | None] = [None] * len(texts)
        with self._lock:
            for n, key in enumerate(keys):
                if key in self._user_cache:
                    self._user_cache.move_to_end(key)
                    out[n] = self._user_cache[key]
        missing = [n for n, v in enumerate(out) if v is None]
        # A returning user's state is in the shared cache: one lookup, no wait in the micro-batcher.
        cached = self.ranking.encoder.cached_users([texts[n] for n in missing], self.ranking.max_user_tokens)
        fresh = {missing[i]: vec for i, vec in cached.items()}
        rest = [n for n in missing if n not in fresh]
        if len(rest) == 1:
            fresh[rest[0]] = self._batcher(texts[rest[0]])
        elif rest:
            fresh.update(zip(rest, self._encode([texts[n] for n in rest])))
        with self._lock:
            for n, vec in fresh.items():
                out[n] = self._user_cache[keys[n]] = vec
            while len(self._user_cache) > self.cache_size:
                self._user_cache.popitem(last=False)
        return np.stack(out) if out else np.zeros((0, self.item_vecs.shape[1]), np.float32)

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.ranking.encoder.users(texts, self.ranking.max_user_tokens)

    def day_state(self, clock: datetime | None = None) -> DayState:
        """Co-purchase of this version and the newest item aggregates from Feast's online store.

        Keyed by the data's clock: read again when its day changes (the aggregates are daily), so a
        replay that ranks several weeks within a minute of wall clock reads each week's own. Within
        a day, ``refresh`` reads the items whose aggregates changed in the background (the API's
        watcher thread, once a minute): no request pays for a read over the whole catalog. ``clock``
        None: the day held.
        """
        day = _day(clock) if clock is not None else None
        cached = self._day
        if cached is None or (day is not None and cached[0].day != day):
            day = day if day is not None else (cached[0].day if cached else None)
            cached = self._hold(item_stats.read_all(self.engine, self.store, self.item_ids, day))
        return cached[1]

    def prime(self, clock: datetime, previous: Snapshot | None = None) -> None:
        """Before the version serves: the day's item aggregates (those ``previous``, the version it
        replaces, holds for the same day, by item id), and the co-purchase partners of its
        ``primed_items`` most popular items from its stored rows (a bounded read, whatever the
        catalog's size), so the first requests after a swap find them held."""
        held = previous._day[0] if previous is not None and previous._day is not None else None
        if held is not None and held.day == _day(clock):
            self._hold(item_stats.carried_over(held, previous.item_ids, self.engine, self.store, self.item_ids,
                                               self.row_of))
        day = self.day_state(clock)
        if isinstance(self.copurchase, FetchedNeighbours):
            self.copurchase.prefetch(day.popular[: self.primed_items])

    def warm(self, items: int = WARM_ITEMS) -> int:
        """Between requests: the co-purchase partners of the next ``items`` items not held yet, most
        popular first; how many were read (0: all held).

        Priming holds the partners of the ``primed_items`` most popular items: at 10x the bundled shop,
        2,000 of 28,000, so most returning customers' first requests read some partners from the
        store, a round trip each. The API's watcher thread calls this on every wake-up (once a
        second), a few hundred items at a time so that no one wake-up holds the requests up for long:
        the bench's ``partners_held_s`` says how long it takes after a swap."""
        if not isinstance(self.copurchase, FetchedNeighbours) or self._day is None:
            return 0
        return self.copurchase.prefetch_next(self._day[1].popular, items)

    @property
    def partners_held(self) -> float | None:
        """The share of items whose co-purchase partners are held (None: held whole, not read per item)."""
        if not isinstance(self.copurchase, FetchedNeighbours):
            return None
        return self.copurchase.held / max(len(self.item_ids), 1)

    def refresh(self) -> None:
        """Read the items whose aggregates changed, when a minute has passed (the API calls it between
        requests)."""
        cached = self._day
        if cached is None or time.monotonic() - cached[0].read_at <= STATS_TTL_SECONDS:
            return
        held = item_stats.catch_up(cached[0], self.engine, self.store, self.item_ids, self.row_of)
        # Nothing changed: the same day state, looked at again in a minute.
        fresh = (held, cached[1] if held.stats is cached[0].stats else DayState(self.copurchase, held.stats))
        with self._lock:  # a request may have moved to a new day meanwhile: never put the old one back
            if self._day is cached:
                self._day = fresh

    def _hold(self, held: item_stats.HeldStats) -> tuple:
        cached = (held, DayState(self.copurchase, held.stats))
        with self._lock:
            self._day = cached  # one assignment: a request reads the old state or the new, whole
        return cached

    def hits(self, rows: np.ndarray, scores: np.ndarray, sources=None) -> list[Hit]:
        return [Hit(str(self.item_ids[r]), self.titles[r], float(s), tuple(sources[n]) if sources else ())
                for n, (r, s) in enumerate(zip(rows, scores))]

    def popular_hits(self, k: int, clock: datetime | None = None) -> list[Hit]:
        rows = self.day_state(clock).popular[:k]
        return self.hits(rows, np.zeros(len(rows)), [("popular",)] * len(rows))

    def score(self, cosine: np.ndarray) -> np.ndarray:
        """The towers' own score: sigmoid(scale * cos + bias)."""
        index = self.ranking.index
        return 1.0 / (1.0 + np.exp(-(cosine * index.scale + index.bias)))

    def top_k(self, query: np.ndarray, k: int, exclude: int | None = None) -> list[Hit]:
        """Exact inner-product search over the version's item matrix (search and similar items)."""
        cosine = self.item_vecs @ query
        if exclude is not None:
            cosine[exclude] = -np.inf
        k = min(k, len(cosine) - (exclude is not None))
        top = np.argpartition(-cosine, k - 1)[:k] if k < len(cosine) else np.arange(len(cosine))
        top = top[np.argsort(-cosine[top])][:k]
        return self.hits(top, self.score(cosine[top]))

    def recommend(self, conn, users: dict[str, dict], k: int, clock: datetime | None = None) -> dict[str, list[Hit] | None]:
        """Ranked items per user (None: no history, or nothing to propose: the caller serves popular items).

        ``users`` maps a user id to Feast's online row: user_text, ts, n_events, n_baskets. A user who
        only browsed (views, carts) has a profile: the towers, what they browsed and its co-purchase
        partners propose their candidates.
        """
        known = [u for u, f in users.items() if f.get("user_text")]
        out: dict[str, list[Hit] | None] = {u: None for u in users}
        if not known:
            return out
        log, browse, clock = inputs.users_log(conn, known, clock, self.item_ids, self.item_index)
        times = np.full(len(known), clock.timestamp())
        queries = Queries(log.user_rows(known), times,
                          np.array([[users[u]["n_events"], users[u]["n_baskets"]] for u in known], np.float32),
                          self.user_vectors([users[u]["user_text"] for u in known]), browse.recent(known, times))
        day = self.day_state(clock)
        cands, scores, tops = rank(log, queries, self.ranking.index, self.ranking.ranker, self.ranking.config,
                                   lambda _: day, k)
        for q, user in enumerate(known):
            picks = tops[q]
            if len(picks):
                out[user] = self.hits(cands.item[picks], scores[picks], [cands.source_names(p) for p in picks])
        return out


_ITEMS_SQL = """
SELECT e.item_id, i.title, e.embedding
FROM item_embeddings e JOIN items i USING (item_id) WHERE e.version = %(v)s ORDER BY e.item_id"""


def _consumed_copurchase(engine: Engine, xid_to: str, item_ids: np.ndarray) -> Neighbours:
    """Neighbours from the lineage's consumed rows, in process: an unpublished model (the benchmark's
    full retrain), or a version published before versions stored their own."""
    from freshrec.ranking.copurchase import from_log

    return from_log(inputs.consumed_log(engine, xid_to, item_ids)).neighbours()


def _published_neighbours(engine: Engine, store, version: int, item_ids: np.ndarray):
    """The version's own neighbours, read from Feast's online store item by item as requests need them:
    loading a version reads no interaction."""
    from freshrec.features import online_neighbours

    with engine.connect() as conn:
        if not has_neighbours(conn, version):
            return None
        owners = {i: v for i, v in neighbour_owners(conn, version).items() if v != version}  # lists carried over

    def fetch(ids: list[str]) -> dict[str, tuple[list[str], list[float]]]:
        # Online first; items it lacks (a push that failed, a materialize not yet run) from the version's rows.
        try:
            found = online_neighbours(store, version, ids, owners)
        except Exception as err:  # noqa: BLE001 - the SQL rows answer while the online store is away
            log.warning("version %s's neighbours: online store unavailable (%s); reading item_neighbours", version, err)
            found = {}
        missing = [i for i in ids if i not in found]
        if missing:
            with engine.connect() as conn:
                found.update(read_neighbours(conn, version, missing))
        return found

    def stored(ids: list[str]) -> dict[str, tuple[list[str], list[float]]]:
        with engine.connect() as conn:
            return read_neighbours(conn, version, ids)

    # Priming reads thousands of items at once from the version's rows, the online store's source: the
    # online store serves one call at a time per process (``features.store._online``), and a call that
    # long would hold the serving version's requests behind it.
    return FetchedNeighbours(fetch, item_ids, pd.Index(item_ids), fetch_many=stored)


def load_snapshot(engine: Engine, version: int, store, dim: int = 128) -> Snapshot:
    """Load a version: verify every artifact in its chain (TamperedArtifact if one differs), then its index."""
    with engine.connect() as conn:
        lineage = chain(conn, version)
        created_at = conn.execute(sa.text("SELECT created_at FROM model_versions WHERE version = :v"), {"v": version}).scalar()
        items, vecs = read_vectors(conn, _ITEMS_SQL, {"v": version})  # exactly what was published
    loaded = artifacts.load_chain(lineage, dim)
    item_ids = np.array([r[0] for r in items], dtype=object)
    params = lineage[-1]["params"]
    neighbours = _published_neighbours(engine, store, version, item_ids)
    if neighbours is None:
        log.warning("version %s predates stored neighbours: computing them from its consumed rows", version)
    return assemble(engine, store, loaded, item_ids, [r[1] for r in items], vecs, lineage[-1]["xid_to"],
                    version=version, created_at=created_at, sha256=lineage[-1]["artifact_sha256"],
                    max_user_tokens=int(params.get("max_user_tokens", 128)), neighbours=neighbours)


def assemble(engine: Engine, store, loaded: artifacts.LoadedVersion, item_ids: np.ndarray, titles: list[str],
             item_vecs: np.ndarray, xid_to: str, version: int | None = None, created_at=None, sha256: str = "",
             max_user_tokens: int = 128, neighbours=None) -> Snapshot:
    """A snapshot from loaded parts (the benchmark builds unpublished ones the same way)."""
    model = loaded.model.eval()
    device = torch.device("cpu")
    encoder = Encoder(model, loaded.tokenizer, device, cache=StateCache(engine, encoder_digest(model.encoder, device)))
    index = TowerIndex(item_vecs, float(model.log_scale.detach().exp()), float(model.bias.detach()))
    ranking = RankingModel(encoder, index, loaded.ranker, loaded.candidates or CandidateConfig(), max_user_tokens)
    neighbours = neighbours if neighbours is not None else _consumed_copurchase(engine, xid_to, item_ids)
    return Snapshot(version, created_at, sha256, ranking, neighbours, item_ids, titles, store, engine, loaded)
