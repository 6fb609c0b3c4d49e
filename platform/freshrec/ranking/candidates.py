"""Candidates for (user, moment) queries, with the ranker's features (``ranking.features``) for each.

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

from freshrec.ranking.context import SOURCES, DayState, Tower, context, copurchase_scores, new_popular
from freshrec.ranking.events import EventLog
from freshrec.ranking.features import FEATURES, feature_matrix

__all__ = ["FEATURES", "SOURCES", "CandidateConfig", "Candidates", "DayState", "Tower", "build", "explore_rankings"]


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


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(query, item) of each row's k best finite scores."""
    k = min(k, scores.shape[1])
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    keep = np.isfinite(np.take_along_axis(scores, top, 1))
    return np.nonzero(keep)[0], top[keep]


def explore_rankings(log: EventLog, user_rows: np.ndarray, times: np.ndarray, day: DayState, tower: Tower | None,
                     k: int) -> dict[str, list[np.ndarray]]:
    """Each explore source on its own: its top k items that are new to the user, per query.

    The reality-check paper's explore split, per source: what the towers, co-purchase and
    popularity each find that the user's own history cannot.
    """
    if len(log.time) == 0:  # nobody has a history: nothing is "new" to anyone but popular items
        return {"copurchase": [np.zeros(0, np.int64)] * len(times), "popular": [day.popular[:k]] * len(times),
                **({"tower": [np.argsort(-row)[:k] for row in tower.logits(slice(None))]} if tower else {})}
    lo, hi = log.before(user_rows, times)
    ctx = context(log, lo, hi, times)
    cp_sum, _ = copurchase_scores(ctx, day)
    scores = {"copurchase": np.where(ctx.own | (cp_sum <= 0), -np.inf, cp_sum)}
    if tower is not None:
        scores["tower"] = np.where(ctx.own, -np.inf, tower.logits(slice(None)))
    out = {}
    for name, score in scores.items():
        top = np.argsort(-score, axis=1, kind="stable")[:, :k]
        out[name] = [row[np.isfinite(score[q, row])] for q, row in enumerate(top)]
    q, items = new_popular(ctx, day, k, int(ctx.own.sum(1).max(initial=0)))
    out["popular"] = [items[q == n] for n in range(len(lo))]
    return out


def _chunk(log, lo, hi, times, activity, day: DayState, tower: Tower, rows: slice, config) -> Candidates:
    n_items = log.n_items
    ctx = context(log, lo, hi, times)
    h, own = ctx.h, ctx.own

    # repeat: the most frequent, then most recent, of the user's items
    order = np.lexsort((-h.last, -h.count, h.query))
    order = order[h.query[order] >= 0]
    first_of_query = np.searchsorted(h.query[order], h.query[order])
    keep = np.arange(len(order)) - first_of_query < config.repeat
    proposals = [(h.query[order][keep], h.item[order][keep], 0)]

    logits = tower.logits(rows)
    proposals.append((*_top(np.where(own, -np.inf, logits), config.tower), 1))

    cp_sum, cp_max = copurchase_scores(ctx, day)
    proposals.append((*_top(np.where(own | (cp_sum <= 0), -np.inf, cp_sum), config.copurchase), 2))
    # popular: the day's order minus the user's own items (looking as deep as the largest history)
    proposals.append((*new_popular(ctx, day, config.popular, int(own.sum(1).max(initial=0))), 3))

    keys = np.concatenate([q.astype(np.int64) * n_items + i for q, i, _ in proposals])
    bits = np.concatenate([np.full(len(q), 1 << b, np.uint8) for q, _, b in proposals])
    order = np.argsort(keys, kind="stable")
    keys, starts = np.unique(keys[order], return_index=True)
    bits = np.bitwise_or.reduceat(bits[order], starts) if len(keys) else bits[:0]
    cq, ci = keys // n_items, keys % n_items
    features = feature_matrix(log, ctx, lo, hi, times, activity, day, keys, bits, logits, cp_sum, cp_max)
    return Candidates(cq, ci, bits, features)
