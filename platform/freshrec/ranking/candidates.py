"""Candidates for (user, moment) queries, and the ranker's features for each.

Four sources propose items:
- ``repeat``: the user's own items, most often then most recently bought first;
- ``tower``: the two-tower model's nearest items, the user's own excluded (explore);
- ``copurchase``: items bought together with those of the user's last 3 baskets, own excluded;
- ``popular``: the most interacted-with items of the last 28 days, own excluded (the fallback).

Point in time: a query at t sees the user's events strictly before t, and the co-purchase counts
and item aggregates as of the start of t's day (``DayState``). Everything is a fixed transform of
counts and times (logs, decays), so a parent's ranker weights stay meaningful for its children.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from freshrec.ranking.copurchase import CoPurchase
from freshrec.ranking.events import DAY, EventLog

SOURCES = ("repeat", "tower", "copurchase", "popular")
FEATURES = (
    # the user and this item
    "log_count", "log_days_since", "bought", "decay_7d", "decay_30d", "decay_90d", "share_of_baskets",
    "in_last_basket", "in_last_3_baskets", "interval_ratio", "log_count_90d",
    # the user
    "log_user_baskets", "log_user_events", "log_days_since_last_basket", "log_tenure_days", "user_repeat_share",
    # the item
    "log_events_7d", "log_events_28d", "trend", "log_buyers", "repurchase_rate", "log_popularity_rank",
    # co-purchase with the last 3 baskets, and the text model
    "copurchase_sum", "copurchase_max", "tower_logit", "tower_gap",
    # who proposed it
    "from_repeat", "from_tower", "from_copurchase", "from_popular",
)
NEVER_DAYS = 3650.0  # "days since" for an item the user never had


@dataclass
class CandidateConfig:
    repeat: int = field(default=100, metadata={"help": "most of the user's own items kept as candidates"})
    tower: int = field(default=30, metadata={"help": "the text model's nearest new items"})
    copurchase: int = field(default=30, metadata={"help": "new items bought with the last 3 baskets"})
    popular: int = field(default=20, metadata={"help": "popular new items (the fallback)"})

    def __post_init__(self) -> None:
        for name in ("repeat", "tower", "copurchase", "popular"):
            if getattr(self, name) < 0:
                raise ValueError(f"invalid candidate count {name}={getattr(self, name)!r}")


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


@dataclass
class Candidates:
    query: np.ndarray  # per candidate: which query (0-based, in the caller's order)
    item: np.ndarray  # item row
    sources: np.ndarray  # bit i set: SOURCES[i] proposed it
    features: np.ndarray  # float32, one column per FEATURES name

    def __len__(self) -> int:
        return len(self.item)

    def source_names(self, k: int) -> list[str]:
        return [name for bit, name in enumerate(SOURCES) if self.sources[k] >> bit & 1]

    @classmethod
    def concat(cls, parts: list[Candidates]) -> Candidates:
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8),
                       np.zeros((0, len(FEATURES)), np.float32))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("query", "item", "sources", "features")))


def build(log: EventLog, user_rows: np.ndarray, times: np.ndarray, activity: np.ndarray, day: DayState,
          tower: Tower, config: CandidateConfig, chunk: int = 256) -> Candidates:
    """Candidates and features of each query (user row, time); ``activity`` is (n_events, n_baskets) per query."""
    lo, hi = log.before(user_rows, times)
    parts = []
    if len(log.time) == 0:  # nobody has a history: nothing to rank (callers serve popular items)
        return Candidates.concat(parts)
    for start in range(0, len(lo), chunk):
        rows = slice(start, start + chunk)
        part = _chunk(log, lo[rows], hi[rows], times[rows], activity[rows], day, tower, rows, config)
        part.query += start
        parts.append(part)
    return Candidates.concat(parts)


def _ranges(lo: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated aranges lo[i]:lo[i]+lengths[i]."""
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(lengths.sum()) - offsets + np.repeat(lo, lengths)


@dataclass
class _History:
    """Per (query, item) aggregates of each query's events before its time."""

    key: np.ndarray  # query * n_items + item, sorted
    query: np.ndarray
    item: np.ndarray
    count: np.ndarray  # baskets with the item
    last: np.ndarray  # time of the newest such basket
    first: np.ndarray
    decay: np.ndarray  # (pairs, 3): sum of exp(-age / tau), tau = 7, 30, 90 days
    count_90d: np.ndarray


