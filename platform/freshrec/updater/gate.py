"""The gate: the candidate version's whole pipeline against its parent's.

Two slices: the newest held-out baskets of the cut (``gate_rows``: neither version trained on
them, and they did not choose the epoch) and a guard sample of older baskets, not replayed in this
update (forgetting: both versions' lineage learned from them). Each is scored with Recall@K
and NDCG@K of the pipeline's top K against the basket's items. The candidate passes when it
trails its parent by at most ``tolerance`` *of the parent's score* on all four. A slice with no
baskets is no evidence: the candidate is rejected (``--no-gate`` promotes without comparing).
"""
from __future__ import annotations

import pandas as pd

from freshrec.ranking import inputs
from freshrec.ranking.events import EventLog
from freshrec.ranking.model import RankingModel, basket_frame, basket_queries
from freshrec.ranking.pipeline import rank
from freshrec.training.args import GateArguments
from freshrec.training.evaluate import ranked_metrics

SLICES = ("gate", "guard")
METRICS = ("recall", "ndcg")


def slice_baskets(gate_rows: pd.DataFrame, guard_rows: pd.DataFrame, trained: pd.DataFrame,
                  limit: int) -> dict[str, pd.DataFrame]:
    """Each slice's baskets; a guard basket that shares a moment with a trained row is dropped."""
    seen = set(zip(trained["user_id"], trained["event_timestamp"]))
    guard = guard_rows[[k not in seen for k in zip(guard_rows["user_id"], guard_rows["event_timestamp"])]]
    return {"gate": basket_frame(gate_rows, limit), "guard": basket_frame(guard, limit)}


def score(model: RankingModel, log: EventLog, baskets: pd.DataFrame, days: inputs.OfflineDays, k: int) -> dict:
    """Recall@k and NDCG@k of the pipeline's top k against each basket's own items."""
    queries, bought = basket_queries(model, log, baskets) if len(baskets) else (None, [])
    if not bought:
        return {"recall": None, "ndcg": None, "baskets": 0}
    cands, _, tops = rank(log, queries, model.index, model.ranker, model.config, days, k)
    recall, ndcg = ranked_metrics([cands.item[t] for t in tops], bought, k)
    return {"recall": recall, "ndcg": ndcg, "baskets": len(bought)}


def decide(candidate: dict, parent: dict | None, gate: GateArguments) -> tuple[bool, str]:
    """(promote?, why) from both pipelines' slice scores."""
    if not gate.enabled:
        return True, "skipped (--no-gate)"
    if parent is None:
        return True, "skipped (first version: nothing to compare with)"
    empty = [s for s in SLICES if not candidate[s]["baskets"]]
    if empty:
        return False, f"failed: no evidence (slice {', '.join(empty)} has no baskets)"
    for s in SLICES:
        for m in METRICS:
            floor = parent[s][m] * (1 - gate.tolerance)
            if candidate[s][m] < floor:
                return False, f"failed: {s} {m} {candidate[s][m]:.4f} < {floor:.4f} (parent {parent[s][m]:.4f} - {gate.tolerance:.0%})"
    return True, "passed"
