"""``freshrec update``: rows past the watermark -> Feast features -> towers -> ranker -> gate -> publish.

    freshrec update                       # head strategy, MiniLM, gate on
    freshrec update --strategy lora --no-gate --base-model /path/to/encoder
    torchrun --nproc-per-node 2 -m freshrec update --strategy lora

One watermark covers the whole version: the towers and the ranker train on the same cut, the gate
judges the whole pipeline, and one transaction publishes both. The stages themselves live in
``updater.stages``, which the benchmark's full retrain runs too.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from freshrec.config import Settings, get_settings
from freshrec.db import cursors, get_engine
from freshrec.db.statistics import analyze_changed
from freshrec.faults import crash_point
from freshrec.features import open_store
from freshrec.models.state_cache import StateCache, encoder_digest
from freshrec.ranking.candidates import CandidateConfig
from freshrec.registry import artifacts
from freshrec.registry.versions import current_version
from freshrec.training import dataset
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.training.distributed import World, join
from freshrec.training.examples import TrainingData
from freshrec.training.ranker import RankerArguments
from freshrec.training.search import SearchArguments
from freshrec.training.train import fine_tune, wrap_lora
from freshrec.training.watermark import parent_horizon, take_cut
from freshrec.updater import gate as gating
from freshrec.updater import runs
from freshrec.updater.build import Parts, build
from freshrec.updater.freshness import UPDATE_LOCK
from freshrec.updater.stages import (
    start_from,
    trainable_digest,
)

log = logging.getLogger("freshrec.updater")


@dataclass
class UpdateOutcome:
    status: str  # created, no-new-rows, deferred, locked; "follower" on torchrun ranks other than 0
    version: int | None = None
    promoted: bool = False
    message: str = ""
    metrics: dict = field(default_factory=dict)


@dataclass
class _Plan:
    """What rank 0 hands the other ranks under torchrun: where to start, and what to train on."""

    parent: int | None
    base_model: str | None
    data: TrainingData


def run_update(args: TrainingArguments, gate: GateArguments, base_model: str | None = None,
               settings: Settings | None = None, ranker_args: RankerArguments | None = None,
               candidates: CandidateConfig | None = None, trigger: str = "cli",
               search_args: SearchArguments | None = None) -> UpdateOutcome:
    """One update; ``trigger`` (cli, watch, bench) is recorded with the run in ``update_runs``."""
    settings = settings or get_settings()
    world = join(args.device)
    try:
        if world.is_main:
            parts = Parts(ranker_args or RankerArguments(seed=args.seed), candidates or CandidateConfig(),
                           search_args or SearchArguments(seed=args.seed))
            return _lead(world, args, gate, parts, base_model or settings.base_model, settings, trigger)
        return _follow(world, args, settings)
    finally:
        world.close()


def _lead(world: World, args, gate, parts: Parts, base_model, settings, trigger) -> UpdateOutcome:
    engine = get_engine(settings)
    with runs.recorded(engine, trigger) as run:
        # Autocommit: the lock lives in the session, and no open transaction holds back the xmin horizon.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as lock_conn:
            if not lock_conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": UPDATE_LOCK}).scalar():
                world.broadcast(None)
                outcome = UpdateOutcome("locked", message="another update is running")
            else:
                try:
                    run.abandon_others()
                    outcome = _update_locked(world, engine, args, gate, parts, base_model, settings)
                finally:
                    lock_conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": UPDATE_LOCK})
        run.finish(outcome.status, outcome.version, outcome.metrics.get("rows_new"), outcome.message)
    return outcome


def _follow(world: World, args: TrainingArguments, settings: Settings) -> UpdateOutcome:
    """A torchrun rank other than 0: train this rank's shards of rank 0's plan, write nothing."""
    plan: _Plan | None = world.broadcast()
    if plan is None:
        return UpdateOutcome("follower", message=f"rank {world.rank}: nothing to train")
    engine = get_engine(settings)
    start = start_from(engine, plan.parent, plan.base_model, args.embedding_dim, args.seed)
    model, tokenizer = start.model, start.tokenizer
    if args.strategy == "lora":
        wrap_lora(model, args)
    device = world.device(args.device)
    cache = StateCache(engine, encoder_digest(model.encoder, device)) if args.strategy == "head" else None
    fine_tune(model, tokenizer, plan.data, args, device, world, from_parent=plan.parent is not None, cache=cache)
    return UpdateOutcome("follower", message=f"rank {world.rank}: trained its shards; "
                                             f"trainable weights sha256 {trainable_digest(model)}")


HORIZON_WARN_SECONDS = 60.0


def _report_horizon(engine) -> None:
    """Say so when an old open transaction holds the cut back (its rows, and later ones, wait)."""
    with engine.connect() as conn:
        oldest = cursors.oldest_transaction(conn)
    if oldest and (oldest["age_seconds"] or 0) > HORIZON_WARN_SECONDS:
        log.warning(f"the cut's horizon is held by a transaction open for {oldest['age_seconds']:,.0f} s "
            f"(pid {oldest['pid']}, database {oldest['database']}, {oldest['state']}); rows committed after it "
            "started wait for it to end. idle_in_transaction_session_timeout bounds this.")


def _update_locked(world: World, engine, args, gate, parts: Parts, base_model, settings) -> UpdateOutcome:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with engine.connect() as conn:
        # An erased version's weights learned from erased rows: its directory goes too (if the
        # erasure's own removal was interrupted).
        referenced = {r[0] for r in conn.execute(sa.text("SELECT artifact_uri FROM model_versions WHERE status <> 'erased'"))}
        parent = current_version(conn)
        xid_from = parent_horizon(conn, parent)
        root = artifacts.database_folder(conn, settings.artifacts_root)
    swept = artifacts.sweep_orphans(root, referenced)
    if swept:
        log.info(f"swept {len(swept)} orphaned artifact directories")
    cut = take_cut(engine, xid_from)
    crash_point("after-cut")
    if cut.row_count == 0:
        world.broadcast(None)
        return UpdateOutcome("no-new-rows", message=f"no new rows past the watermark (xid {xid_from}); no version made")
    log.info(f"cut: {cut.row_count:,} new rows, xid [{cut.xid_from}, {cut.xid_to}), parent {parent}")
    _report_horizon(engine)

    analysed = time.perf_counter()
    analyze_changed(engine)  # the cut's rows are new to the planner when the update follows the load
    timings["statistics_s"] = time.perf_counter() - analysed  # a part of features_s
    store = open_store(settings)
    data = dataset.build(engine, store, cut, args)
    timings["features_s"] = time.perf_counter() - t0
    if len(data.quarantined):
        log.warning(f"{len(data.quarantined):,} rows quarantined (consumed, not trained on): "
                    + "; ".join(f"{n:,} {r}" for r, n in data.quarantined["reason"].value_counts().items()))
    slices = gating.slice_baskets(data.gate_rows, data.guard_rows, data.train_rows, gate.max_eval_baskets)
    if gate.enabled and parent is not None:
        thin = {name: len(b) for name, b in slices.items() if len(b) < gate.min_baskets}
        if thin:  # judged on a handful of baskets, a verdict is noise: wait for more rows, make nothing
            world.broadcast(None)
            return UpdateOutcome("deferred", message="deferred: too little evidence for the gate ("
                                 + ", ".join(f"{s} {n} baskets" for s, n in thin.items())
                                 + f"; at least {gate.min_baskets} needed); no version made, the rows wait for more",
                                 metrics={"rows_new": data.rows_new})
    world.broadcast(_Plan(parent, base_model, data))
    built = build(world, engine, settings, store, root, parent, cut, data, slices, args, gate, parts, base_model,
                  lambda verdict: "deferred" if verdict.status == "deferred" else
                  "promoted" if verdict.promote else "rejected", t0, timings)
    if built.status == "deferred":
        return UpdateOutcome("deferred", message=f"{built.verdict.reason}; no version made", metrics=built.metrics)
    version, status = built.version, built.status
    why = ""
    if status == "candidate":
        why = _why_candidate(engine, version)
        log.info(f"{why} while version {version} trained (it started from {parent}): published as a candidate, "
                 "the pointer stays")
    outcome = {"promoted": "promoted", "rejected": "rejected by the gate; current stays",
               "candidate": f"published as a candidate ({why} since its cut); current stays"}[status]
    return UpdateOutcome("created", version, status == "promoted", f"version {version}: {outcome}", built.metrics)


def _why_candidate(engine, version: int) -> str:
    """What kept a version that passed its gate from the pointer (``registry.versions.publish``)."""
    with engine.connect() as conn:
        metrics = conn.execute(sa.text("SELECT metrics FROM model_versions WHERE version = :v"), {"v": version}).scalar()
    if metrics.get("erased_since_cut"):
        erasures = ", ".join(map(str, metrics["erased_since_cut"]))
        return f"a customer it learned from was erased with `now` (erasure {erasures})"
    return "the pointer moved"
