"""Scoring a search pipeline on queries with known relevant items: hit@k, reciprocal rank, NDCG@k."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from freshrec.search import lexical
from freshrec.search.pipeline import SearchPipeline

K = 10


# Connections the lexical leg's queries are spread over. Each query ranks every document matching one
# of its words, so its cost grows with the catalog; one at a time, the gate's 2,200 queries took 12 s
# of an update at 10x the bundled shop (6 s on two), with a core idle. The work is the database's: this
# counts this machine's cores, right where the server runs here (the embedded default) and a floor
# for a server of its own.
LEXICAL_CONNECTIONS = max(1, min(4, os.cpu_count() or 1))


def lexical_results(engine, pipeline: SearchPipeline, queries: list[str]) -> list[list[str]]:
    """The lexical leg of each query (SQL): computed once, shared by every pipeline scored on them;
    contiguous shares of the queries run on connections of their own, at once."""
    def share(part: list[str]) -> list[list[str]]:
        with engine.connect() as conn:
            return [[item for item, _ in lexical.search(conn, q, pipeline.vocabulary, pipeline.config.depth)]
                    for q in part]

    size = -(-len(queries) // LEXICAL_CONNECTIONS) or 1
    parts = [queries[i:i + size] for i in range(0, len(queries), size)]
    if len(parts) <= 1:
        return share(queries)
    with ThreadPoolExecutor(len(parts)) as pool:
        return [found for part in pool.map(share, parts) for found in part]


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
