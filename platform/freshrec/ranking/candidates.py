"""Candidates for (user, moment) queries, with the ranker's features (``ranking.features``) for each.

Five sources propose items:
- ``repeat``: the user's own items, most often then most recently bought first;
- ``tower``: the two-tower model's nearest items, the user's own excluded (explore);
- ``copurchase``: items bought together with those of the user's last 3 baskets, and with what they
  browsed since (views, clicks, carts), own excluded;
- ``popular``: the most interacted-with items of the last 28 days, own excluded (the fallback);
- ``browsed``: items the user viewed, clicked or carted and has not bought.

Point in time: a query at t sees the user's events strictly before t, and the co-purchase counts
and item aggregates as of the start of t's day (``DayState``). Everything is a fixed transform of
counts and times (logs, decays), so a parent's ranker weights stay meaningful for its children.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from freshrec.ranking.context import (
    SOURCES,
    DayState,
    Tower,
    context,
    copurchase_scores,
    new_popular,
    top_per_query,
)
from freshrec.ranking.events import EventLog
from freshrec.ranking.features import FEATURES, feature_matrix
from freshrec.topk import top_columns

__all__ = ["FEATURES", "SOURCES", "CandidateConfig", "Candidates", "DayState", "Tower", "build", "explore_rankings"]


@dataclass
class CandidateConfig:
    repeat: int = field(default=100, metadata={"help": "most of the user's own items kept as candidates"})
    tower: int = field(default=30, metadata={"help": "the text model's nearest new items"})
    copurchase: int = field(default=30, metadata={"help": "new items bought with the last 3 baskets (and what was browsed)"})
    popular: int = field(default=20, metadata={"help": "popular new items (the fallback)"})
    browsed: int = field(default=20, metadata={"help": "items viewed, clicked or carted and not bought"})

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"invalid candidate count {f.name}={getattr(self, f.name)!r}")


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
          tower: Tower, config: CandidateConfig, browsed: list[np.ndarray] | None = None, chunk: int = 256) -> Candidates:
    """Candidates and features of each query (user row, time); ``activity`` is (n_events, n_baskets) per
    query, ``browsed`` what each query's user browsed before its time (item rows, newest first)."""
    lo, hi = log.before(user_rows, times)
    browsed = browsed if browsed is not None else [np.zeros(0, np.int64)] * len(times)
    parts = []
    for start in range(0, len(lo), chunk):
        rows = slice(start, start + chunk)
        part = _chunk(log, lo[rows], hi[rows], times[rows], activity[rows], day, tower, rows, config, browsed[rows])
        part.query += start
        parts.append(part)
    return Candidates.concat(parts)


def _own_masked(logits: np.ndarray, ctx) -> np.ndarray:
    """The logits with each query's own items set to -inf (a copy)."""
    masked = logits.copy()
    real = ctx.h.query >= 0
    masked[ctx.h.query[real], ctx.h.item[real]] = -np.inf
    return masked


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(query, item) of each row's k best finite scores."""
    top = top_columns(scores, k)
    keep = np.isfinite(np.take_along_axis(scores, top, 1))
    return np.nonzero(keep)[0], top[keep]


def _new_copurchase(ctx, scores, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(query, item) of each query's k strongest co-purchase partners it never bought."""
    query, item = scores.key // ctx.n_items, scores.key % ctx.n_items
    new = ~ctx.owns(query, item)
    return top_per_query(query[new], item[new], scores.sum[new], k)


def explore_rankings(log: EventLog, user_rows: np.ndarray, times: np.ndarray, day: DayState, tower: Tower | None,
                     k: int) -> dict[str, list[np.ndarray]]:
    """Each explore source on its own: its top k items that are new to the user, per query.

    The reality-check paper's explore split, per source: what the towers, co-purchase and
    popularity each find that the user's own history cannot.
    """
    lo, hi = log.before(user_rows, times)
    ctx = context(log, lo, hi, times)
    n = len(lo)

    def per_query(query: np.ndarray, item: np.ndarray) -> list[np.ndarray]:
        bounds = np.searchsorted(query, np.arange(n + 1))
        return [item[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    out = {"copurchase": per_query(*_new_copurchase(ctx, copurchase_scores(ctx, day), k)),
           "popular": per_query(*new_popular(ctx, day, k))}
    if tower is not None:
        masked = _own_masked(tower.logits(slice(None)), ctx)
        top = np.argsort(-masked, axis=1, kind="stable")[:, :k]
        out["tower"] = [row[np.isfinite(masked[q, row])] for q, row in enumerate(top)]
    return out


def _chunk(log, lo, hi, times, activity, day: DayState, tower: Tower, rows: slice, config, browsed) -> Candidates:
    n_items = log.n_items
    ctx = context(log, lo, hi, times, browsed)
    h = ctx.h

    # repeat: the most frequent, then most recent, of the user's items
    order = np.lexsort((-h.last, -h.count, h.query))
    order = order[h.query[order] >= 0]
    first_of_query = np.searchsorted(h.query[order], h.query[order])
    keep = np.arange(len(order)) - first_of_query < config.repeat
    proposals = [(h.query[order][keep], h.item[order][keep], SOURCES.index("repeat"))]

    logits = tower.logits(rows)
    proposals.append((*_top(_own_masked(logits, ctx), config.tower), SOURCES.index("tower")))
    # Proposals also follow what the user browsed; the features stay purchase-based (see BrowseLog).
    # Without browsing the two are the same scores: computed once (a tenth of a request's ranking).
    bought_copurchase = copurchase_scores(ctx, day)
    proposing = copurchase_scores(ctx, day, with_browsed=True) if any(len(b) for b in browsed) else bought_copurchase
    proposals.append((*_new_copurchase(ctx, proposing, config.copurchase), SOURCES.index("copurchase")))
    proposals.append((*new_popular(ctx, day, config.popular), SOURCES.index("popular")))
    bq = np.repeat(np.arange(len(browsed)), [min(len(b), config.browsed) for b in browsed])
    bi = np.concatenate([b[: config.browsed] for b in browsed]) if len(bq) else np.zeros(0, np.int64)
    not_bought = ~ctx.owns(bq, bi)
    proposals.append((bq[not_bought], bi[not_bought], SOURCES.index("browsed")))

    keys = np.concatenate([q.astype(np.int64) * n_items + i for q, i, _ in proposals])
    bits = np.concatenate([np.full(len(q), 1 << b, np.uint8) for q, _, b in proposals])
    order = np.argsort(keys, kind="stable")
    keys, starts = np.unique(keys[order], return_index=True)
    bits = np.bitwise_or.reduceat(bits[order], starts) if len(keys) else bits[:0]
    cq, ci = keys // n_items, keys % n_items
    features = feature_matrix(log, ctx, lo, hi, times, activity, day, keys, bits, logits, bought_copurchase)
    return Candidates(cq, ci, bits, features)
