"""Tune both sides alike, before any test week: TIFU-KNN's parameters and the pipeline's candidate
counts, each given the same budget (8 configurations), each chosen on the same validation week.

A validation version is trained on the first 12 weeks exactly as version 1 is on 13 (its own
database); week 13, which it never saw, chooses. The test weeks then run with what was chosen, so
neither side's settings were picked on the weeks it is scored on.
"""
from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pandas as pd

from freshrec.bench import baselines
from freshrec.bench import evaluation as ev
from freshrec.bench.platform import create_platform, dispose
from freshrec.ranking.candidates import CandidateConfig
from freshrec.ranking.inputs import rows_before
from freshrec.training.args import GateArguments
from freshrec.updater import run_update

TIFU_GRID = [baselines.TifuKnn(neighbours=k, alpha=a, group_decay=g)
             for k, a, g in itertools.product((100, 300), (0.5, 0.7), (0.6, 0.8))]
CANDIDATE_GRID = [CandidateConfig(repeat=r, tower=t, copurchase=c)
                  for r, t, c in itertools.product((50, 100), (10, 30), (30, 60))]


def tune(base, base_url: str, name: str, scratch, timeline, args, base_model: str, max_users: int, echo) -> dict:
    """The chosen TIFU-KNN and candidate counts, and every configuration's validation Recall@20."""
    validation_until = timeline.first_until - timedelta(days=7)
    platform = create_platform(base, base_url, name, "head", scratch, timeline, until=validation_until)
    try:
        run_update(args, GateArguments(enabled=False), base_model=base_model, settings=platform.settings, trigger="bench")
        snap = platform.snapshot()
        rows = timeline.batch(validation_until + timedelta(days=1), timeline.first_until).interactions
        week = ev.test_week(platform.engine, platform.store, rows, validation_until, max_users, snap.item_ids)
        with platform.engine.connect() as conn:
            everyone = rows_before(conn, week.when, week.log.item_ids)
        table = []
        for config in CANDIDATE_GRID:
            recall = _mean(ev.metric_rows(week, "pipeline", ev.pipeline_ranked(snap.with_candidates(config),
                                                                                platform.engine, week)))
            table.append({"side": "pipeline candidates", "config": config.__dict__, "recall": recall})
        for tifu in TIFU_GRID:
            ranked = tifu.rank(everyone, everyone.user_rows(week.users), week.clock, ev.K)
            table.append({"side": "tifu-knn", "config": tifu.__dict__, "recall": _mean(ev.metric_rows(week, "t", ranked,
                                                                                                       snap.item_ids))})
    finally:
        dispose(platform, base_url)
    chosen = {side: max((t for t in table if t["side"] == side), key=lambda t: t["recall"]) for side in
              ("pipeline candidates", "tifu-knn")}
    echo(f"tuned on week 13 ({len(week.users)} users): candidates {chosen['pipeline candidates']}, "
         f"TIFU-KNN {chosen['tifu-knn']}")
    return {"candidates": CandidateConfig(**chosen["pipeline candidates"]["config"]),
            "tifu": replace(baselines.TifuKnn(), **chosen["tifu-knn"]["config"]), "table": table,
            "validation_week": str(validation_until + timedelta(days=1)), "users": len(week.users)}


def _mean(rows: list[dict]) -> float:
    return float(np.nanmean(pd.DataFrame(rows)["recall"]))
