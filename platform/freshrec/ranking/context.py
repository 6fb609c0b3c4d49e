"""What a batch of queries knows: the global side of a day, the tower's scores, each user's history.

``DayState`` is the day-level state (co-purchase counts and item aggregates as of the day's start),
``Tower`` the two-tower model's scores, and ``context`` each query's history before its time:
(query, item) aggregates, the last baskets, the items the user had.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from freshrec.ranking.copurchase import CoPurchase
from freshrec.ranking.events import DAY, EventLog

SOURCES = ("repeat", "tower", "copurchase", "popular")
NEVER_DAYS = 3650.0  # "days since" for an item the user never had


@dataclass
class DayState:
    """The global side of one day: co-purchase counts and item aggregates as of its start."""

    copurchase: CoPurchase
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


@dataclass
class Context:
    """What a chunk of queries knows of its users: history pairs, recent baskets, own items."""

    h: History
    has: np.ndarray  # the user has events before the query's time
    last_row: np.ndarray  # the newest such event's row
    last_basket_time: np.ndarray
    third_basket_time: np.ndarray  # the start of the user's last 3 baskets
    own: np.ndarray  # (queries, items): had it before


def context(log: EventLog, lo: np.ndarray, hi: np.ndarray, times: np.ndarray) -> Context:
    h = history(log, lo, hi, times)
    has = hi > lo
    last_row = np.maximum(hi - 1, 0)
    first_row = np.minimum(lo, len(log.basket) - 1)
    third_basket = np.maximum(log.basket[last_row] - 2, log.basket[first_row])
    third_basket_time = log.time[np.minimum(np.searchsorted(log.basket, third_basket), len(log.time) - 1)]
    own = np.zeros((len(lo), log.n_items), bool)
    real = h.query >= 0
    own[h.query[real], h.item[real]] = True
    return Context(h, has, last_row, np.where(has, log.time[last_row], -np.inf), third_basket_time, own)


def copurchase_scores(ctx: Context, day: DayState) -> tuple[np.ndarray, np.ndarray]:
    """Per query and item: sum and max of P(item | i) over the items i of the last 3 baskets."""
    h = ctx.h
    cp_sum = np.zeros(ctx.own.shape, np.float32)
    cp_max = np.zeros(ctx.own.shape, np.float32)
    recent = (h.query >= 0) & (h.last >= ctx.third_basket_time[np.maximum(h.query, 0)])
    for q in np.unique(h.query[recent]):
        strength = day.copurchase.strength(h.item[recent & (h.query == q)])
        cp_sum[q], cp_max[q] = strength.sum(0), strength.max(0)
    return cp_sum, cp_max


def new_popular(ctx: Context, day: DayState, k: int, reach: int) -> tuple[np.ndarray, np.ndarray]:
    """(query, item) of the k most popular items each user never had (looking ``reach`` deep)."""
    head = day.popular[: k + reach + 1]
    fresh = ~ctx.own[:, head]
    q, at = np.nonzero(fresh & (np.cumsum(fresh, 1) <= k))
    return q, head[at]
