"""Baselines from the same event log and day state as the pipeline.

- popularity: the k most interacted-with items of the last 28 days, for everyone;
- P-TopFreq: the user's own most frequent items (ties: most recent), filled with popular ones. The
  benchmark's reference, and the gate's absolute anchor: a version must rank the held-out baskets
  at least as well as "buy it again" does.
"""
from __future__ import annotations

import numpy as np

from freshrec.ranking.candidates import DayState
from freshrec.ranking.events import EventLog


def popularity(day: DayState, n_users: int, k: int) -> list[np.ndarray]:
    return [day.popular[:k]] * n_users


def p_topfreq(log: EventLog, user_rows: np.ndarray, clock, day: DayState, k: int) -> list[np.ndarray]:
    """Each user's top k as of ``clock`` (one time, or one per user): own history first, then popular."""
    lo, hi = log.before(user_rows, np.broadcast_to(np.asarray(clock, np.float64), (len(user_rows),)))
    out = []
    for a, b in zip(lo, hi):
        items, first = np.unique(log.item[a:b][::-1], return_index=True)  # first seen from the newest
        counts = np.bincount(np.searchsorted(items, log.item[a:b]), minlength=len(items))
        mine = items[np.lexsort((first, -counts))][:k]
        fill = [i for i in day.popular[: k + len(mine)] if i not in set(mine.tolist())]
        out.append(np.concatenate([mine, np.array(fill[: k - len(mine)], dtype=mine.dtype)]))
    return out
