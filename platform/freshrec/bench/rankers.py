"""``freshrec bench rankers``: the MLP ranker against gradient-boosted trees, on the same examples.

Why the ranker is an MLP: this measures it. For each chosen test week, the baskets of the weeks
before it become training queries (candidates and point-in-time features exactly as the updater
builds them, the towers left out so both learners see the same inputs), and each learner ranks
the candidates of the users who buy in the test week, as of its first day:
- the MLP freshrec trains (``training/ranker.py``, BCE, from scratch here);
- LightGBM's lambdarank (grouped by basket) and its binary objective, up to 1,000 trees, stopped early.
All three fit on the older 90% of the training baskets and stop on the newest 10%.
P-TopFreq on the same users is the reference. Needs ``pip install lightgbm`` (not a dependency of
freshrec itself) and the bundled data loaded (``freshrec load online-retail``).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from freshrec.bench import report
from freshrec.ranking.baselines import p_topfreq
from freshrec.bench.metrics import as_interval, bootstrap, ratio_interval, user_metrics
from freshrec.bench.timeline import open_timeline
from freshrec.ingest.online_retail import day_start
from freshrec.ranking.candidates import FEATURES, CandidateConfig
from freshrec.ranking.events import DAY, EventLog
from freshrec.ranking.inputs import OfflineDays, consumed_log
from freshrec.ranking.pipeline import Queries, TowerIndex, candidates_by_day, labels, top_k
from freshrec.models.ranker import Ranker
from freshrec.training.ranker import RankerArguments, fit

K = 20
CONFIG = CandidateConfig(tower=0)  # no towers: both learners get the same behavioural inputs


def _queries(log: EventLog, user_rows: np.ndarray, times: np.ndarray) -> Queries:
    lo, hi = log.before(user_rows, times)
    baskets = np.where(hi > lo, log.basket[np.maximum(hi - 1, 0)] - log.basket[np.minimum(lo, len(log.basket) - 1)] + 1, 0)
    activity = np.stack([hi - lo, baskets], 1).astype(np.float32)  # purchases only: what Feast's counts are here
    return Queries(user_rows, times, activity, np.zeros((len(times), 1), np.float32))


def _learners(x: np.ndarray, y: np.ndarray, groups: np.ndarray, split: int) -> dict:
    """Each learner fitted on the examples before ``split`` and stopped early on those after it (the
    newest baskets): the MLP by its validation loss, LightGBM after 50 rounds without improvement."""
    import lightgbm as lgb

    mlp = Ranker(FEATURES)
    train, valid = slice(0, split), slice(split, None)
    fit(mlp, (x[train], y[train]), (x[valid], y[valid]), RankerArguments(), from_parent=False)

    def sizes(part: slice) -> np.ndarray:
        g = groups[part]
        return np.bincount(g)[np.unique(g)]

    params = dict(n_estimators=1000, learning_rate=0.05, num_leaves=31, min_child_samples=50, subsample=0.8,
                  subsample_freq=1, colsample_bytree=0.8, verbose=-1)
    stop = [lgb.early_stopping(50, verbose=False)]
    ranker = lgb.LGBMRanker(**params).fit(x[train], y[train], group=sizes(train), eval_set=[(x[valid], y[valid])],
                                          eval_group=[sizes(valid)], eval_at=[K], callbacks=stop)
    binary = lgb.LGBMClassifier(**params).fit(x[train], y[train], eval_set=[(x[valid], y[valid])], callbacks=stop)
    return {"mlp": lambda f: mlp.score(f, FEATURES), "lightgbm-lambdarank": ranker.predict,
            "lightgbm-binary": lambda f: binary.predict_proba(f)[:, 1]}


def run(engine, test_weeks: list[int], train_weeks: int, out_dir: Path, command: str, echo=print) -> dict:
    try:
        import lightgbm  # noqa: F401
    except ImportError:
        raise ValueError("freshrec bench rankers needs LightGBM: pip install lightgbm") from None
    timeline = open_timeline(None)
    with engine.connect() as conn:
        item_ids = pd.read_sql(sa.text("SELECT item_id FROM items ORDER BY item_id"), conn)["item_id"].to_numpy(dtype=object)
        newest = conn.execute(sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")).scalar()
    log = consumed_log(engine, newest, item_ids)
    if len(log.time) == 0:
        raise ValueError("no purchases loaded: run `freshrec load online-retail` first")
    starts = np.r_[0, np.flatnonzero(np.diff(log.basket)) + 1]  # each basket's first row
    basket_user, basket_time = log.user[starts], log.time[starts]
    index = TowerIndex(np.zeros((log.n_items, 1), np.float32), 1.0, 0.0)
    rows, per_user = [], []
    for w in test_weeks:
        since, until = timeline.weeks[w]
        clock = day_start(since).timestamp()
        pick = np.flatnonzero((basket_time >= clock - train_weeks * 7 * DAY) & (basket_time < clock))
        pick = pick[np.argsort(basket_time[pick], kind="stable")]  # oldest first: the newest tenth validates
        train_q = _queries(log, basket_user[pick], basket_time[pick])
        started = time.perf_counter()
        days = OfflineDays(engine, log, sorted({*np.floor(train_q.times / DAY) * DAY, clock}))
        cands = candidates_by_day(log, train_q, index, CONFIG, days)
        y = labels(log, train_q, cands)
        split = int(np.searchsorted(cands.query, int(len(train_q) * 0.9)))  # queries are in time order
        scorers = _learners(cands.features, y, cands.query, split)
        truth_rows = (log.time >= clock) & (log.time < clock + 7 * DAY)
        truth = pd.Series(log.item[truth_rows]).groupby(log.user[truth_rows]).agg(set)
        users = np.array([u for u in truth.index if log.start[u] < len(log.time) and log.time[log.start[u]] < clock])
        eval_q = _queries(log, users, np.full(len(users), clock))
        day = days(clock)
        eval_cands = candidates_by_day(log, eval_q, index, CONFIG, lambda _: day)
        history = [set(log.item[log.start[u]:log.start[u] + np.searchsorted(log.time[log.start[u]:log.start[u + 1]], clock)])
                   for u in users]
        ranked = {name: [eval_cands.item[t] for t in top_k(eval_cands, score(eval_cands.features), len(users), K)]
                  for name, score in scorers.items()}
        ranked["p-topfreq"] = p_topfreq(log, users, clock, day, K)
        row = {"test_week": str(since), "users": len(users), "train_baskets": len(train_q), "examples": len(cands),
               "seconds": time.perf_counter() - started}
        for name, lists in ranked.items():
            recalls = [user_metrics(list(r), truth[u], h, K)["recall"] for r, u, h in zip(lists, users, history)]
            row[name] = float(np.mean(recalls))
            per_user += [{"arm": name, "user": str(log.users[u]), "week": str(since), "recall": v}
                         for u, v in zip(users, recalls)]
        rows.append(row)
        echo("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    # Means over (user, week) rows with 95% intervals, resampling users; ratios paired on the same rows.
    frame = pd.DataFrame(per_user)
    learners = ("p-topfreq", "mlp", "lightgbm-lambdarank", "lightgbm-binary")
    summary = {f"recall_{k}": as_interval(bootstrap(frame[frame["arm"] == k], "recall"))
               for k in learners}
    for k in learners[1:]:
        summary[f"{k}_vs_p_topfreq"] = as_interval(ratio_interval(frame, k, "p-topfreq", "recall"))
    for k in learners[2:]:
        summary[f"mlp_vs_{k}"] = as_interval(ratio_interval(frame, "mlp", k, "recall"))
    report.write(out_dir, "rankers", rows, command, None, {"train_weeks": train_weeks, "summary": summary})
    echo(report.markdown_table(rows))
    for name, value in summary.items():
        echo(f"{name}: {value['mean']:.3f} [{value['lo']:.3f}, {value['hi']:.3f}]")
    return {"rows": rows, "summary": summary}
