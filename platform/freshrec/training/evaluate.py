"""Ranking metrics over baskets: Recall@K and NDCG@K with every catalog item as a candidate."""
from __future__ import annotations

import numpy as np
import pandas as pd


def baskets(rows: pd.DataFrame, limit: int) -> pd.DataFrame:
    """One row per (user, moment): the profile text then, and the set of items bought."""
    grouped = rows.groupby(["user_id", "event_timestamp"], sort=True).agg(
        user_text=("user_text", "first"), items=("item_id", lambda s: set(s))
    ).reset_index()
    if len(grouped) > limit:  # evenly spaced, so the sample is deterministic and spans the slice
        grouped = grouped.iloc[np.linspace(0, len(grouped) - 1, limit).astype(int)]
    return grouped


def recall_ndcg(scores: np.ndarray, item_ids: np.ndarray, relevant: list[set], k: int) -> tuple[float, float]:
    """Mean Recall@k (hits / min(|relevant|, k), so a perfect ranking scores 1) and NDCG@k."""
    if len(relevant) == 0:
        return 0.0, 0.0
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    top = np.take_along_axis(top, order, axis=1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recalls, ndcgs = [], []
    for ranked, rel in zip(item_ids[top], relevant):
        hits = np.array([item in rel for item in ranked], dtype=float)
        ideal = min(len(rel), k)
        recalls.append(hits.sum() / ideal)
        ndcgs.append((hits * discounts).sum() / discounts[:ideal].sum())
    return float(np.mean(recalls)), float(np.mean(ndcgs))
