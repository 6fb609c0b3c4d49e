"""``freshrec bench updates``: the pipeline, kept fresh incrementally, against full retraining, a stale
model and the baselines, week by week, through the real platform (PostgreSQL, Feast, the updater).

1. A fresh database per incremental strategy; load the first 13 weeks; ``run_update`` -> version 1.
2. Each following week: load it, materialize, ``run_update`` (the gate on, as in production);
   per strategy, retrain towers and ranker from scratch on every row so far (same
   hyper-parameters, same cut -> Feast path, no L2 pull: there is no parent), every week or every
   ``--full-retrain-every`` weeks (the last retrain serves in between); score every arm on the week
   after, which is not loaded yet.

Both arms train through the same stages (``updater.stages``), and every ranker learns from tower
scores out of sample (the parent's towers, or out-of-fold towers when there is no parent). One
asymmetry remains, in the full retrain's favour: it reuses the encoder-state cache the incremental
arm filled (under ``head`` the encoder is the same), so its cost leaves out encoding. TIFU-KNN's
parameters and the pipeline's candidate counts are chosen alike, on week 13, before the test
weeks (``bench.tuning``); ``--seeds`` runs more incremental arms to show the seed's spread; every
week also scores search (``bench.search_weeks``).

Arms (strategy s):
- ``pipeline-incremental-s``: the current version's pipeline, through the API's own code;
- ``pipeline-full-retrain-s``: the same pipeline from a from-scratch retrain;
- ``stale``: version 1's pipeline (live user histories, models never updated);
- ``tower-incremental-s``, ``tower-full-retrain-s``: the text towers alone, whole catalog;
- ``tifu-knn``, ``p-topfreq``, ``popularity``: the baselines;
- ``tower-explore``, ``copurchase-explore``, ``popularity-explore``: each explore source's own top
  20 among items new to the user.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from freshrec.bench import baselines, report, tuning
from freshrec.bench.search_weeks import SearchWeeks, forgetting_plot, search_targets
from freshrec.bench import evaluation as ev
from freshrec.bench.meter import Meter
from freshrec.bench.platform import Platform, base_model_path, create_platform, dispose
from freshrec.bench.metrics import METRICS
from freshrec.bench.timeline import open_timeline
from freshrec.bench.updates_report import plot, summarise, summary_table
from freshrec.config import get_settings
from freshrec.db import database_url
from freshrec.ranking.candidates import CandidateConfig
from freshrec.registry.artifacts import LoadedVersion
from freshrec.serving.snapshot import Snapshot, assemble
from freshrec.training import dataset
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.training.ranker import RankerArguments
from freshrec.training.watermark import ZERO_XID, take_cut
from freshrec.ranking.inputs import rows_before
from freshrec.training.distributed import World
from freshrec.updater import run_update
from freshrec.updater.stages import start_from, train_version

QUERY_SHARE = 0.3  # synthetic searches on 30% of the purchases, as in the demo (the data set has none)
_COVERAGE = """
SELECT (SELECT count(*) FROM interactions) AS loaded,
       (SELECT count(*) FROM version_consumed_rows WHERE version = :v) AS consumed,
       (SELECT count(DISTINCT interaction_id) FROM version_consumed_rows WHERE version = :v) AS distinct_consumed,
       (SELECT bool_and(consistent) FROM watermark_audit) AS audit_consistent"""


def _update(platform: Platform, args: TrainingArguments, gate: GateArguments, base_model: str,
            candidates: CandidateConfig) -> dict:
    with Meter() as meter:
        outcome = run_update(args, gate, base_model=base_model, settings=platform.settings, trigger="bench",
                             candidates=candidates, ranker_args=RankerArguments(seed=args.seed))
    cost = {"update_s": meter.seconds, "peak_rss_mib": meter.mib, "other_cpu": meter.other_cpu}
    if outcome.status != "created":
        return {**cost, "train_s": 0.0, "rows": 0, "pairs": 0, "promoted": None, "outcome": outcome.status}
    with platform.engine.connect() as conn:
        timings = conn.execute(sa.text("SELECT timings FROM model_versions WHERE version = :v"), {"v": outcome.version}).scalar()
    m = outcome.metrics
    # Where the time went, step by step (the version's own timings), for every strategy.
    steps = {f"step_{k}": v for k, v in timings.items()}
    # Training cost: towers, ranker, search, and the warm-up encodes of the cut's newest profiles (those
    # are the texts the next update trains on: leaving them out would hide encoder time).
    train_s = timings["train_s"] + timings["ranker_s"] + timings.get("search_s", 0.0) + timings.get("warm_profiles_s", 0.0)
    return {**cost, **steps, "train_s": train_s, "tower_s": timings["train_s"],
            "ranker_s": timings["ranker_s"], "rows": m["rows_new"] + m["rows_replay"], "pairs": m["rows_seen"],
            "ranker_examples": m["ranker"]["examples"], "promoted": outcome.promoted, "outcome": outcome.status,
            "encoded_texts": m["encoder_cache"].get("encoded", 0) + m["encoder_cache"]["evaluation"].get("encoded", 0)}


def full_retrain(platform: Platform, args: TrainingArguments, ranker_args: RankerArguments,
                  candidates: CandidateConfig, base_model: str, device) -> tuple[Snapshot, dict]:
    """Towers and ranker from scratch on every row so far: the updater's own stages, with no parent."""
    engine = platform.engine
    with Meter() as meter:
        cut = take_cut(engine, ZERO_XID)
        data = dataset.build(engine, platform.store, cut, args)
        start = start_from(engine, None, base_model, args.embedding_dim, args.seed)
        trained = train_version(engine, data, cut, start, args, ranker_args, candidates, device)
    with engine.connect() as conn:
        titles = dict(conn.execute(sa.text("SELECT item_id, title FROM items")).all())
    ids = data.catalog["item_id"].to_numpy(dtype=object)
    loaded = LoadedVersion(trained.model, trained.tokenizer, {}, trained.candidate.ranker, candidates)
    snap = assemble(engine, platform.store, loaded, ids, [titles[i] for i in ids], trained.candidate.index.item_vecs,
                    cut.xid_to, max_user_tokens=args.max_user_tokens)
    tower_s, ranker_s = trained.timings["train_s"], trained.timings["ranker_s"]
    return snap, {"update_s": meter.seconds, "train_s": tower_s + ranker_s, "tower_s": tower_s, "ranker_s": ranker_s,
                  "rows": cut.row_count, "pairs": trained.towers.rows_seen, "ranker_examples": trained.ranker.examples,
                  "peak_rss_mib": meter.mib, "other_cpu": meter.other_cpu}


