"""The ranking pipeline, shared by the updater, the benchmark and the API:
candidates -> features -> ranker -> top k, for (user, moment) queries.

Queries are grouped by UTC day: every query of a day sees the same ``DayState`` (co-purchase and
item aggregates as of the day's start), which a caller supplies in increasing day order.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from freshrec.ranking.candidates import FEATURES, CandidateConfig, Candidates, DayState, Tower, build
from freshrec.ranking.events import DAY, EventLog
from freshrec.models.ranker import Ranker


@dataclass
class Queries:
    """(user, moment) pairs to rank for, with what Feast says of each user then."""

    user_rows: np.ndarray  # rows of the EventLog's users (-1: no history)
    times: np.ndarray  # epoch seconds
    activity: np.ndarray  # (n, 2): n_events, n_baskets as of just before each time
    user_vecs: np.ndarray  # the user tower's vector of each query's profile text
    browsed: list[np.ndarray] | None = None  # item rows each user viewed, clicked or carted before its time

    def __len__(self) -> int:
        return len(self.times)

    def take(self, idx: np.ndarray) -> Queries:
        browsed = [self.browsed[i] for i in idx] if self.browsed is not None else None
        return Queries(self.user_rows[idx], self.times[idx], self.activity[idx], self.user_vecs[idx], browsed)


@dataclass
class TowerIndex:
    """A version's item vectors and logit scale: with the queries' user vectors, a ``Tower``."""

    item_vecs: np.ndarray
    scale: float
    bias: float

    def for_queries(self, user_vecs: np.ndarray) -> Tower:
        return Tower(user_vecs, self.item_vecs, self.scale, self.bias)


def day_of(times: np.ndarray) -> np.ndarray:
    """The start of each time's UTC day, in epoch seconds."""
    return np.floor(times / DAY) * DAY


def candidates_by_day(log: EventLog, queries: Queries, index: TowerIndex, config: CandidateConfig,
                      day_state: Callable[[float], DayState]) -> Candidates:
    """Candidates of every query, each built with its own day's state (days in increasing order)."""
    days = day_of(queries.times)
    parts = []
    for day in np.unique(days):
        idx = np.flatnonzero(days == day)
        browsed = [queries.browsed[i] for i in idx] if queries.browsed is not None else None
        part = build(log, queries.user_rows[idx], queries.times[idx], queries.activity[idx], day_state(float(day)),
                     index.for_queries(queries.user_vecs[idx]), config, browsed)
        part.query = idx[part.query]
        parts.append(part)
    cands = Candidates.concat(parts)
    order = np.lexsort((cands.item, cands.query))
    return Candidates(cands.query[order], cands.item[order], cands.sources[order], cands.features[order])


def labels(log: EventLog, queries: Queries, cands: Candidates) -> np.ndarray:
    """1 where the candidate is in the query's own basket (the user's items at exactly that moment)."""
    baskets = basket_items(log, queries)
    return np.array([i in baskets[q] for q, i in zip(cands.query.tolist(), cands.item.tolist())], np.float32)


def top_k(cands: Candidates, scores: np.ndarray, n_queries: int, k: int) -> list[np.ndarray]:
    """Per query, the positions in ``cands`` of its k best candidates (ties: lower item row first)."""
    order = np.lexsort((cands.item, -scores, cands.query))
    bounds = np.searchsorted(cands.query[order], np.arange(n_queries + 1))
    return [order[bounds[q] : bounds[q + 1]][:k] for q in range(n_queries)]


def rank(log: EventLog, queries: Queries, index: TowerIndex, ranker: Ranker | None, config: CandidateConfig,
         day_state: Callable[[float], DayState], k: int) -> tuple[Candidates, np.ndarray, list[np.ndarray]]:
    """The pipeline end to end: candidates, ranker scores, and each query's top k."""
    cands = candidates_by_day(log, queries, index, config, day_state)
    if ranker is None:  # a version from before the ranker: its towers' order over the candidates
        scores = cands.features[:, FEATURES.index("tower_logit")]
    else:
        scores = ranker.score(cands.features, FEATURES) if len(cands) else np.zeros(0, np.float32)
    return cands, scores, top_k(cands, scores, len(queries), k)


def basket_items(log: EventLog, queries: Queries) -> list[set[int]]:
    """The item rows of each query's own basket: the user's events at exactly that moment."""
    _, start = log.before(queries.user_rows, queries.times)
    _, end = log.before(queries.user_rows, queries.times, inclusive=True)
    return [set(log.item[a:b].tolist()) for a, b in zip(start, end)]
