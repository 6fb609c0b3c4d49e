"""Ranking metrics over baskets: Recall@K and NDCG@K with every catalog item as a candidate."""
from __future__ import annotations

import numpy as np
import pandas as pd

from freshrec.topk import top_columns


def baskets(rows: pd.DataFrame, limit: int) -> pd.DataFrame:
    """One row per (user, moment): the profile text then, and the set of items bought."""
    grouped = rows.groupby(["user_id", "event_timestamp"], sort=True).agg(
        user_text=("user_text", "first"), items=("item_id", lambda s: set(s))
    ).reset_index()
    if len(grouped) > limit:  # evenly spaced, so the sample is deterministic and spans the slice
        grouped = grouped.iloc[np.linspace(0, len(grouped) - 1, limit).astype(int)]
    return grouped


def ranked_metrics(ranked: list, relevant: list[set], k: int) -> tuple[float, float]:
    """Mean Recall@k and NDCG@k of ranked id lists, with binary relevance.

    Recall@k is hits / min(|relevant|, k), so a perfect ranking scores 1 even when a user bought
    more than k items; NDCG@k divides by the DCG of that perfect ranking.
    """
    if len(relevant) == 0:
        return 0.0, 0.0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recalls, ndcgs = [], []
    for ids, rel in zip(ranked, relevant):
        hits = np.array([item in rel for item in list(ids)[:k]], dtype=float)
        ideal = min(len(rel), k)
        recalls.append(hits.sum() / ideal)
        ndcgs.append((hits * discounts[: len(hits)]).sum() / discounts[:ideal].sum())
    return float(np.mean(recalls)), float(np.mean(ndcgs))


def recall_ndcg(scores: np.ndarray, item_ids: np.ndarray, relevant: list[set], k: int) -> tuple[float, float]:
    """Mean Recall@k and NDCG@k of score rows (users x items) against each row's relevant items."""
    if len(relevant) == 0:
        return 0.0, 0.0
    return ranked_metrics(item_ids[top_columns(scores, k)], relevant, min(k, scores.shape[1]))
