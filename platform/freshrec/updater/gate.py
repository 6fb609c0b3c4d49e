"""The gate: is the candidate version's whole pipeline fit to serve?

Two slices: the newest held-out baskets of the cut (``gate_rows``: no version trained on them, and
they did not choose the epoch) and a guard sample of older baskets, not replayed in this update
(forgetting). Each is scored with Recall@K and NDCG@K of the pipeline's top K against the basket's
items. The candidate passes when, on both slices:

- **evidence**: each slice holds at least ``min_baskets`` baskets; with fewer, no version is made
  and the rows wait for more (a verdict on a handful of baskets is noise);
- **parent**: it trails its parent by at most ``tolerance`` of the parent's score, on all four;
- **absolute anchor**: its Recall@K trails P-TopFreq's ("buy it again") on the same baskets by at
  most ``tolerance`` (ten baskets are a noisy measure, for the floor as for the candidate);
- **the best promoted version**: it trails by at most ``tolerance`` the promoted version whose
  recorded gate Recall@K was highest relative to P-TopFreq's, scored again on these baskets. Without
  this, 10% of drift per version, each within tolerance of its parent, would compound.

``--no-gate`` promotes without comparing; a first version has nothing to compare with.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from freshrec.ranking import inputs
from freshrec.ranking.baselines import p_topfreq
from freshrec.ranking.events import BrowseLog, EventLog
from freshrec.ranking.pipeline import basket_items, day_of, rank
from freshrec.ranking.scorer import RankingModel, basket_frame, basket_queries
from freshrec.training.args import GateArguments
from freshrec.training.evaluate import ranked_metrics

SLICES = ("gate", "guard")
METRICS = ("recall", "ndcg")


@dataclass
class Verdict:
    status: str  # passed, failed, deferred, skipped
    reason: str

    @property
    def promote(self) -> bool:
        return self.status in ("passed", "skipped")


def slice_baskets(gate_rows: pd.DataFrame, guard_rows: pd.DataFrame, trained: pd.DataFrame,
                  limit: int) -> dict[str, pd.DataFrame]:
    """Each slice's baskets; a guard basket that shares a moment with a trained row is dropped."""
    def moments(rows: pd.DataFrame) -> pd.MultiIndex:
        return pd.MultiIndex.from_arrays([rows["user_id"], pd.to_datetime(rows["event_timestamp"], utc=True)])

    guard = guard_rows[~moments(guard_rows).isin(moments(trained))]
    return {"gate": basket_frame(gate_rows, limit), "guard": basket_frame(guard, limit)}


def score(model: RankingModel, log: EventLog, baskets: pd.DataFrame, days: inputs.OfflineDays, k: int,
          browse: BrowseLog | None = None) -> dict:
    """Recall@k and NDCG@k of the pipeline's top k against each basket's own items."""
    queries, bought = basket_queries(model, log, baskets, browse) if len(baskets) else (None, [])
    if not bought:
        return {"recall": None, "ndcg": None, "baskets": 0}
    cands, _, tops = rank(log, queries, model.index, model.ranker, model.config, days, k)
    recall, ndcg = ranked_metrics([cands.item[t] for t in tops], bought, k)
    return {"recall": recall, "ndcg": ndcg, "baskets": len(bought)}


def score_p_topfreq(log: EventLog, baskets: pd.DataFrame, days: inputs.OfflineDays, k: int) -> dict:
    """P-TopFreq on the same baskets, each at its own moment, filled with that day's popular items."""
    if not len(baskets):
        return {"recall": None, "ndcg": None, "baskets": 0}
    from freshrec.ranking.pipeline import Queries

    users, times = log.user_rows(baskets["user_id"]), baskets["time"].to_numpy(np.float64)
    queries = Queries(users, times, np.zeros((len(times), 2), np.float32), np.zeros((len(times), 0), np.float32))
    bought = basket_items(log, queries)
    keep = np.flatnonzero([len(b) > 0 for b in bought])
    ranked = [None] * len(times)
    for day in np.unique(day_of(times[keep])):
        at = keep[day_of(times[keep]) == day]
        for n, top in zip(at, p_topfreq(log, users[at], times[at], days(float(day)), k)):
            ranked[n] = top
    recall, ndcg = ranked_metrics([ranked[n] for n in keep], [bought[n] for n in keep], k)
    return {"recall": recall, "ndcg": ndcg, "baskets": len(keep)}