# Candidate counts against the default (repeat, tower, copurchase, popular), ranked by the same
# version's ranker: how many the pipeline needs (fewer lose recall, more cost time and add little).
CANDIDATE_SWEEP = {"candidates-small": CandidateConfig(50, 10, 10, 10),
                   "candidates-large": CandidateConfig(200, 60, 60, 40)}
EVERY_CANDIDATE = 10_000  # rank them all: the benchmark reads the whole list for coverage


def _score_week(platforms, seeds, stale: Snapshot, retrained: dict[str, Snapshot], week: ev.TestWeek,
                everyone, tifu: baselines.TifuKnn) -> tuple[list[dict], dict[str, int]]:
    primary = platforms[0]
    rows, versions = [], {}
    for p in platforms:
        snap = p.snapshot()
        versions[_arm(p, seeds).removeprefix("pipeline-incremental-")] = snap.version
        rows += ev.metric_rows(week, _arm(p, seeds), ev.pipeline_ranked(snap, p.engine, week, EVERY_CANDIDATE))
        if p.seed != seeds[0]:
            continue
        rows += ev.metric_rows(week, f"tower-incremental-{p.strategy}", ev.tower_ranked(snap, week))
        if p is primary:
            rows += ev.metric_rows(week, "tower-explore", ev.tower_explore_ranked(snap, week), snap.item_ids)
            day, item_ids = snap.day_state(week.when), snap.item_ids
            for arm, config in CANDIDATE_SWEEP.items():
                rows += ev.metric_rows(week, arm, ev.pipeline_ranked(snap.with_candidates(config), p.engine, week,
                                                                     EVERY_CANDIDATE))
    for strategy, snap in retrained.items():
        rows += ev.metric_rows(week, f"pipeline-full-retrain-{strategy}", ev.pipeline_ranked(snap, primary.engine, week))
        rows += ev.metric_rows(week, f"tower-full-retrain-{strategy}", ev.tower_ranked(snap, week))
    rows += ev.metric_rows(week, "stale", ev.pipeline_ranked(stale, primary.engine, week))
    for arm, ranked in ev.baseline_ranked(week, day, tifu, everyone).items():
        rows += ev.metric_rows(week, arm, ranked, item_ids)
    return rows, versions


