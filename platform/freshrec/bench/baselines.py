"""The baselines the pipeline must beat, each from the same event log and day state as the pipeline.

- popularity and P-TopFreq: ``freshrec.ranking.baselines`` (the gate anchors on P-TopFreq too);
- TIFU-KNN (Hu et al., SIGIR 2020), following the authors' reference implementation
  (github.com/HaojiHu/TIFUKNN): each basket a 0/1 vector decayed by r_b per basket of age; the
  baskets in ``groups`` consecutive groups, averaged; the groups decayed by r_g per group of age
  and averaged into the user's vector; the prediction alpha * own + (1 - alpha) * the mean of the
  k nearest users' vectors (Euclidean).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from freshrec.ranking.events import EventLog


@dataclass
class TifuKnn:
    neighbours: int = 300
    basket_decay: float = 0.9  # r_b
    group_decay: float = 0.7  # r_g
    alpha: float = 0.7
    groups: int = 7

    def user_vector(self, baskets: list[np.ndarray], n_items: int) -> np.ndarray:
        n = len(baskets)
        decayed = np.zeros((n, n_items), np.float32)
        for i, b in enumerate(baskets):
            decayed[i, b] = self.basket_decay ** (n - 1 - i)
        if n < self.groups:
            groups = list(decayed)
        else:
            # As the reference splits n baskets: the older groups of n // groups baskets, the
            # newest (n mod groups) groups one basket larger.
            base, larger = divmod(n, self.groups)
            sizes = [base] * (self.groups - larger) + [base + 1] * larger
            bounds = np.concatenate([[0], np.cumsum(sizes)])
            groups = [decayed[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])]
        # The reference decays group i by r_g ** (groups - 1 - i) even when there are fewer groups.
        weights = self.group_decay ** (self.groups - 1 - np.arange(len(groups), dtype=np.float32))
        return (weights[:, None] * np.stack(groups)).sum(0) / len(groups)

    def rank(self, log: EventLog, user_rows: np.ndarray, clock: float, k: int) -> list[np.ndarray]:
        """Top k per queried user; neighbours are every other user with history before the clock."""
        everyone = np.flatnonzero(log.time[log.start[:-1]] < clock) if len(log.users) else np.zeros(0, int)
        lo, hi = log.before(everyone, np.full(len(everyone), clock))
        vectors = np.zeros((len(everyone), log.n_items), np.float32)
        for n, (a, b) in enumerate(zip(lo, hi)):
            cuts = np.flatnonzero(np.diff(log.basket[a:b])) + 1
            vectors[n] = self.user_vector(np.split(log.item[a:b], cuts), log.n_items)
        position = {u: n for n, u in enumerate(everyone)}
        queried = np.array([position[u] for u in user_rows])
        squared = (vectors**2).sum(1)
        out = []
        for start in range(0, len(queried), 256):
            rows = queried[start : start + 256]
            distance = squared[rows, None] - 2 * vectors[rows] @ vectors.T + squared[None, :]
            distance[np.arange(len(rows)), rows] = np.inf  # not one's own neighbour
            near = np.argpartition(distance, min(self.neighbours, len(everyone) - 1) - 1, axis=1)[:, : self.neighbours]
            scores = self.alpha * vectors[rows] + (1 - self.alpha) * vectors[near].mean(1)
            top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            out.extend(top)
        return out
