"""What a batch of queries knows: the global side of a day, the tower's scores, each user's history.

``DayState`` is the day-level state (co-purchase partners and item aggregates as of the day's
start), ``Tower`` the two-tower model's scores, and ``context`` each query's history before its
time: (query, item) aggregates, the last baskets, the items the user had, what they browsed.

Everything per query is sparse: a query costs its own history and its items' partners, never a
row over the whole catalog (the tower's exact scores aside, a matrix product).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from freshrec.ranking.events import DAY, EventLog

SOURCES = ("repeat", "tower", "copurchase", "popular", "browsed")
NEVER_DAYS = 3650.0  # "days since" for an item the user never had


@dataclass
class DayState:
    """The global side of one day: co-purchase partners and item aggregates as of its start.

    ``copurchase`` is anything with ``gather(items)`` (``ranking.copurchase``): exact counts offline,
    a version's top-k partners when serving.
    """

    copurchase: object
    item_stats: np.ndarray  # (items, 4): events_7d, events_28d, buyers, repeat_buyers
    popular: np.ndarray = field(init=False)  # item rows, most events over 28 days first
    popularity_rank: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.popular = np.lexsort((np.arange(len(self.item_stats)), -self.item_stats[:, 1]))
        self.popularity_rank = np.empty(len(self.popular), np.float32)
        self.popularity_rank[self.popular] = np.arange(len(self.popular))


@dataclass
class Tower:
    """The two-tower model's view: user vectors of the queries, the item index, its logit scale."""

    user_vecs: np.ndarray
    item_vecs: np.ndarray
    scale: float
    bias: float

    def logits(self, rows: slice) -> np.ndarray:
        return self.scale * (self.user_vecs[rows] @ self.item_vecs.T) + self.bias


