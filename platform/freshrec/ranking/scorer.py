"""What one version ranks with: its towers (through an Encoder), item index, ranker and candidate counts.

The updater builds one for the candidate and one for its parent and scores both on the same
baskets; the API and the benchmark build one per loaded version.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from freshrec.ranking.candidates import CandidateConfig
from freshrec.ranking.events import BrowseLog, EventLog, epoch_seconds
from freshrec.ranking.pipeline import Queries, TowerIndex, basket_items
from freshrec.models.encoder import Encoder
from freshrec.models.ranker import Ranker


@dataclass
class RankingModel:
    encoder: Encoder
    index: TowerIndex
    ranker: Ranker | None  # None: a version made before freshrec had a ranker (towers only)
    config: CandidateConfig
    max_user_tokens: int = 128

    @classmethod
    def build(cls, encoder: Encoder, item_texts: list[str], ranker: Ranker | None, config: CandidateConfig,
              max_user_tokens: int, max_item_tokens: int) -> RankingModel:
        model = encoder.model
        index = TowerIndex(encoder.items(item_texts, max_item_tokens), float(model.log_scale.detach().exp()),
                           float(model.bias.detach()))
        return cls(encoder, index, ranker, config, max_user_tokens)


def basket_frame(rows: pd.DataFrame, limit: int | None = None) -> pd.DataFrame:
    """One row per basket (user, moment) of Feast rows, with its point-in-time text and activity.

    Over ``limit`` baskets, an evenly spaced sample: deterministic, and it spans the slice.
    """
    if len(rows) == 0:
        return pd.DataFrame(columns=["user_id", "event_timestamp", "user_text", "n_events", "n_baskets", "time"])
    baskets = (rows.sort_values(["event_timestamp", "user_id"])
               .groupby(["user_id", "event_timestamp"], sort=False, as_index=False)
               .agg(user_text=("user_text", "first"), n_events=("n_events", "first"), n_baskets=("n_baskets", "first")))
    baskets = baskets.sort_values(["event_timestamp", "user_id"]).reset_index(drop=True)
    if limit is not None and len(baskets) > limit:
        baskets = baskets.iloc[np.linspace(0, len(baskets) - 1, limit).astype(int)].reset_index(drop=True)
    baskets["time"] = epoch_seconds(baskets["event_timestamp"])
    return baskets


def basket_queries(model: RankingModel, log: EventLog, baskets: pd.DataFrame,
                   browse: BrowseLog | None = None) -> tuple[Queries, list[set[int]]]:
    """Each basket as a query at its moment, and what it bought; baskets that bought nothing (a view,
    a click) are left out: there is nothing to learn or check there. ``browse``: what each user
    viewed, clicked or carted before (candidate context, as when serving)."""
    activity = baskets[["n_events", "n_baskets"]].fillna(0).to_numpy(np.float32)
    times = baskets["time"].to_numpy(np.float64)
    browsed = browse.recent(baskets["user_id"], times) if browse is not None else None
    queries = Queries(log.user_rows(baskets["user_id"]), times, activity, np.zeros((len(baskets), 0), np.float32),
                      browsed)
    bought = basket_items(log, queries)
    keep = np.flatnonzero([len(b) > 0 for b in bought])
    texts = baskets["user_text"].to_numpy(dtype=object)[keep].tolist()
    queries = queries.take(keep)
    queries.user_vecs = model.encoder.users(texts, model.max_user_tokens)
    return queries, [bought[k] for k in keep]