def _arm(p: Platform, seeds: list[int]) -> str:
    """The incremental arm's name: the strategy, and the seed when several are run."""
    return f"pipeline-incremental-{p.strategy}" + (f"-seed{p.seed}" if p.seed != seeds[0] else "")


def run(weeks: int | None, model: str, strategies: list[str], device_name: str, dataset_path: str | None,
        out_dir: Path, max_eval_users: int, gate: bool, keep_databases: bool, command: str,
        full_retrain_every: int = 1, seeds: list[int] | None = None, tune: bool = True, queries: float = QUERY_SHARE,
        echo=print) -> dict:
    started = time.perf_counter()
    seeds = seeds or [0]
    timeline = open_timeline(dataset_path, queries=queries)
    n_weeks = min(weeks or len(timeline.weeks), len(timeline.weeks) - 1)  # each needs a test week after it
    if n_weeks < 1:
        raise ValueError("--weeks: the data set has no week after the first 13 to test on")
    if full_retrain_every < 1:
        raise ValueError("--full-retrain-every: at least 1")
    base, base_url = get_settings(), database_url()
    tag = f"{os.getpid()}_{int(time.time())}"
    scratch = base.home / "bench" / tag  # versions' artifacts and the tiny model: not results
    base_model = base_model_path(model, scratch)
    device = World().device(device_name)
    args = {(s, seed): TrainingArguments(strategy=s, device=device_name, seed=seed) for s in strategies for seed in seeds}
    echo(f"first 13 weeks to {timeline.first_until}; {n_weeks} weeks to replay; model {model}; strategies {strategies}; "
         f"seeds {seeds}")
    tuned = tuning.tune(base, base_url, f"freshrec_tune_{tag}", scratch, timeline, args[(strategies[0], seeds[0])],
                        base_model, max_eval_users, echo) if tune else None
    candidates = tuned["candidates"] if tuned else CandidateConfig()
    tifu = tuned["tifu"] if tuned else baselines.TifuKnn()
    ranker_args = RankerArguments()
    platforms = [create_platform(base, base_url, f"freshrec_bench_{s}_{seed}_{tag}", s, scratch, timeline, seed=seed)
                 for s in strategies for seed in seeds]
    primary = platforms[0]
    user_rows: list[dict] = []
    costs: list[dict] = []
    search_known: list[dict] = []
    search_events: list[dict] = []
    retrained: dict[str, Snapshot] = {}
    try:
        for p in platforms:  # version 1 of each incremental arm: the first 13 weeks
            cost = _update(p, args[(p.strategy, p.seed)], GateArguments(enabled=False), base_model, candidates)
            costs.append({"week": str(timeline.first_until), "arm": _arm(p, seeds), **cost, "version": 1})
        stale = primary.snapshot(1)
        searches = SearchWeeks(primary.engine, base_model)
        for i, (since, until) in enumerate(timeline.weeks[:n_weeks]):
            batch = timeline.batch(since, until)
            for p in platforms:
                p.load(batch)
                cost = _update(p, args[(p.strategy, p.seed)], GateArguments(enabled=gate), base_model, candidates)
                costs.append({"week": str(since), "arm": _arm(p, seeds), **cost, "version": p.current()})
            # Retrained every N weeks; in between the last retrain serves (a periodic-retrain policy),
            # so every arm is scored on every week. One seed per strategy: the first.
            if i % full_retrain_every == 0 or i == n_weeks - 1:
                for p in (p for p in platforms if p.seed == seeds[0]):
                    retrained[p.strategy], cost = full_retrain(p, args[(p.strategy, p.seed)], ranker_args, candidates,
                                                                base_model, device)
                    costs.append({"week": str(since), "arm": f"pipeline-full-retrain-{p.strategy}", **cost})
            test_since, test_until = timeline.weeks[i + 1]
            next_rows = timeline.batch(test_since, test_until).interactions
            week = ev.test_week(primary.engine, primary.store, next_rows, test_since, max_eval_users,
                                primary.snapshot().item_ids)
            with primary.engine.connect() as conn:
                everyone = rows_before(conn, week.when, week.log.item_ids)
            rows, versions = _score_week(platforms, seeds, stale, retrained, week, everyone, tifu)
            for r in rows:
                r.update(week=str(since), test_week=str(test_since))
            user_rows += rows
            known, events = searches.score(primary.snapshot(), str(since), next_rows)
            search_known += known
            search_events += events
            weekly = pd.DataFrame(rows).groupby("arm")["recall"].mean()
            shown = [a for a in (_arm(primary, seeds), "p-topfreq", "tifu-knn", "popularity", "stale")]
            three = {k["arm"]: k["hit"] for k in known if k["variant"] == "three"}
            echo(f"week {since} -> test {test_since} ({len(week.users)} users, versions {versions}): Recall@20 "
                 + "  ".join(f"{a} {weekly[a]:.3f}" for a in shown)
                 + f"; known-item hit@10 pipeline {three['pipeline']:.3f}, day one {three['day one']:.3f}")
        coverage = {}
        for p in platforms:
            with p.engine.connect() as conn:
                coverage[_arm(p, seeds)] = dict(conn.execute(sa.text(_COVERAGE), {"v": p.current()}).mappings().one())
    finally:
        if not keep_databases:
            for p in platforms:
                dispose(p, base_url)
            shutil.rmtree(scratch, ignore_errors=True)
    frame = pd.DataFrame(user_rows)
    summary = summarise(frame, pd.DataFrame(costs), strategies, [_arm(p, seeds) for p in platforms if p.seed != seeds[0]])
    extra = {"model": model, "strategies": strategies, "seeds": seeds, "weeks": n_weeks,
             "first_until": str(timeline.first_until), "dataset": timeline.source, "query_share": queries,
             "device": str(device), "wall_s": time.perf_counter() - started,
             "full_retrain_every": full_retrain_every, "candidates": candidates.__dict__,
             "ranker": ranker_args.to_dict(), "tifu_knn": tifu.__dict__,
             "tuning": {k: v for k, v in (tuned or {}).items() if k in ("table", "validation_week", "users")},
             "watermark_coverage": coverage, "summary": summary, "costs": costs, "search": search_known,
             "search_targets": search_targets(pd.DataFrame(search_known), pd.DataFrame(search_events))}
    weekly = frame.groupby(["week", "test_week", "arm"], as_index=False)[list(METRICS)].mean()
    json_path, md_path = report.write(out_dir, "updates", weekly.to_dict("records"), command, None, extra)
    frame.to_parquet(out_dir / "updates-users.parquet", index=False)
    pd.DataFrame(search_events).to_parquet(out_dir / "updates-search-events.parquet", index=False)
    md_path.write_text(summary_table(summary) + "\n\n" + md_path.read_text())
    plot(frame, pd.DataFrame(costs), out_dir / "updates.png", f"{model}, {', '.join(strategies)}", strategies)
    forgetting_plot(search_known, out_dir / "updates-search.png")
    echo(summary_table(summary))
    echo(f"search targets: {extra['search_targets']['known_items']}")
    echo(f"wrote {json_path}, {md_path}, {out_dir / 'updates-users.parquet'}, {out_dir / 'updates.png'} "
         f"and {out_dir / 'updates-search.png'}")
    return {"rows": weekly.to_dict("records"), **extra}
