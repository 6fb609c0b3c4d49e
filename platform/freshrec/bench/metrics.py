"""Per-user ranking metrics, split into repeat and explore, and bootstrap confidence intervals.

Repeat and explore as in Li et al., "A Next Basket Recommendation Reality Check" (TOIS 2023): of
the items a user buys in the test week, *repeat* items are those the user had before, *explore*
items are new to them. Each metric is computed on the whole truth and on each part, with the same
top 20: Recall@k = hits / min(|truth part|, k) and NDCG@k with binary relevance, over the users
whose part is not empty.

Confidence intervals resample users (a cluster bootstrap: a user's weeks go together), so they
say how much a mean over these users could move on another draw of users.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("recall", "ndcg", "recall_repeat", "ndcg_repeat", "recall_explore", "ndcg_explore")


def _recall_ndcg(ranked: list, relevant: set, k: int) -> tuple[float, float]:
    if not relevant:
        return np.nan, np.nan
    hits = np.array([item in relevant for item in list(ranked)[:k]], dtype=float)
    ideal = min(len(relevant), k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    # min(1, .): the two sums run over arrays of different lengths and may differ in the last bit.
    return hits.sum() / ideal, min(1.0, (hits * discounts[: len(hits)]).sum() / discounts[:ideal].sum())


def user_metrics(ranked: list, truth: set, history: set, k: int) -> dict[str, float]:
    """The six metrics of one user's top k (NaN where that part of the truth is empty)."""
    out = {}
    for suffix, part in (("", truth), ("_repeat", truth & history), ("_explore", truth - history)):
        out[f"recall{suffix}"], out[f"ndcg{suffix}"] = _recall_ndcg(ranked, part, k)
    return out


def bootstrap(frame: pd.DataFrame, value: str, draws: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``value`` over (user, week) rows and its 95% interval, resampling users."""
    rows = frame.dropna(subset=[value])
    if rows.empty:
        return np.nan, np.nan, np.nan
    per_user = rows.groupby("user")[value].agg(["sum", "count"])
    sums, counts = per_user["sum"].to_numpy(), per_user["count"].to_numpy()
    weights = np.random.default_rng(seed).multinomial(len(sums), np.full(len(sums), 1 / len(sums)), size=draws)
    means = (weights @ sums) / np.maximum(weights @ counts, 1)
    return float(sums.sum() / counts.sum()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def as_interval(values: tuple[float, float, float]) -> dict:
    """(mean, lo, hi), as ``bootstrap`` and ``ratio_interval`` return them, for JSON."""
    return dict(zip(("mean", "lo", "hi"), values))


def ratio_interval(frame: pd.DataFrame, arm: str, reference: str, value: str, draws: int = 1000,
                   seed: int = 0) -> tuple[float, float, float]:
    """mean(arm) / mean(reference) over the same (user, week) rows, with a paired 95% interval."""
    pair = frame[frame["arm"].isin([arm, reference])].pivot_table(index=["user", "week"], columns="arm", values=value)
    pair = pair.dropna()
    if pair.empty or arm not in pair or reference not in pair:
        return np.nan, np.nan, np.nan
    per_user = pair.groupby(level="user").sum()
    a, b = per_user[arm].to_numpy(), per_user[reference].to_numpy()
    weights = np.random.default_rng(seed).multinomial(len(a), np.full(len(a), 1 / len(a)), size=draws)
    ratios = (weights @ a) / np.maximum(weights @ b, 1e-12)
    return float(a.sum() / b.sum()), float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))
