"""``freshrec update``: rows past the watermark -> Feast features -> towers -> ranker -> gate -> publish.

    freshrec update                       # head strategy, MiniLM, gate on
    freshrec update --strategy lora --no-gate --base-model /path/to/encoder
    torchrun --nproc-per-node 2 -m freshrec update --strategy lora

One watermark covers the whole version: the towers and the ranker train on the same cut, the gate
judges the whole pipeline, and one transaction publishes both.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from freshrec.config import Settings, get_settings
from freshrec.db import cursors, get_engine
from freshrec.faults import crash_point
from freshrec.features import FEATURE_REFS, open_store
from freshrec.ranking.candidates import CandidateConfig
from freshrec.ranking.inputs import OfflineDays, consumed_log
from freshrec.registry import artifacts
from freshrec.registry.versions import NewVersion, current_version, publish
from freshrec.training import dataset
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.training.distributed import World, join
from freshrec.training.examples import TrainingData
from freshrec.training.ranker import RankerArguments
from freshrec.training.state_cache import StateCache, encoder_digest
from freshrec.training.train import fine_tune, wrap_lora
from freshrec.training.watermark import parent_horizon, take_cut
from freshrec.updater import gate as gating
from freshrec.updater import runs
from freshrec.updater.freshness import UPDATE_LOCK
from freshrec.updater.models import (
    code_version,
    encoder_delta,
    needed_days,
    ranking_model,
    start_model,
    trainable_digest,
)
from freshrec.updater.ranker_stage import train_ranker

log = logging.getLogger("freshrec.updater")
_NEWEST_PROFILES = """
SELECT DISTINCT ON (p.user_id) p.profile_text FROM user_profiles p
WHERE p.user_id IN (SELECT DISTINCT user_id FROM interactions
                    WHERE ingest_xid >= CAST(:xid_from AS xid8) AND ingest_xid < CAST(:xid_to AS xid8))
