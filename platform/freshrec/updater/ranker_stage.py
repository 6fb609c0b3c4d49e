"""The ranker's part of an update: basket queries from the cut's rows, candidates, labels, fit.

Each training basket is a query at its own moment t: its candidates and features see only events
before t (the event log of rows this lineage consumed, co-purchase and item aggregates as of t's
day), and its label is what the user bought at t. The tower features come from the parent's
towers, which have not trained on these rows (a first version uses its own: there is no other),
so the ranker learns how far to trust a tower score on rows the tower has not seen.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd

from freshrec.ranking.candidates import FEATURES
from freshrec.ranking.events import EventLog
from freshrec.ranking.inputs import OfflineDays
from freshrec.ranking.model import RankingModel, basket_frame, basket_queries
from freshrec.ranking.pipeline import candidates_by_day
from freshrec.training.examples import TrainingData
from freshrec.training.ranker import Ranker, RankerArguments, RankerResult, fit


@dataclass
class RankerExamples:
    features: np.ndarray
    labels: np.ndarray
    baskets: int


def examples(model: RankingModel, log: EventLog, baskets, days: OfflineDays) -> RankerExamples:
    if len(baskets) == 0:
        return RankerExamples(np.zeros((0, len(FEATURES)), np.float32), np.zeros(0, np.float32), 0)
    queries, bought = basket_queries(model, log, baskets)
    cands = candidates_by_day(log, queries, model.index, model.config, days)
    label = np.array([i in bought[q] for q, i in zip(cands.query.tolist(), cands.item.tolist())], np.float32)
    return RankerExamples(cands.features, label, len(queries))


def train_ranker(parent_ranker: Ranker | None, features_from: RankingModel, log: EventLog, data: TrainingData,
                 days: OfflineDays, args: RankerArguments) -> tuple[Ranker, RankerResult, dict]:
    """A child of ``parent_ranker`` (warm start, L2 toward it), or a first ranker."""
    rows = data.train_rows
    new = basket_frame(rows[~rows["replay"]])
    older = basket_frame(rows[rows["replay"]], limit=int(round(len(new) * args.replay_baskets)))
    train = examples(features_from, log, pd.concat([f for f in (new, older) if len(f)] or [new], ignore_index=True), days)
    valid = examples(features_from, log, basket_frame(data.valid_rows), days)
    # A child keeps its parent's shape and feature scaling: a warm start, not a new model.
    ranker = copy.deepcopy(parent_ranker) if parent_ranker is not None else Ranker(len(FEATURES), args.hidden)
    info = {"train_baskets": train.baskets, "valid_baskets": valid.baskets}
    if len(train.labels) == 0 and parent_ranker is not None:  # nobody in the new rows had a history
        return ranker, RankerResult(), info
    result = fit(ranker, (train.features, train.labels), (valid.features, valid.labels), args,
                 from_parent=parent_ranker is not None)
    return ranker, result, info