def _history(log: EventLog, lo: np.ndarray, hi: np.ndarray, times: np.ndarray) -> _History:
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
        return _History(np.array([-1]), np.array([-1]), np.array([-1]), np.zeros(1), np.zeros(1), np.zeros(1),
                        np.zeros((1, 3)), np.zeros(1))
    return _History(key, key // n_items, key % n_items, np.bincount(inverse, minlength=len(key)).astype(np.float64),
                    last, first, decay, np.bincount(inverse, (age < 90).astype(float), len(key)))


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(query, item) of each row's k best finite scores."""
    k = min(k, scores.shape[1])
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    keep = np.isfinite(np.take_along_axis(scores, top, 1))
    return np.nonzero(keep)[0], top[keep]


@dataclass
class _Context:
    """What a chunk of queries knows of its users: history pairs, recent baskets, own items."""

    h: _History
    has: np.ndarray  # the user has events before the query's time
    last_row: np.ndarray  # the newest such event's row
    last_basket_time: np.ndarray
    third_basket_time: np.ndarray  # the start of the user's last 3 baskets
    own: np.ndarray  # (queries, items): had it before


def _context(log: EventLog, lo: np.ndarray, hi: np.ndarray, times: np.ndarray) -> _Context:
    h = _history(log, lo, hi, times)
    has = hi > lo
    last_row = np.maximum(hi - 1, 0)
    first_row = np.minimum(lo, len(log.basket) - 1)
    third_basket = np.maximum(log.basket[last_row] - 2, log.basket[first_row])
    third_basket_time = log.time[np.minimum(np.searchsorted(log.basket, third_basket), len(log.time) - 1)]
    own = np.zeros((len(lo), log.n_items), bool)
    real = h.query >= 0
    own[h.query[real], h.item[real]] = True
    return _Context(h, has, last_row, np.where(has, log.time[last_row], -np.inf), third_basket_time, own)


def _copurchase(ctx: _Context, day: DayState) -> tuple[np.ndarray, np.ndarray]:
    """Per query and item: sum and max of P(item | i) over the items i of the last 3 baskets."""
    h = ctx.h
    cp_sum = np.zeros(ctx.own.shape, np.float32)
    cp_max = np.zeros(ctx.own.shape, np.float32)
    recent = (h.query >= 0) & (h.last >= ctx.third_basket_time[np.maximum(h.query, 0)])
    for q in np.unique(h.query[recent]):
        strength = day.copurchase.strength(h.item[recent & (h.query == q)])
        cp_sum[q], cp_max[q] = strength.sum(0), strength.max(0)
    return cp_sum, cp_max


def _new_popular(ctx: _Context, day: DayState, k: int, reach: int) -> tuple[np.ndarray, np.ndarray]:
    """(query, item) of the k most popular items each user never had (looking ``reach`` deep)."""
    head = day.popular[: k + reach + 1]
    fresh = ~ctx.own[:, head]
    q, at = np.nonzero(fresh & (np.cumsum(fresh, 1) <= k))
    return q, head[at]


def explore_rankings(log: EventLog, user_rows: np.ndarray, times: np.ndarray, day: DayState, tower: Tower | None,
                     k: int) -> dict[str, list[np.ndarray]]:
    """Each explore source on its own: its top k items that are new to the user, per query.

    The reality-check paper's explore split, per source: what the towers, co-purchase and
    popularity each find that the user's own history cannot.
    """
    lo, hi = log.before(user_rows, times)
    ctx = _context(log, lo, hi, times)
    cp_sum, _ = _copurchase(ctx, day)
    scores = {"copurchase": np.where(ctx.own | (cp_sum <= 0), -np.inf, cp_sum)}
    if tower is not None:
        scores["tower"] = np.where(ctx.own, -np.inf, tower.logits(slice(None)))
    out = {}
    for name, score in scores.items():
        top = np.argsort(-score, axis=1, kind="stable")[:, :k]
        out[name] = [row[np.isfinite(score[q, row])] for q, row in enumerate(top)]
    q, items = _new_popular(ctx, day, k, int(ctx.own.sum(1).max(initial=0)))
    out["popular"] = [items[q == n] for n in range(len(lo))]
    return out