def _ranges(lo: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated aranges lo[i]:lo[i]+lengths[i]."""
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(lengths.sum()) - offsets + np.repeat(lo, lengths)


@dataclass
class History:
    """Per (query, item) aggregates of each query's events before its time."""

    key: np.ndarray  # query * n_items + item, sorted
    query: np.ndarray
    item: np.ndarray
    count: np.ndarray  # baskets with the item
    last: np.ndarray  # time of the newest such basket
    first: np.ndarray
    decay: np.ndarray  # (pairs, 3): sum of exp(-age / tau), tau = 7, 30, 90 days
    count_90d: np.ndarray


def history(log: EventLog, lo: np.ndarray, hi: np.ndarray, times: np.ndarray) -> History:
    n_items = log.n_items
    lengths = hi - lo
    query = np.repeat(np.arange(len(lo)), lengths)
    rows = _ranges(lo, lengths)
    age = (times[query] - log.time[rows]) / DAY
    key, inverse = np.unique(query.astype(np.int64) * n_items + log.item[rows], return_inverse=True)
    last = np.full(len(key), -np.inf)
    np.maximum.at(last, inverse, log.time[rows])
    first = np.full(len(key), np.inf)
    np.minimum.at(first, inverse, log.time[rows])
    decay = np.stack([np.bincount(inverse, np.exp(-age / tau), len(key)) for tau in (7.0, 30.0, 90.0)], 1)
    if len(key) == 0:  # one pair that matches nothing keeps the lookups below free of special cases
        return History(np.array([-1]), np.array([-1]), np.array([-1]), np.zeros(1), np.zeros(1), np.zeros(1),
                        np.zeros((1, 3)), np.zeros(1))
    return History(key, key // n_items, key % n_items, np.bincount(inverse, minlength=len(key)).astype(np.float64),
                    last, first, decay, np.bincount(inverse, (age < 90).astype(float), len(key)))


def contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which ``keys`` are in ``sorted_keys``."""
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[at] == keys


@dataclass
class Context:
    """What a chunk of queries knows of its users: history pairs, recent baskets, what they browsed."""

    h: History
    n_items: int
    has: np.ndarray  # the user has purchases before the query's time
    last_row: np.ndarray  # the newest such event's row
    last_basket_time: np.ndarray
    third_basket_time: np.ndarray  # the start of the user's last 3 baskets
    browsed: list[np.ndarray]  # per query: items viewed, clicked or carted before its time, newest first

    def owns(self, query: np.ndarray, item: np.ndarray) -> np.ndarray:
        """Whether each query's user had bought the item before its time."""
        return contains(self.h.key, query.astype(np.int64) * self.n_items + item)

    def recent_items(self) -> tuple[np.ndarray, np.ndarray]:
        """(query, item) of the items of each query's last 3 baskets."""
        h = self.h
        recent = (h.query >= 0) & (h.last >= self.third_basket_time[np.maximum(h.query, 0)])
        return h.query[recent], h.item[recent]


def context(log: EventLog, lo: np.ndarray, hi: np.ndarray, times: np.ndarray,
            browsed: list[np.ndarray] | None = None) -> Context:
    h = history(log, lo, hi, times)
    has = hi > lo
    last_row = np.maximum(hi - 1, 0)
    first_row = np.minimum(lo, max(len(log.basket) - 1, 0))
    last_basket = log.at("basket", last_row)
    third_basket = np.maximum(last_basket - 2, log.at("basket", first_row))
    third_basket_time = log.at("time", np.searchsorted(log.basket, third_basket), default=np.inf)
    browsed = browsed if browsed is not None else [np.zeros(0, np.int64)] * len(lo)
    return Context(h, log.n_items, has, last_row, np.where(has, log.at("time", last_row), -np.inf),
                   np.where(has, third_basket_time, np.inf), browsed)


@dataclass
class PairScores:
    """Sparse (query, item) scores: sorted keys query * n_items + item, with their sum and max."""

    key: np.ndarray
    sum: np.ndarray
    max: np.ndarray

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sum, max) of each key; 0 where absent."""
        if len(self.key) == 0:
            return np.zeros(len(keys), np.float32), np.zeros(len(keys), np.float32)
        at = np.minimum(np.searchsorted(self.key, keys), len(self.key) - 1)
        found = self.key[at] == keys
        return np.where(found, self.sum[at], 0.0), np.where(found, self.max[at], 0.0)


def copurchase_scores(ctx: Context, day: DayState, with_browsed: bool = False) -> PairScores:
    """Per (query, item): sum and max of P(item | i) over the items i of the query's last 3 baskets
    (and, ``with_browsed``, what it browsed since): only pairs with some co-purchase are kept."""
    query, item = ctx.recent_items()
    if with_browsed:
        extra_q = np.repeat(np.arange(len(ctx.browsed)), [len(b) for b in ctx.browsed])
        query = np.concatenate([query, extra_q])
        item = np.concatenate([item, np.concatenate(ctx.browsed) if len(extra_q) else np.zeros(0, np.int64)])
    if len(query) == 0:
        return PairScores(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32))
    # A query's items are distinct (an item browsed and bought counts once).
    pairs = np.unique(query.astype(np.int64) * ctx.n_items + item)
    query, item = pairs // ctx.n_items, pairs % ctx.n_items
    owner, partner, strength = day.copurchase.gather(item)
    keys = query[owner] * ctx.n_items + partner
    order = np.argsort(keys, kind="stable")
    keys, strength = keys[order], strength[order]
    unique, starts = np.unique(keys, return_index=True)
    if len(unique) == 0:
        return PairScores(unique, np.zeros(0, np.float32), np.zeros(0, np.float32))
    return PairScores(unique, np.add.reduceat(strength, starts).astype(np.float32),
                      np.maximum.reduceat(strength, starts).astype(np.float32))


def top_per_query(query: np.ndarray, item: np.ndarray, score: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(query, item) of each query's k best-scored pairs (ties: lower item first)."""
    if k <= 0 or len(query) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((item, -score, query))
    query, item = query[order], item[order]
    rank = np.arange(len(query)) - np.searchsorted(query, query)
    keep = rank < k
    return query[keep], item[keep]


def new_popular(ctx: Context, day: DayState, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(query, item) of the k most popular items each user never had."""
    n = len(ctx.has)
    # A user owns at most their history: that many places deeper in the list is always enough.
    own_per_query = np.bincount(ctx.h.query[ctx.h.query >= 0], minlength=n)
    head = day.popular[: k + int(own_per_query.max(initial=0))]
    query = np.repeat(np.arange(n), len(head))
    item = np.tile(head, n)
    fresh = ~ctx.owns(query, item)
    query, item = query[fresh], item[fresh]
    rank = np.arange(len(query)) - np.searchsorted(query, query)
    keep = rank < k
    return query[keep], item[keep]