ORDER BY p.user_id, p.valid_from DESC"""


@dataclass
class UpdateOutcome:
    status: str  # created, no-new-rows, locked; "follower" on torchrun ranks other than 0
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
               candidates: CandidateConfig | None = None, trigger: str = "cli") -> UpdateOutcome:
    """One update; ``trigger`` (cli, watch, bench) is recorded with the run in ``update_runs``."""
    settings = settings or get_settings()
    world = join(args.device)
    try:
        if world.is_main:
            return _lead(world, args, gate, ranker_args or RankerArguments(seed=args.seed), candidates or CandidateConfig(),
                         base_model or settings.base_model, settings, trigger)
        return _follow(world, args, settings)
    finally:
        world.close()


def _lead(world: World, args, gate, ranker_args, candidates, base_model, settings, trigger) -> UpdateOutcome:
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
                    outcome = _update_locked(world, engine, args, gate, ranker_args, candidates, base_model, settings)
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
    model, tokenizer, _, _ = start_model(engine, plan.parent, plan.base_model, args.embedding_dim, args.seed)
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


def _update_locked(world: World, engine, args, gate, ranker_args, candidates, base_model, settings) -> UpdateOutcome:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with engine.connect() as conn:
        referenced = {r[0] for r in conn.execute(sa.text("SELECT artifact_uri FROM model_versions"))}
        parent = current_version(conn)
        xid_from = parent_horizon(conn, parent)
        # Each database writes and sweeps only its own folder: several databases may share one
        # artifacts root (tests, benchmarks, staging beside production), and a sweep must never
        # take another database's versions for orphans.
        root = f"{settings.artifacts_root.rstrip('/')}/{conn.execute(sa.text('SELECT current_database()')).scalar()}"
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

    store = open_store(settings)
    data = dataset.build(engine, store, cut, args)
    timings["features_s"] = time.perf_counter() - t0
    world.broadcast(_Plan(parent, base_model, data))
    device = world.device(args.device)
    model, tokenizer, base_path, parent_loaded = start_model(engine, parent, base_model, args.embedding_dim, args.seed)
    parent_model = copy.deepcopy(model) if parent is not None else None
    lora_config = wrap_lora(model, args) if args.strategy == "lora" else None
    # The head strategy keeps the parent's (frozen) encoder: its states carry over between versions.
    cache = StateCache(engine, encoder_digest(model.encoder, device)) if args.strategy == "head" else None

    t1 = time.perf_counter()
    result = fine_tune(model, tokenizer, data, args, device, world, from_parent=parent is not None, cache=cache)
    timings["train_s"] = time.perf_counter() - t1
    on = f"{device} x {world.size} ranks" if world.distributed else str(device)
    log.info(f"towers: {result.epochs} epochs, {result.rows_seen:,} pairs, {result.rows_per_second:,.0f} pairs/s on {on}; "
        f"encoder states {result.encoder_cache}; trainable weights sha256 {trainable_digest(model)}")
    encoder_state, encoder_meta = encoder_delta(model, args, parent, lora_config)

    t2 = time.perf_counter()
    catalog = data.catalog
    candidate = ranking_model(engine, model, tokenizer, device, cache, catalog, None, candidates, args)
    parent_rm = None
    if parent_model is not None:
        parent_cache = cache if args.strategy == "head" else None
        parent_rm = ranking_model(engine, parent_model, tokenizer, device, parent_cache, catalog, parent_loaded.ranker,
                                   parent_loaded.candidates or candidates, args)
    events = consumed_log(engine, cut.xid_to, catalog["item_id"].to_numpy(dtype=object))
    days = OfflineDays(engine, events, needed_days(data))
    timings["ranker_inputs_s"] = time.perf_counter() - t2
    t2 = time.perf_counter()
    ranker, ranker_result, ranker_info = train_ranker(parent_loaded.ranker if parent_loaded else None,
                                                      parent_rm or candidate, events, data, days, ranker_args)
    candidate.ranker = ranker
    timings["ranker_s"] = time.perf_counter() - t2
    log.info(f"ranker: {ranker_result.epochs} epochs on {ranker_result.examples:,} candidates of "
        f"{ranker_info['train_baskets']:,} baskets ({ranker_result.positives:,} bought)")

    if args.strategy == "head":
        # The API looks a returning user's profile up instead of encoding it: encode the newest
        # profile of every user in the cut now (the next update trains on exactly these texts).
        t_warm = time.perf_counter()
        with engine.connect() as conn:
            texts = [r[0] for r in conn.execute(sa.text(_NEWEST_PROFILES), {"xid_from": cut.xid_from, "xid_to": cut.xid_to})]
        candidate.encoder.pooled_all(texts, args.max_user_tokens)
        timings["warm_profiles_s"] = time.perf_counter() - t_warm

    t3 = time.perf_counter()
    slices = gating.slice_baskets(data.gate_rows, data.guard_rows, data.train_rows, gate.max_eval_baskets)
    scores = {"candidate": {s: gating.score(candidate, events, b, days, gate.k) for s, b in slices.items()}}
    if parent_rm is not None:
        scores["parent"] = {s: gating.score(parent_rm, events, b, days, gate.k) for s, b in slices.items()}
    promoted, verdict = gating.decide(scores["candidate"], scores.get("parent"), gate)
    timings["evaluate_s"] = time.perf_counter() - t3
    log.info(f"gate: {verdict}")

    metrics = {**scores, "k": gate.k, "gate": verdict.split(":")[0].split(" ")[0], "gate_reason": verdict,
               "gate_tolerance_relative": gate.tolerance,
               "slices": {"valid_rows": len(data.valid_rows), "gate_rows": len(data.gate_rows),
                          "guard_rows": len(data.guard_rows)},
               "valid_losses": result.valid_losses, "epochs": result.epochs, "rows_seen": result.rows_seen,
               "rows_per_second": result.rows_per_second, "rows_new": data.rows_new, "rows_replay": data.rows_replay,
               "encoder_cache": {**result.encoder_cache,
                                 "evaluation": candidate.encoder.stats.as_dict()},
               "ranker": {"epochs": ranker_result.epochs, "examples": ranker_result.examples,
                          "positives": ranker_result.positives, "valid_losses": ranker_result.valid_losses,
                          **ranker_info}}
    manifest = {"parent": parent, "base_model": base_path, "strategy": args.strategy, "encoder": encoder_meta,
                "watermark": {"xid_from": cut.xid_from, "xid_to": cut.xid_to, "row_count": cut.row_count},
                "feature_refs": FEATURE_REFS, "feast_project": settings.feast.project,
                "params": args.to_dict(), "ranker_params": ranker_args.to_dict(), "candidates": candidates.__dict__,
                "gate": gate.__dict__, "code_version": code_version()}
    uri = artifacts.new_uri(root)
    sha = artifacts.write(uri, model, tokenizer, manifest, metrics, encoder_state, ranker, candidates)
    crash_point("artifact-written")
    timings["total_s"] = time.perf_counter() - t0
    version, status = publish(
        engine,
        NewVersion(parent_version=parent, status="promoted" if promoted else "rejected", strategy=args.strategy,
                   base_model=base_path, artifact_uri=uri, artifact_sha256=sha,
                   params={**args.to_dict(), "ranker": ranker_args.to_dict(), "candidates": candidates.__dict__,
                           "gate": gate.__dict__},
                   metrics=metrics, feast_project=settings.feast.project, feature_refs=FEATURE_REFS,
                   code_version=manifest["code_version"],
                   device=f"{device} x {world.size}" if world.distributed else str(device), timings=timings),
        cut, catalog["item_id"].tolist(), candidate.index.item_vecs,
    )
    if status == "candidate":
        log.info(f"the pointer moved while version {version} trained (it started from {parent}): "
            "published as a candidate, the pointer stays; `freshrec promote` to serve it")
    outcome = {"promoted": "promoted", "rejected": "rejected by the gate; current stays",
               "candidate": "published as a candidate (the pointer moved since its cut); current stays"}[status]
    return UpdateOutcome("created", version, status == "promoted", f"version {version}: {outcome}", metrics)
