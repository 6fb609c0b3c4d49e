"""Scoring a search pipeline on queries with known relevant items: hit@k, reciprocal rank, NDCG@k."""
from __future__ import annotations

import numpy as np

from freshrec.search import lexical
from freshrec.search.pipeline import SearchPipeline

K = 10


def lexical_results(conn, pipeline: SearchPipeline, queries: list[str]) -> list[list[str]]:
    """The lexical leg of each query (SQL): computed once, shared by every pipeline scored on them."""
    return [[item for item, _ in lexical.search(conn, q, pipeline.vocabulary, pipeline.config.depth)] for q in queries]


def query_metrics(ranked: list[str], relevant: set, k: int = K) -> dict[str, float]:
    """hit@k (any relevant item in the top k), reciprocal rank of the first one (0 past k), NDCG@k."""
    top = ranked[:k]
    gains = np.array([item in relevant for item in top], dtype=float)
    first = int(np.argmax(gains)) if gains.any() else None
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = discounts[: min(len(relevant), k)].sum()
    return {"hit": float(gains.any()), "rr": 0.0 if first is None else 1.0 / (first + 1),
            "ndcg": float((gains * discounts[: len(gains)]).sum() / ideal) if ideal else 0.0}


def score(pipeline: SearchPipeline, queries: list[str], relevant: list[set], lexical_lists: list[list[str]],
          popularity, histories=None, k: int = K) -> list[dict[str, float]]:
    """Per-query metrics of the pipeline's top k."""
    ranked = pipeline.rank(queries, lexical_lists, popularity, histories, k)
    return [query_metrics([h.item_id for h in hits], rel, k) for hits, rel in zip(ranked, relevant)]


def summary(rows: list[dict[str, float]]) -> dict:
    """Means over queries (None without any)."""
    if not rows:
        return {"hit": None, "rr": None, "ndcg": None, "queries": 0}
    return {**{m: float(np.mean([r[m] for r in rows])) for m in ("hit", "rr", "ndcg")}, "queries": len(rows)}
