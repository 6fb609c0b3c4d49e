"""``freshrec bench erasure``: what forgetting one customer costs, by how far back they go, and what it
does to quality.

1. A fresh database: the first 13 weeks, version 1; then ``--weeks`` weekly updates (gate on, as in
   production), each one's cost measured.
2. Three customers, each a typical one (median rows) of those first seen in a window: the last loaded
   week, the middle week, the first 13 weeks; none of them buys in the test week (the week after the
   last one loaded), so the users quality is measured on stay the same.
3. For each, in that order (each erasure starts from the chain the previous one left): Recall@20 and
   NDCG@20 of the serving version on the test week, ``freshrec forget`` (data transaction) and the
   replay, timed; the same metrics after. The differences are paired by user, with a bootstrap interval.
4. A full retrain (every row, from the base model: the updater's own stages with no parent), timed.

The replay's cost is compared with the full retrain's and with the weekly updates' it re-runs.
Asymmetry, in the full retrain's favour: its cost counts towers and ranker only, the replay's also
the search side, the gate and the publish of every version it makes.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
import torch

from freshrec.bench import evaluation as ev
from freshrec.bench import report
from freshrec.bench.meter import Meter
from freshrec.bench.metrics import as_interval, bootstrap
from freshrec.bench.platform import bench_run, Platform, create_platform, dispose
from freshrec.bench.timeline import open_timeline
from freshrec.bench.updates import full_retrain
from freshrec.erasure import forget, run_due
from freshrec.ranking.candidates import CandidateConfig
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.training.ranker import RankerArguments
from freshrec.updater import run_update

QUERY_SHARE = 0.3  # as the demo and `bench updates`
_FIRST_SEEN = """
SELECT user_id, min(event_time) AS first_seen, count(*) AS rows FROM interactions GROUP BY user_id"""


def _update(platform: Platform, base_model: str) -> dict:
    with Meter() as meter:
        outcome = run_update(TrainingArguments(), GateArguments(), base_model=base_model, settings=platform.settings,
                             trigger="bench")
    return {"version": outcome.version, "status": outcome.status, "promoted": outcome.promoted,
            "update_s": meter.seconds, "other_cpu": meter.other_cpu}


def _pick(engine, windows: dict[str, tuple], avoid: set[str]) -> dict[str, dict]:
    """Per window (first seen in [since, until)), the customer with the median number of rows."""
    with engine.connect() as conn:
        people = pd.read_sql(sa.text(_FIRST_SEEN), conn)
    people = people[~people["user_id"].isin(avoid)]
    out = {}
    for name, (since, until) in windows.items():
        first = people["first_seen"]
        part = people[(first >= pd.Timestamp(since, tz="UTC")) & (first < pd.Timestamp(until, tz="UTC"))]
        part = part.sort_values(["rows", "user_id"]).reset_index(drop=True)
        chosen = part.iloc[len(part) // 2]
        out[name] = {"user_id": str(chosen["user_id"]), "rows": int(chosen["rows"]),
                     "first_seen": str(chosen["first_seen"].date())}
    return out


def _scores(platform: Platform, week: ev.TestWeek, arm: str) -> pd.DataFrame:
    snap = platform.snapshot()
    return pd.DataFrame(ev.metric_rows(week, arm, ev.pipeline_ranked(snap, platform.engine, week)))


def _quality(before: pd.DataFrame, after: pd.DataFrame) -> dict:
    out = {}
    for metric in ("recall", "ndcg"):
        pair = before[["user", metric]].merge(after[["user", metric]], on="user", suffixes=("_before", "_after"))
        pair = pair.assign(diff=pair[f"{metric}_after"] - pair[f"{metric}_before"])
        out[metric] = {"before": as_interval(bootstrap(pair, f"{metric}_before")),
                       "after": as_interval(bootstrap(pair, f"{metric}_after")),
                       "after_minus_before": as_interval(bootstrap(pair, "diff"))}
    return out


def run(model: str, weeks: int, out_dir: Path, command: str, max_users: int = 400, echo=print) -> dict:
    started = time.perf_counter()
    run_ = bench_run(model)
    base, base_url, tag, scratch, base_model = run_.base, run_.base_url, run_.tag, run_.scratch, run_.base_model
    timeline = open_timeline(None, queries=QUERY_SHARE)
    if not 2 <= weeks < len(timeline.weeks):
        raise ValueError(f"--weeks: between 2 and {len(timeline.weeks) - 1}")
    platform = create_platform(base, base_url, f"freshrec_erase_{tag}", "head", scratch, timeline)
    try:
        updates = [{"week": "first 13", **_update(platform, base_model)}]
        echo(f"version 1 on the first 13 weeks: {updates[0]['update_s']:.0f} s")
        for since, until in timeline.weeks[:weeks]:
            platform.load(timeline.batch(since, until))
            updates.append({"week": str(since), **_update(platform, base_model)})
            echo(f"week {since}: version {updates[-1]['version']} ({updates[-1]['status']}, "
                 f"promoted {updates[-1]['promoted']}) in {updates[-1]['update_s']:.0f} s")
        test_since, test_until = timeline.weeks[weeks]
        test_rows = timeline.batch(test_since, test_until).interactions
        week = ev.test_week(platform.engine, platform.store, test_rows, test_since, max_users, platform.snapshot().item_ids)
        last, middle = timeline.weeks[weeks - 1], timeline.weeks[weeks // 2]
        windows = {"last week": (last[0], last[1] + pd.Timedelta(days=1)),
                   "middle week": (middle[0], middle[1] + pd.Timedelta(days=1)),
                   "first 13 weeks": (pd.Timestamp("1970-01-01"), timeline.first_until + pd.Timedelta(days=1))}
        customers = _pick(platform.engine, windows, set(test_rows["user_id"].astype(str)) | set(week.users))
        rows = []
        for depth, who in customers.items():
            before = _scores(platform, week, "before")
            with Meter() as data_meter:
                request = forget(platform.engine, platform.settings, [who["user_id"]], store=platform.store)
            with Meter() as replay_meter:
                outcome = run_due(platform.settings, force=True, store=platform.store)
            with platform.engine.connect() as conn:
                replay = conn.execute(sa.text("SELECT replay FROM erasures WHERE id = :e"), {"e": request.erasure_id}).scalar()
            after = _scores(platform, week, "after")
            quality = _quality(before, after)
            rows.append({"depth": depth, **who, "versions_tainted": len(request.versions),
                         "versions_trained": replay["versions_trained"], "choice": replay["choice"],
                         "forget_s": data_meter.seconds, "replay_s": replay_meter.seconds,
                         "other_cpu": max(data_meter.other_cpu, replay_meter.other_cpu),
                         "serving_after": outcome.serving, "quality": quality, "message": outcome.message})
            echo(f"{depth}: customer {who['user_id']} ({who['rows']} rows, first seen {who['first_seen']}): "
                 f"{len(request.versions)} versions saw them; forget {data_meter.seconds:.1f} s, replay "
                 f"{replay_meter.seconds:.0f} s ({replay['choice']}, {replay['versions_trained']} trained); Recall@20 "
                 f"{quality['recall']['before']['mean']:.3f} -> {quality['recall']['after']['mean']:.3f}")
        with platform.engine.connect() as conn:
            proof = conn.execute(sa.text("SELECT count(*) FROM erasure_proof")).scalar()
        _, full = full_retrain(platform, TrainingArguments(), RankerArguments(), CandidateConfig(), base_model,
                                torch.device("cpu"))
        echo(f"full retrain on every row: {full['update_s']:.0f} s")
    finally:
        dispose(platform, base_url)
        shutil.rmtree(scratch, ignore_errors=True)
    weekly = float(np.median([u["update_s"] for u in updates[1:]]))
    for r in rows:
        r["replay_over_full_retrain"] = r["replay_s"] / full["update_s"]
        r["replay_over_weekly_updates"] = r["replay_s"] / (weekly * max(r["versions_trained"], 1))
    table = [{"customer first seen": r["depth"], "rows": r["rows"], "versions that saw them": r["versions_tainted"],
              "versions trained": f"{r['versions_trained']} ({r['choice']})", "forget (data) s": f"{r['forget_s']:.1f}",
              "replay s": f"{r['replay_s']:.0f}", "replay / full retrain": f"{r['replay_over_full_retrain']:.2f}",
              "Recall@20 before": _interval(r["quality"]["recall"]["before"]),
              **{f"{name} after - before": _interval(r["quality"][m]["after_minus_before"], "+")
                 for m, name in (("recall", "Recall@20"), ("ndcg", "NDCG@20"))}}
             for r in rows]
    extra = {"model": model, "weeks": weeks, "test_week": str(test_since), "users": len(week.users),
             "updates": updates, "median_weekly_update_s": weekly, "full_retrain": full, "erasures": rows,
             "proof_rows_after": proof, "wall_s": time.perf_counter() - started}
    report.write(out_dir, "erasure", table, command, None, extra)
    echo(report.markdown_table(table))
    return extra


def _interval(x: dict, sign: str = "") -> str:
    return f"{x['mean']:{sign}.3f} [{x['lo']:{sign}.3f}, {x['hi']:{sign}.3f}]"
