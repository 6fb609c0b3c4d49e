"""The ranker's part of an update: basket queries from the cut's rows, candidates, labels, fit.

Each training basket is a query at its own moment t: its candidates and features see only events
before t (the event log of rows this lineage consumed, co-purchase and item aggregates as of t's
day), and its label is what the user bought at t.

Its tower features always come from towers that never trained on that basket, as at serving time,
where the towers meet tomorrow's baskets: the parent's towers for the cut's new baskets; for a
version without a parent, out-of-fold towers (``stages.fold_scorers``). So the ranker learns how
far to trust a tower score on rows the tower has not seen, in every arm alike.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd

from freshrec.models.ranker import Ranker
from freshrec.ranking.candidates import FEATURES
from freshrec.ranking.events import BrowseLog, EventLog
from freshrec.ranking.inputs import OfflineDays
from freshrec.ranking.pipeline import candidates_by_day
from freshrec.ranking.scorer import RankingModel, basket_frame, basket_queries
from freshrec.training.examples import TrainingData
from freshrec.training.ranker import RankerArguments, RankerResult, fit

# (towers to score with, the fold of users whose baskets they score; None: every basket)
Scorers = list[tuple[RankingModel, int | None]]


@dataclass
class RankerExamples:
    features: np.ndarray
    labels: np.ndarray
    baskets: int

    @classmethod
    def concat(cls, parts: list[RankerExamples]) -> RankerExamples:
        return cls(np.concatenate([p.features for p in parts]), np.concatenate([p.labels for p in parts]),
                   sum(p.baskets for p in parts))


def examples(model: RankingModel, log: EventLog, baskets, days: OfflineDays, browse: BrowseLog | None = None) -> RankerExamples:
    if len(baskets) == 0:
        return RankerExamples(np.zeros((0, len(FEATURES)), np.float32), np.zeros(0, np.float32), 0)
    queries, bought = basket_queries(model, log, baskets, browse)
    cands = candidates_by_day(log, queries, model.index, model.config, days)
    label = np.array([i in bought[q] for q, i in zip(cands.query.tolist(), cands.item.tolist())], np.float32)
    return RankerExamples(cands.features, label, len(queries))


def scored_examples(scorers: Scorers, log: EventLog, baskets: pd.DataFrame, days: OfflineDays,
                    browse: BrowseLog | None = None) -> RankerExamples:
    """Each basket's candidates and features, its tower scores from the towers assigned to its fold."""
    from freshrec.updater.stages import fold_of

    folds = fold_of(baskets["user_id"]) if len(baskets) else np.zeros(0, int)
    parts = [examples(model, log, baskets if fold is None else baskets[folds == fold].reset_index(drop=True), days,
                      browse) for model, fold in scorers]
    return RankerExamples.concat(parts)


def _start(parent: Ranker | None, hidden: int) -> tuple[Ranker, bool, str]:
    """The ranker to train: the parent's (a warm start) or a fresh one, and why fresh."""
    if parent is None:
        return Ranker(FEATURES, hidden), False, ""
    if parent.feature_names != FEATURES:
        added = [f for f in FEATURES if f not in parent.feature_names]
        dropped = [f for f in parent.feature_names if f not in FEATURES]
        return (Ranker(FEATURES, hidden), False,
                f"fresh ranker: the parent's features differ from this code's (added {added}, dropped {dropped})")
    return copy.deepcopy(parent), True, ""


def train_ranker(parent_ranker: Ranker | None, scorers: Scorers, log: EventLog, data: TrainingData,
                 days: OfflineDays, args: RankerArguments, browse: BrowseLog | None = None
                 ) -> tuple[Ranker | None, RankerResult, dict]:
    """A child of ``parent_ranker`` (warm start, L2 toward it), or a fresh ranker when there is none
    or the parent's feature list is not this code's (an upgrade): then it says so in ``info``.

    With no training example (nobody in the new rows had a history), a warm start keeps the
    parent's ranker as it is; a fresh one cannot learn, so the version ranks by its towers' order
    (None), as versions from before the ranker did, and ``info`` says so."""
    rows = data.train_rows
    new = basket_frame(rows[~rows["replay"]])
    older = basket_frame(rows[rows["replay"]], limit=int(round(len(new) * args.replay_baskets)))
    baskets = pd.concat([f for f in (new, older) if len(f)] or [new], ignore_index=True)
    train = scored_examples(scorers, log, baskets, days, browse)
    valid = scored_examples(scorers, log, basket_frame(data.valid_rows), days, browse)
    ranker, warm, fresh = _start(parent_ranker, args.hidden)
    info = {"train_baskets": train.baskets, "valid_baskets": valid.baskets, "warm_start": warm,
            "features": len(ranker.feature_names), "out_of_fold": scorers[0][1] is not None}
    if fresh:
        info["fresh"] = fresh
    if len(train.labels) == 0:
        if not warm:
            info["untrained"] = "no basket in the new rows had a history: the towers' order ranks"
        return (ranker if warm else None), RankerResult(), info
    result = fit(ranker, (train.features, train.labels), (valid.features, valid.labels), args, from_parent=warm,
                 names=FEATURES)
    return ranker, result, info
