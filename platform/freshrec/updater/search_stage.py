"""The search side's part of an update: the cut's query events train the query adapter (with replay
of older ones), and the gate judges search on held-out query events and on the fixed known-item set,
against the parent's search and the day-one pipeline (full text and the pre-trained encoder).

A query event is an interaction with ``query`` set: the search that led to a click, cart or purchase
of that item. The same watermark covers them: lineage says which query events trained which version
(``version_consumed_rows.query``).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
import torch

from freshrec.models.base import load_encoder, resolve
from freshrec.models.encoder import Encoder
from freshrec.models.query_adapter import QueryAdapter
from freshrec.models.state_cache import StateCache, encoder_digest
from freshrec.models.towers import MeanPooled
from freshrec.ranking.inputs import STAT_COLUMNS, daily_item_stats
from freshrec.search import evaluate
from freshrec.search.index import ItemVectors, catch_up, normalised
from freshrec.search.knownitem import KnownItems, known_items, training_exclusions
from freshrec.search.pipeline import SearchConfig, SearchPipeline
from freshrec.search.text import Vocabulary
from freshrec.training.dataset import in_draw_order, older_ids, split_by_basket
from freshrec.training.search import SearchArguments, SearchFit, fit_adapter
from freshrec.training.watermark import ZERO_XID, Cut
from freshrec.words import words

QUERY_TOKENS = 32
# The gate's evidence on search: about as many queries per slice as the recommendations' gate scores
# baskets (``max_eval_baskets``, 400). Each is a full-text query that ranks every document matching a
# word of it, so its cost grows with the catalog (about 20 ms at 10x the bundled shop): 300 known
# items (1,192 queries) and 1,000 query events were 12 s of an update there, whatever the cut's size.
GATE_KNOWN_ITEMS = 100  # items of the known-item set the gate scores, about 400 queries (the benchmark scores all)
GATE_QUERY_EVENTS = 400  # held-out query events the gate scores at most
_SIGNALS = "query IS NOT NULL AND event_type IN ('click', 'cart', 'purchase')"
_QUERY_ROWS = f"""
SELECT id AS interaction_id, user_id, item_id, query, event_time AS event_timestamp FROM interactions
WHERE ingest_xid >= CAST(:a AS xid8) AND ingest_xid < CAST(:b AS xid8) AND {_SIGNALS}"""
_BY_ID = "SELECT id AS interaction_id, user_id, item_id, query, event_time AS event_timestamp FROM interactions WHERE id = ANY(:ids)"


@dataclass
class SearchSide:
    """What every search pipeline of this database shares: the item vectors and the base encoder."""

    items: ItemVectors
    encoder: Encoder  # the pre-trained encoder, its states through the shared cache
    digest: str
    vocabulary: Vocabulary
    engine: sa.Engine

    @cached_property
    def known(self) -> KnownItems:
        """The benchmark's known-item set (the gate scores its head), built on first use: an API
        process serves search without it."""
        return known_items(self.engine, pd.DataFrame({"item_id": self.items.item_ids, "title": self.items.titles}))

    def encode(self, texts: list[str]) -> np.ndarray:
        """Through the shared encoder-state cache: for texts seen again and again (training pairs, the
        known-item set)."""
        return self.encoder.pooled_all(texts, QUERY_TOKENS).cpu().numpy() if texts else np.zeros((0, self.dim))

    def encode_uncached(self, texts: list[str]) -> np.ndarray:
        """Straight through the encoder, as the API embeds a query: queries are open-ended, and a
        round trip to the shared cache would cost more than the encode."""
        self.encoder.model.eval()
        with torch.no_grad():
            return self.encoder.pooled(texts, QUERY_TOKENS).cpu().numpy()

    @property
    def dim(self) -> int:
        return self.items.vectors.shape[1] if len(self.items.vectors) else self.encoder.model.encoder.config.hidden_size

    def pipeline(self, adapter: QueryAdapter | None, config: SearchConfig | None = None) -> SearchPipeline:
        return SearchPipeline(self.items, self.encode, adapter, config or SearchConfig(), self.vocabulary)


def base_side(engine, base_path: str | Path, device, encoder_module=None, tokenizer=None) -> SearchSide:
    """The pre-trained encoder (``encoder_module`` when the caller holds it already: a ``head`` version's
    encoder is its base) and every item's vector under it, caught up with the catalog."""
    from freshrec.models.base import load_tokenizer

    path = resolve(str(base_path))
    module = MeanPooled(encoder_module if encoder_module is not None else load_encoder(path)).eval()
    digest = encoder_digest(module.encoder, precision="fp32")
    encoder = Encoder(module, tokenizer or load_tokenizer(path), device, cache=StateCache(engine, digest), bf16=False)
    catch_up(engine, encoder, digest, QUERY_TOKENS)
    items = ItemVectors.load(engine, digest)
    return SearchSide(items, encoder, digest, Vocabulary.build(items.titles), engine)


