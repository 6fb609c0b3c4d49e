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
from datetime import datetime, timezone
from dataclasses import dataclass, field

import sqlalchemy as sa

from freshrec.config import Settings, get_settings
from freshrec.db import cursors, get_engine
from freshrec.faults import crash_point
from freshrec.features import FEATURE_REFS, open_store, push_item_neighbours
from freshrec.ranking.copurchase import from_log
from freshrec.models.state_cache import StateCache, encoder_digest
from freshrec.ranking.candidates import CandidateConfig
from freshrec.registry import artifacts
from freshrec.registry.versions import NewVersion, current_version, promotion_stack, publish
from freshrec.training import dataset
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.training.distributed import World, join
from freshrec.training.examples import TrainingData
from freshrec.training.ranker import RankerArguments
from freshrec.training.search import SearchArguments
from freshrec.search.pipeline import SearchConfig
from freshrec.training.train import fine_tune, wrap_lora
from freshrec.training.watermark import parent_horizon, take_cut
from freshrec.updater import gate as gating
from freshrec.updater import runs
from freshrec.updater import search_stage
from freshrec.updater.freshness import UPDATE_LOCK
from freshrec.updater.stages import (
    Trained,
    code_version,
    ranking_model,
    start_from,
    trainable_digest,
    train_version,
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
class _Parts:
    """The arguments of everything beside the towers."""

    ranker: RankerArguments
    candidates: CandidateConfig
    search: SearchArguments


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
            parts = _Parts(ranker_args or RankerArguments(seed=args.seed), candidates or CandidateConfig(),
                           search_args or SearchArguments(seed=args.seed))
            return _lead(world, args, gate, parts, base_model or settings.base_model, settings, trigger)
        return _follow(world, args, settings)
    finally:
        world.close()


def _lead(world: World, args, gate, parts: _Parts, base_model, settings, trigger) -> UpdateOutcome:
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


def _update_locked(world: World, engine, args, gate, parts: _Parts, base_model, settings) -> UpdateOutcome:
    ranker_args, candidates = parts.ranker, parts.candidates
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with engine.connect() as conn:
        referenced = {r[0] for r in conn.execute(sa.text("SELECT artifact_uri FROM model_versions"))}
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
    device = world.device(args.device)
    start = start_from(engine, parent, base_model, args.embedding_dim, args.seed)
    trained = train_version(engine, data, cut, start, args, ranker_args, candidates, device, world)
    timings.update(trained.timings)
    if args.strategy == "head":
        timings["warm_profiles_s"] = _warm_profiles(engine, trained, cut, args)
    t = time.perf_counter()
    search = _train_search(engine, start, trained, cut, data.seed, args, parts.search)
    timings["search_s"] = time.perf_counter() - t

    t3 = time.perf_counter()
    scores = _judge(engine, trained, slices, gate, parent, args)
    scores["search"] = search.judge(engine, cut)
    verdicts = {"recommendations": gating.decide(scores, gate), "search": gating.decide_search(scores["search"], gate)}
    verdict = gating.combined(verdicts["recommendations"], verdicts["search"])
    timings["evaluate_s"] = time.perf_counter() - t3
    log.info(f"gate: recommendations {verdicts['recommendations'].reason}; search {verdicts['search'].reason}")
    if verdict.status == "deferred":  # baskets that bought nothing did not count: too few were left
        return UpdateOutcome("deferred", message=f"{verdict.reason}; no version made", metrics={"rows_new": data.rows_new})

    metrics = _metrics(trained, data, scores, verdict, gate)
    metrics["search"] = {**scores.pop("search"), "train": search.info(), "gate": verdicts["search"].status,
                         "gate_reason": verdicts["search"].reason}
    metrics["recommendations_gate_reason"] = verdicts["recommendations"].reason
    manifest = {"parent": parent, "base_model": start.base_path, "base_model_sha256": start.base_sha256,
                "strategy": args.strategy,
                "encoder": trained.encoder_meta,
                "watermark": {"xid_from": cut.xid_from, "xid_to": cut.xid_to, "row_count": cut.row_count},
                "feature_refs": FEATURE_REFS, "feast_project": settings.feast.project,
                "params": args.to_dict(), "ranker_params": ranker_args.to_dict(), "candidates": candidates.__dict__,
                "search_params": parts.search.to_dict(),
                "gate": gate.__dict__, "sample_seed": data.seed, "code_version": code_version()}
    # The co-purchase partners the version serves with, from every basket its lineage consumed.
    neighbours = from_log(trained.events).neighbours().frame(trained.events.item_ids)
    uri = artifacts.new_uri(root)
    sha = artifacts.write(uri, trained.model, trained.tokenizer, manifest, metrics, trained.encoder_state,
                          trained.candidate.ranker, candidates, (search.adapter, search.config))
    crash_point("artifact-written")
    timings["total_s"] = time.perf_counter() - t0
    version, status = publish(
        engine,
        NewVersion(parent_version=parent, status="promoted" if verdict.promote else "rejected", strategy=args.strategy,
                   base_model=start.base_path, artifact_uri=uri, artifact_sha256=sha,
                   params={**args.to_dict(), "ranker": ranker_args.to_dict(), "candidates": candidates.__dict__,
                           "search": parts.search.to_dict(), "gate": gate.__dict__, "sample_seed": data.seed},
                   metrics=metrics, feast_project=settings.feast.project, feature_refs=FEATURE_REFS,
                   code_version=manifest["code_version"],
                   device=f"{device} x {world.size}" if world.distributed else str(device), timings=timings),
        cut, data.catalog["item_id"].tolist(), trained.candidate.index.item_vecs, data.quarantined, neighbours,
    )
    _push_neighbours(store, version, neighbours)
    if status == "candidate":
        log.info(f"the pointer moved while version {version} trained (it started from {parent}): "
            "published as a candidate, the pointer stays; `freshrec promote` to serve it")
    outcome = {"promoted": "promoted", "rejected": "rejected by the gate; current stays",
               "candidate": "published as a candidate (the pointer moved since its cut); current stays"}[status]
    return UpdateOutcome("created", version, status == "promoted", f"version {version}: {outcome}", metrics)


_NEWEST_PROFILES = """
SELECT DISTINCT ON (p.user_id) p.profile_text FROM user_profiles p
WHERE p.user_id IN (SELECT DISTINCT user_id FROM interactions
                    WHERE ingest_xid >= CAST(:xid_from AS xid8) AND ingest_xid < CAST(:xid_to AS xid8))
ORDER BY p.user_id, p.valid_from DESC"""


def _warm_profiles(engine, trained: Trained, cut, args: TrainingArguments) -> float:
    """Encode the newest profile of every user in the cut now, into the shared cache: the API looks a
    returning user's state up instead of running the encoder (and the next update trains on them).

    The API runs on CPUs in full precision: a CUDA updater encodes these in fp32 too, under the
    CPU's cache key, or the API would never find them.
    """
    started = time.perf_counter()
    with engine.connect() as conn:
        texts = [r[0] for r in conn.execute(sa.text(_NEWEST_PROFILES), {"xid_from": cut.xid_from, "xid_to": cut.xid_to})]
    encoder = trained.candidate.encoder
    serving = encoder.for_serving(engine)
    serving.pooled_all(texts, args.max_user_tokens)
    encoder.stats.hits += serving.stats.hits
    encoder.stats.encoded += serving.stats.encoded
    return time.perf_counter() - started


def _push_neighbours(store, version: int, neighbours) -> None:
    """Online now, so an API serving the version finds them; a failure only delays them to the next
    `features materialize` (the rows are committed)."""
    try:
        push_item_neighbours(store, version, neighbours.assign(valid_from=datetime.now(timezone.utc)))
    except Exception as err:  # noqa: BLE001 - the version is published either way
        log.warning(f"version {version}'s neighbours did not reach the online store ({err}); "
                    "`freshrec features materialize` writes them")


@dataclass
class _SearchOutcome:
    """The search side of one update: its adapter trained, and what it needs to be judged."""

    side: search_stage.SearchSide
    adapter: object
    parent: object
    first: bool
    config: SearchConfig
    pairs: search_stage.QueryPairs
    fit: object

    def judge(self, engine, cut) -> dict:
        adapters = {"candidate": self.adapter, "day_one": None, **({} if self.first else {"parent": self.parent})}
        popularity = search_stage.popularity_at(engine, self.side, cut.event_time_max)
        return search_stage.judge_search(engine, self.side, adapters, self.pairs.gate, popularity)

    def info(self) -> dict:
        return {"query_events": self.pairs.new, "replayed": self.pairs.replay, "known_item_pairs_excluded":
                self.pairs.excluded, "train_pairs": len(self.pairs.train), "valid_pairs": len(self.pairs.valid),
                "gate_pairs": len(self.pairs.gate), "epochs": self.fit.epochs, "valid_losses": self.fit.valid_losses,
                "seconds": self.fit.seconds}


def _train_search(engine, start, trained: Trained, cut, seed: int, args: TrainingArguments,
                  search_args: SearchArguments) -> _SearchOutcome:
    """The query adapter from the parent's (or from the pre-trained encoder) on the cut's query events.

    A ``head`` chain's encoder is its base encoder, unchanged: it serves as the search side's too.
    """
    unchanged = args.strategy == "head" and (start.loaded is None or start.loaded.encoder_is_base)
    encoder = start.model.encoder if unchanged else None
    side = search_stage.base_side(engine, start.base_path, trained.device, encoder, start.tokenizer)
    pairs = search_stage.query_pairs(engine, cut, side, seed, search_args, args.holdout_fraction)
    parent = start.loaded.search[0] if start.loaded is not None and start.loaded.search else None
    adapter, fit = search_stage.train_search(side, parent, pairs, search_args)
    log.info(f"search: {len(pairs.train):,} query pairs ({pairs.new:,} new, {pairs.replay:,} replayed, "
             f"{pairs.excluded:,} known-item pairs left out), {fit.epochs} epochs")
    return _SearchOutcome(side, adapter, parent, start.parent is None, SearchConfig(), pairs, fit)


def _best_promoted(engine, exclude: int | None) -> int | None:
    """The version still in the promotion history whose gate Recall@K was highest relative to P-TopFreq's."""
    with engine.connect() as conn:
        stack = [v for v in promotion_stack(conn) if v != exclude]
        if not stack:
            return None
        return conn.execute(sa.text(
            "SELECT version FROM model_versions WHERE version = ANY(:v) AND metrics->'anchor'->>'ratio' IS NOT NULL "
            "ORDER BY (metrics->'anchor'->>'ratio')::float8 DESC, version DESC LIMIT 1"), {"v": stack}).scalar()


def _judge(engine, trained: Trained, slices, gate: GateArguments, parent: int | None, args) -> dict:
    """Every pipeline's scores on the gate's slices: the candidate, its parent, P-TopFreq, the best
    promoted version (when it is not the parent)."""
    def on_slices(model) -> dict:
        return {s: gating.score(model, trained.events, b, trained.days, gate.k, trained.browse) for s, b in slices.items()}

    scores = {"candidate": on_slices(trained.candidate),
              "p_topfreq": {s: gating.score_p_topfreq(trained.events, b, trained.days, gate.k) for s, b in slices.items()}}
    if trained.parent is not None:
        scores["parent"] = on_slices(trained.parent)
    best = _best_promoted(engine, exclude=parent) if gate.enabled and parent is not None else None
    if best is not None:
        start = start_from(engine, best, None, args.embedding_dim)
        model = ranking_model(engine, start.model, start.tokenizer, trained.device, None, trained.catalog,
                              start.ranker, start.loaded.candidates or trained.candidate.config, args)
        scores["best"] = {**on_slices(model), "version": best}
    return scores


def _metrics(trained: Trained, data: TrainingData, scores: dict, verdict: gating.Verdict, gate: GateArguments) -> dict:
    towers, candidate = trained.towers, trained.candidate
    ratio = gating.anchor_ratio(scores)
    return {**scores, "k": gate.k, "gate": verdict.status, "gate_reason": verdict.reason,
            "gate_tolerance_relative": gate.tolerance, "gate_min_baskets": gate.min_baskets,
            "anchor": {"ratio": ratio, "against": "p_topfreq", "slice": "gate"},
            "slices": {"valid_rows": len(data.valid_rows), "gate_rows": len(data.gate_rows),
                       "guard_rows": len(data.guard_rows)},
            "valid_losses": towers.valid_losses, "epochs": towers.epochs, "rows_seen": towers.rows_seen,
            "rows_per_second": towers.rows_per_second, "rows_new": data.rows_new, "rows_replay": data.rows_replay,
            "rows_quarantined": len(data.quarantined), "sample_seed": data.seed,
            "encoder_cache": {**towers.encoder_cache, "evaluation": candidate.encoder.stats.as_dict()},
            "ranker": {"epochs": trained.ranker.epochs, "examples": trained.ranker.examples,
                       "positives": trained.ranker.positives, "valid_losses": trained.ranker.valid_losses,
                       **trained.ranker_info}}
