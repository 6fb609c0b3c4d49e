"""The ranker's features of each (query, candidate): fixed transforms of counts and times.

Fixed (logs, decays; no fitted statistics) so that a parent's weights stay meaningful for its
children; the ranker's own input scaling is set once, by the first version.
"""
from __future__ import annotations

import numpy as np

from freshrec.ranking.context import NEVER_DAYS, SOURCES, Context, DayState, PairScores
from freshrec.ranking.events import DAY, EventLog

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
    # who proposed it (not "browsed": a feature joins when a benchmark on browsing data shows it helps)
    "from_repeat", "from_tower", "from_copurchase", "from_popular",
)


def feature_matrix(log: EventLog, ctx: Context, lo: np.ndarray, hi: np.ndarray, times: np.ndarray, activity: np.ndarray,
                   day: DayState, keys: np.ndarray, bits: np.ndarray, logits: np.ndarray,
                   copurchase: PairScores) -> np.ndarray:
    """float32 (candidates, FEATURES) for candidate keys query * n_items + item."""
    n_items = log.n_items
    cq, ci = keys // n_items, keys % n_items
    h, has, last_row = ctx.h, ctx.has, ctx.last_row
    last_basket_time, third_basket_time = ctx.last_basket_time, ctx.third_basket_time
    # the user and this item
    at = np.minimum(np.searchsorted(h.key, keys), len(h.key) - 1)
    found = h.key[at] == keys
    count = np.where(found, h.count[at], 0.0)
    last = np.where(found, h.last[at], -np.inf)
    first = np.where(found, h.first[at], np.inf)
    days_since = np.where(found, (times[cq] - last) / DAY, NEVER_DAYS)
    interval = np.where(count > 1, (last - first) / DAY / np.maximum(count - 1, 1), 0.0)
    decay = np.where(found[:, None], h.decay[at], 0.0)
    baskets = np.where(has, log.at("basket", last_row) - log.at("basket", lo) + 1, 0)[cq]
    cumulative_repeat = np.concatenate([[0], np.cumsum(log.repeat)])
    repeat_share = (cumulative_repeat[hi] - cumulative_repeat[lo]) / np.maximum(hi - lo, 1)
    stats = day.item_stats[ci].astype(np.float64)
    logit = logits[cq, ci]
    cp_sum, cp_max = copurchase.lookup(keys)
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
        "log_tenure_days": np.log1p(np.where(has, (times - log.at("time", lo)) / DAY, 0.0))[cq],
        "user_repeat_share": repeat_share[cq],
        "log_events_7d": np.log1p(stats[:, 0]),
        "log_events_28d": np.log1p(stats[:, 1]),
        "trend": np.log1p(4 * stats[:, 0]) - np.log1p(stats[:, 1]),
        "log_buyers": np.log1p(stats[:, 2]),
        "repurchase_rate": (stats[:, 3] + 0.1) / (stats[:, 2] + 1.0),
        "log_popularity_rank": np.log1p(day.popularity_rank[ci]),
        "copurchase_sum": cp_sum,
        "copurchase_max": cp_max,
        "tower_logit": logit,
        "tower_gap": logits.max(1)[cq] - logit,
        **{f"from_{name}": (bits >> b) & 1 for b, name in enumerate(SOURCES)},
    }
    return np.stack([np.asarray(columns[name], np.float32) for name in FEATURES], 1)
