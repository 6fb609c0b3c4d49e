"""Train, judge and publish one version from a cut: what ``freshrec update`` and an erasure's replay share.

``build`` takes a cut (the rows past a parent's watermark, or a tainted version's range replayed without
erased rows), trains towers, ranker and search side from the parent, judges them (the gate), writes
the artifact and publishes it in one transaction. The caller says which status the verdict earns:
an update promotes or rejects; a replay publishes and decides the pointer itself.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd
import sqlalchemy as sa

from freshrec.faults import crash_point
from freshrec.features import FEATURE_REFS, push_item_neighbours
from freshrec.ranking.copurchase import from_log
from freshrec.ranking.inputs import consumed_log
from freshrec.ranking.pair_counts import RankedNeighbours, changed_items, has_neighbours
from freshrec.registry import artifacts
from freshrec.registry.versions import NewVersion, promotion_stack, publish
from freshrec.search.pipeline import SearchConfig
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.training.distributed import World
from freshrec.training.examples import TrainingData
from freshrec.training.ranker import RankerArguments
from freshrec.training.search import SearchArguments
from freshrec.training.watermark import Cut
from freshrec.updater import gate as gating
from freshrec.updater import search_stage
from freshrec.updater.stages import Trained, code_version, ranking_model, start_from, train_version
from freshrec.ranking.candidates import CandidateConfig

log = logging.getLogger("freshrec.updater")


@dataclass
class Parts:
    """The arguments of everything beside the towers."""

    ranker: RankerArguments
    candidates: CandidateConfig
    search: SearchArguments


@dataclass
class Built:
    version: int | None  # None: deferred, nothing published
    status: str  # promoted, rejected, candidate; deferred
    verdict: gating.Verdict
    metrics: dict = field(default_factory=dict)


def build(world: World, engine, settings, store, root: str, parent: int | None, cut: Cut, data: TrainingData,
          slices: dict, args: TrainingArguments, gate: GateArguments, parts: Parts, base_model: str | None,
          status_of: Callable[[gating.Verdict], str], t0: float, timings: dict, excludes: tuple[int, ...] = ()) -> Built:
    """Train from ``parent`` on ``data`` (the cut's), judge, write and publish: ``status_of`` maps the verdict."""
    ranker_args, candidates = parts.ranker, parts.candidates
    device = world.device(args.device)
    start = start_from(engine, parent, base_model, args.embedding_dim, args.seed)
    trained = train_version(engine, data, cut, start, args, ranker_args, candidates, device, world)
    timings.update(trained.timings)
    if args.strategy == "head":
        timings["warm_profiles_s"] = _warm_profiles(engine, trained, cut, args)
    t = time.perf_counter()
    search = _train_search(engine, start, trained, cut, data.seed, args, parts.search)
    timings["search_s"] = time.perf_counter() - t

    t = time.perf_counter()
    scores = _judge(engine, trained, slices, gate, parent, args)
    scores["search"] = search.judge(engine, cut)
    verdicts = {"recommendations": gating.decide(scores, gate), "search": gating.decide_search(scores["search"], gate)}
    verdict = gating.combined(verdicts["recommendations"], verdicts["search"])
    timings["evaluate_s"] = time.perf_counter() - t
    log.info(f"gate: recommendations {verdicts['recommendations'].reason}; search {verdicts['search'].reason}")
    status = status_of(verdict)
    if status == "deferred":  # baskets that bought nothing did not count: too few were left
        return Built(None, "deferred", verdict, {"rows_new": data.rows_new})

    metrics = _metrics(trained, data, scores, verdict, gate)
    metrics["search"] = {**scores.pop("search"), "train": search.info(), "gate": verdicts["search"].status,
                         "gate_reason": verdicts["search"].reason}
    metrics["recommendations_gate_reason"] = verdicts["recommendations"].reason
    if excludes:
        metrics["erasures_excluded"] = list(excludes)
    manifest = {"parent": parent, "base_model": start.base_path, "base_model_sha256": start.base_sha256,
                "strategy": args.strategy, "encoder": trained.encoder_meta,
                "watermark": {"xid_from": cut.xid_from, "xid_to": cut.xid_to, "row_count": cut.row_count,
                              "excludes_erasures": list(excludes)},
                "feature_refs": FEATURE_REFS, "feast_project": settings.feast.project,
                "params": args.to_dict(), "ranker_params": ranker_args.to_dict(), "candidates": candidates.__dict__,
                "search_params": parts.search.to_dict(),
                "gate": gate.__dict__, "sample_seed": data.seed, "code_version": code_version()}
    neighbours = _neighbours(engine, trained, cut, parent)
    uri = artifacts.new_uri(root)
    sha = artifacts.write(uri, trained.model, trained.tokenizer, manifest, metrics, trained.encoder_state,
                          trained.candidate.ranker, candidates, (search.adapter, search.config))
    crash_point("artifact-written")
    timings["total_s"] = time.perf_counter() - t0
    version, status = publish(
        engine,
        NewVersion(parent_version=parent, status=status, strategy=args.strategy,
                   base_model=start.base_path, artifact_uri=uri, artifact_sha256=sha,
                   params={**args.to_dict(), "ranker": ranker_args.to_dict(), "candidates": candidates.__dict__,
                           "search": parts.search.to_dict(), "gate": gate.__dict__, "sample_seed": data.seed},
                   metrics=metrics, feast_project=settings.feast.project, feature_refs=FEATURE_REFS,
                   code_version=manifest["code_version"],
                   device=f"{device} x {world.size}" if world.distributed else str(device), timings=timings),
        cut, data.catalog["item_id"].tolist(), trained.candidate.index.item_vecs, data.quarantined, neighbours,
        excludes_erasures=excludes,
    )
    _push_neighbours(store, version, neighbours)
    return Built(version, status, verdict, metrics)



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


_UNREPLAYED = "SELECT EXISTS (SELECT FROM erasures WHERE state <> 'done')"


def _neighbours(engine, trained: Trained, cut, parent: int | None) -> RankedNeighbours:
    """The co-purchase partners the version serves with: each item's top 100 over every basket its
    lineage consumed, ranked in process from the raw purchase rows.

    The same partners follow from the lineage's ``copurchase_counts`` (``tests/test_copurchase_counts.py``
    checks both agree), but ranking them in SQL meant summing every version's counts of the items a
    cut touched: about 10 pair rows per purchase row on this shop, a publish that grew with history
    (README, Benchmarks). The purchase rows are the smaller read.

    A child ranks only the items of its cut's baskets: P(partner | item) changes only with a basket
    holding the item. Its parent's other lists carry over in SQL (about half of them in a week at 10x
    the bundled shop), and only the ranked ones go to the online store."""
    events = trained.events
    if trained.days.fixed is not None:  # a child's log holds only its baskets' users
        events = consumed_log(engine, cut.xid_to, trained.catalog["item_id"].to_numpy(dtype=object))
    counts = from_log(events)
    with engine.connect() as conn:
        # A root, a parent from before stored lists, or an erasure not replayed yet: the parent's lists
        # may still count the erased baskets, which no cut names. Each item is ranked then.
        if parent is None or not has_neighbours(conn, parent) or conn.execute(sa.text(_UNREPLAYED)).scalar():
            return RankedNeighbours(counts.neighbours().frame(events.item_ids))
        ranked = changed_items(conn, cut.xid_from, cut.xid_to)
    rows = pd.Index(events.item_ids).get_indexer(ranked)
    return RankedNeighbours(counts.neighbours(items=rows[rows >= 0]).frame(events.item_ids), ranked, parent)


def _push_neighbours(store, version: int, neighbours: RankedNeighbours) -> None:
    """The lists the version ranked, online now, so an API serving the version finds them (those it
    carried over are there under the version that ranked them); a failure only delays them to the
    next `features materialize` (the rows are committed)."""
    try:
        push_item_neighbours(store, version, neighbours.frame.assign(valid_from=datetime.now(timezone.utc)))
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


def _best_promoted(engine) -> int | None:
    """The version still in the promotion history whose gate Recall@K was highest relative to P-TopFreq's."""
    with engine.connect() as conn:
        stack = promotion_stack(conn)
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
    best = _best_promoted(engine) if gate.enabled and parent is not None else None
    if best is not None and best != parent:  # the parent is scored above
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