def _chunk(log, lo, hi, times, activity, day: DayState, tower: Tower, rows: slice, config) -> Candidates:
    n_items = log.n_items
    ctx = _context(log, lo, hi, times)
    h, has, last_row, own = ctx.h, ctx.has, ctx.last_row, ctx.own
    last_basket_time, third_basket_time = ctx.last_basket_time, ctx.third_basket_time

    # repeat: the most frequent, then most recent, of the user's items
    order = np.lexsort((-h.last, -h.count, h.query))
    order = order[h.query[order] >= 0]
    first_of_query = np.searchsorted(h.query[order], h.query[order])
    keep = np.arange(len(order)) - first_of_query < config.repeat
    proposals = [(h.query[order][keep], h.item[order][keep], 0)]

    logits = tower.logits(rows)
    proposals.append((*_top(np.where(own, -np.inf, logits), config.tower), 1))

    cp_sum, cp_max = _copurchase(ctx, day)
    proposals.append((*_top(np.where(own | (cp_sum <= 0), -np.inf, cp_sum), config.copurchase), 2))
    # popular: the day's order minus the user's own items (looking as deep as the repeat list)
    proposals.append((*_new_popular(ctx, day, config.popular, config.repeat), 3))

    keys = np.concatenate([q.astype(np.int64) * n_items + i for q, i, _ in proposals])
    bits = np.concatenate([np.full(len(q), 1 << b, np.uint8) for q, _, b in proposals])
    order = np.argsort(keys, kind="stable")
    keys, starts = np.unique(keys[order], return_index=True)
    bits = np.bitwise_or.reduceat(bits[order], starts) if len(keys) else bits[:0]
    cq, ci = keys // n_items, keys % n_items

    # the user and this item
    at = np.minimum(np.searchsorted(h.key, keys), len(h.key) - 1)
    found = h.key[at] == keys
    count = np.where(found, h.count[at], 0.0)
    last = np.where(found, h.last[at], -np.inf)
    first = np.where(found, h.first[at], np.inf)
    days_since = np.where(found, (times[cq] - last) / DAY, NEVER_DAYS)
    interval = np.where(count > 1, (last - first) / DAY / np.maximum(count - 1, 1), 0.0)
    decay = np.where(found[:, None], h.decay[at], 0.0)
    baskets = np.where(has, log.basket[last_row] - log.basket[np.minimum(lo, len(log.basket) - 1)] + 1, 0)[cq]
    cumulative_repeat = np.concatenate([[0], np.cumsum(log.repeat)])
    repeat_share = (cumulative_repeat[hi] - cumulative_repeat[lo]) / np.maximum(hi - lo, 1)
    stats = day.item_stats[ci].astype(np.float64)
    logit = logits[cq, ci]
    columns = {
        "log_count": np.log1p(count),
        "log_days_since": np.log1p(days_since),
        "bought": found,
        "decay_7d": decay[:, 0], "decay_30d": decay[:, 1], "decay_90d": decay[:, 2],
        "share_of_baskets": count / np.maximum(baskets, 1),
        "in_last_basket": found & (last == last_basket_time[cq]),
        "in_last_3_baskets": found & (last >= third_basket_time[cq]),
        "interval_ratio": np.where(count > 1, np.log1p(days_since) - np.log1p(interval), 0.0),
        "log_count_90d": np.log1p(np.where(found, h.count_90d[at], 0.0)),
        "log_user_baskets": np.log1p(activity[cq, 1]),
        "log_user_events": np.log1p(activity[cq, 0]),
        "log_days_since_last_basket": np.log1p(np.where(has, (times - last_basket_time) / DAY, NEVER_DAYS))[cq],
        "log_tenure_days": np.log1p(np.where(has, (times - log.time[np.minimum(lo, len(log.time) - 1)]) / DAY, 0.0))[cq],
        "user_repeat_share": repeat_share[cq],
        "log_events_7d": np.log1p(stats[:, 0]),
        "log_events_28d": np.log1p(stats[:, 1]),
        "trend": np.log1p(4 * stats[:, 0]) - np.log1p(stats[:, 1]),
        "log_buyers": np.log1p(stats[:, 2]),
        "repurchase_rate": (stats[:, 3] + 0.1) / (stats[:, 2] + 1.0),
        "log_popularity_rank": np.log1p(day.popularity_rank[ci]),
        "copurchase_sum": cp_sum[cq, ci],
        "copurchase_max": cp_max[cq, ci],
        "tower_logit": logit,
        "tower_gap": logits.max(1)[cq] - logit,
        **{f"from_{name}": (bits >> b) & 1 for b, name in enumerate(SOURCES)},
    }
    features = np.stack([np.asarray(columns[name], np.float32) for name in FEATURES], 1)
    return Candidates(cq, ci, bits, features)