@dataclass
class QueryPairs:
    train: pd.DataFrame  # query, item_id (new and replayed)
    valid: pd.DataFrame  # held-out new ones that choose the epoch
    gate: pd.DataFrame  # the newest held-out ones: the gate's evidence
    new: int  # query events in the cut (the excluded known-item pairs included)
    replay: int
    excluded: int


def _usable(rows: pd.DataFrame, side: SearchSide, exclusions: set) -> pd.DataFrame:
    """Pairs whose item has a search vector and which are not in the known-item set."""
    known = np.array([(" ".join(words(q)), i) in exclusions for q, i in zip(rows["query"], rows["item_id"])], bool)
    keep = rows["item_id"].isin(side.items.row_of).to_numpy() & ~known
    return rows[keep]


def query_pairs(engine, cut: Cut, side: SearchSide, seed: int, args: SearchArguments,
                holdout_fraction: float) -> QueryPairs:
    """The cut's query events, split in time like the baskets, and a replay sample of older ones."""
    with engine.connect() as conn:
        new = pd.read_sql(sa.text(_QUERY_ROWS), conn, params={"a": cut.xid_from, "b": cut.xid_to})
    exclusions = training_exclusions(side.known)
    usable = _usable(new, side, exclusions)
    train, held = split_by_basket(usable, holdout_fraction)
    valid, gate = split_by_basket(held, 0.5)
    if len(gate) > GATE_QUERY_EVENTS:  # the newest baskets: a first version's cut holds months of them
        gate = split_by_basket(gate, GATE_QUERY_EVENTS / len(gate))[1]
    replay = new.iloc[:0]
    n_replay = int(len(train) * args.replay_fraction) if cut.xid_from != ZERO_XID else 0
    if n_replay:
        ids = older_ids(engine, cut.xid_from, n_replay, seed, where=_SIGNALS)
        with engine.connect() as conn:
            replay = pd.read_sql(sa.text(_BY_ID), conn, params={"ids": ids})
        replay = _usable(in_draw_order(replay, ids), side, exclusions)
    return QueryPairs(pd.concat([train, replay], ignore_index=True), valid, gate, len(new), len(replay),
                      len(new) - len(usable))


def train_search(side: SearchSide, parent: QueryAdapter | None, pairs: QueryPairs,
                 args: SearchArguments) -> tuple[QueryAdapter, SearchFit]:
    """A child of the parent's adapter, or (a first version) one that starts as the pre-trained encoder."""
    adapter = copy.deepcopy(parent) if parent is not None else QueryAdapter(side.dim)
    if not len(pairs.train):
        return adapter, SearchFit()

    texts = side.pipeline(None).dense_texts  # as the pipeline embeds them when it serves

    def states(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        rows = np.array([side.items.row_of[i] for i in frame["item_id"]], dtype=np.int64)
        return normalised(side.encode(texts(frame["query"].tolist()))), rows

    fit = fit_adapter(adapter, states(pairs.train), states(pairs.valid), side.items.vectors, args)
    return adapter, fit


def popularity_at(engine, side: SearchSide, when: datetime | None) -> dict[str, float]:
    """Each item's interactions over 28 days as of ``when``'s day (the behaviour term's popularity)."""
    day = (when or datetime.now(timezone.utc)).timestamp() // 86_400 * 86_400 + 86_400
    stats = daily_item_stats(engine, side.items.item_ids, [day])[day]
    return dict(zip(side.items.item_ids, stats[:, STAT_COLUMNS.index("events_28d")].tolist()))


def judge_search(engine, side: SearchSide, adapters: dict[str, QueryAdapter | None], gate_pairs: pd.DataFrame,
                 popularity: dict[str, float]) -> dict:
    """Every named pipeline's scores on the held-out query events and the gate's known-item queries.

    The lexical leg is the same for all of them: computed once per query.
    """
    started = time.perf_counter()
    known = side.known.head(GATE_KNOWN_ITEMS).queries
    slices = {"queries": (gate_pairs["query"].tolist(), [{i} for i in gate_pairs["item_id"]]),
              "known_items": (known["query"].tolist(), [set(r) for r in known["relevant"]])}
    day_one = side.pipeline(None)
    lookup = lambda ids: {i: popularity.get(i, 0.0) for i in ids}  # noqa: E731 - one line, used below
    out: dict = {name: {} for name in adapters}
    for name, (queries, relevant) in slices.items():
        lexical = evaluate.lexical_results(engine, day_one, queries)
        for pipeline_name, adapter in adapters.items():
            rows = evaluate.score(day_one.with_adapter(adapter), queries, relevant, lexical, lookup)
            out[pipeline_name][name] = evaluate.summary(rows)
    out["seconds"] = time.perf_counter() - started
    return out