def anchor_ratio(scores: dict) -> float | None:
    """The candidate's gate Recall@K over P-TopFreq's on the same baskets: comparable across versions."""
    mine, floor = scores.get("candidate", {}).get("gate", {}), scores.get("p_topfreq", {}).get("gate", {})
    if not mine.get("recall") or not floor.get("recall"):
        return None
    return mine["recall"] / floor["recall"]


def decide(scores: dict, gate: GateArguments) -> Verdict:
    """The verdict from every pipeline's slice scores: ``candidate``, ``parent``, ``p_topfreq`` and
    ``best`` (absent when the best promoted version is the parent or there is none)."""
    if not gate.enabled:
        return Verdict("skipped", "skipped (--no-gate)")
    if "parent" not in scores:
        return Verdict("skipped", "skipped (first version: nothing to compare with)")
    candidate = scores["candidate"]
    thin = {s: candidate[s]["baskets"] for s in SLICES if candidate[s]["baskets"] < gate.min_baskets}
    if thin:
        return Verdict("deferred", "deferred: too little evidence (" + ", ".join(
            f"{s} {n} baskets" for s, n in thin.items()) + f"; at least {gate.min_baskets} needed)")
    references = [(name, scores[name]) for name in ("parent", "best") if name in scores]
    for s in SLICES:
        for name, ref in references:
            for m in METRICS:
                floor = ref[s][m] * (1 - gate.tolerance)
                if candidate[s][m] < floor:
                    return Verdict("failed", f"failed: {s} {m} {candidate[s][m]:.4f} < {floor:.4f} "
                                             f"({name} {ref[s][m]:.4f} - {gate.tolerance:.0%})")
        anchor = scores["p_topfreq"][s]["recall"]
        if candidate[s]["recall"] < anchor * (1 - gate.tolerance):
            return Verdict("failed", f"failed: {s} recall {candidate[s]['recall']:.4f} < "
                                     f"{anchor * (1 - gate.tolerance):.4f} (P-TopFreq's {anchor:.4f} - {gate.tolerance:.0%})")
    return Verdict("passed", "passed")


SEARCH_SLICES = ("known_items", "queries")  # forgetting first: the set that never trains
SEARCH_METRICS = ("rr", "hit")


def decide_search(scores: dict, gate: GateArguments) -> Verdict:
    """Search's verdict: on each slice with enough queries, the candidate's reciprocal rank and hit@10
    trail neither its parent's nor the day-one pipeline's (full text and the pre-trained encoder) by
    more than ``tolerance``: forgetting the language is caught where search uses it."""
    if not gate.enabled:
        return Verdict("skipped", "skipped (--no-gate)")
    candidate, judged = scores["candidate"], []
    for s in SEARCH_SLICES:
        if candidate[s]["queries"] < gate.min_baskets:
            continue  # too few held-out query events to judge on: the known-item set still is
        judged.append(s)
        for name in ("parent", "day_one"):
            ref = scores.get(name)
            if ref is None:
                continue
            for m in SEARCH_METRICS:
                floor = ref[s][m] * (1 - gate.tolerance)
                if candidate[s][m] < floor:
                    return Verdict("failed", f"failed: search {s} {m} {candidate[s][m]:.4f} < {floor:.4f} "
                                             f"({name} {ref[s][m]:.4f} - {gate.tolerance:.0%})")
    if not judged:
        return Verdict("skipped", "skipped (no slice with enough queries)")
    return Verdict("passed", f"passed ({', '.join(judged)})")


def combined(recommendations: Verdict, search: Verdict) -> Verdict:
    """One version, one verdict: it serves only if neither side failed."""
    for verdict in (recommendations, search):
        if verdict.status in ("failed", "deferred"):
            return verdict
    return recommendations
