"""``freshrec update``: rows past the watermark -> Feast features -> fine-tune -> gate -> publish.

    freshrec update                       # head strategy, MiniLM, gate on
    freshrec update --strategy lora --no-gate --base-model /path/to/encoder
"""
from __future__ import annotations

import copy
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sqlalchemy as sa
import torch

import freshrec
from freshrec.config import Settings, get_settings
from freshrec.db import get_engine
from freshrec.faults import crash_point
from freshrec.features import FEATURE_REFS, open_store
from freshrec.registry import artifacts
from freshrec.registry.versions import NewVersion, chain, current_version, publish
from freshrec.training import dataset
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.training.base_models import load_encoder, load_tokenizer, resolve
from freshrec.training.evaluate import baskets, recall_ndcg
from freshrec.training.modeling import TwoTower
from freshrec.training.distributed import World, join
from freshrec.training.examples import TrainingData
from freshrec.training.train import Encoder, fine_tune, wrap_lora
from freshrec.training.watermark import parent_horizon, take_cut

UPDATE_LOCK = 0x66726573  # pg advisory lock key: one updater per database


@dataclass
class UpdateOutcome:
    status: str  # created, no-new-rows, locked; "follower" on torchrun ranks other than 0
    version: int | None = None
    promoted: bool = False
    message: str = ""
    metrics: dict = field(default_factory=dict)


def _code_version() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{freshrec.__version__}+{sha}" if sha else freshrec.__version__


def _score_slice(enc: Encoder, item_vecs: np.ndarray, rows, catalog, args: TrainingArguments, gate: GateArguments) -> dict:
    if len(rows) == 0:
        return {"recall": None, "ndcg": None, "baskets": 0}
    b = baskets(rows, gate.max_eval_baskets)
    users = enc.users(b["user_text"].tolist(), args.max_user_tokens)
    recall, ndcg = recall_ndcg(users @ item_vecs.T, catalog["item_id"].to_numpy(), list(b["items"]), gate.k)
    return {"recall": recall, "ndcg": ndcg, "baskets": len(b)}


def _score(model, tokenizer, device, data, args: TrainingArguments, gate: GateArguments) -> tuple[dict, np.ndarray]:
    """Both slices' scores, and the catalog's item vectors (embedded once per model)."""
    enc = Encoder(model, tokenizer, device)
    item_vecs = enc.items(data.catalog["item_text"].tolist(), args.max_item_tokens)
    slices = {"fresh": data.fresh_slice, "guard": data.guard_slice}
    return {s: _score_slice(enc, item_vecs, rows, data.catalog, args, gate) for s, rows in slices.items()}, item_vecs


def _passes(candidate: dict, parent: dict, tolerance: float) -> bool:
    return all(
        candidate[s][m] is None or parent[s][m] is None or candidate[s][m] >= parent[s][m] - tolerance
        for s in ("fresh", "guard") for m in ("recall", "ndcg")
    )


@dataclass
class _Plan:
    """What rank 0 hands the other ranks under torchrun: where to start, and what to train on."""

    parent: int | None
    base_model: str | None
    data: TrainingData


def _start_model(engine, parent: int | None, base_model: str | None, dim: int, seed: int = 0):
    """The parent's towers (resolved through its chain), or a fresh pair on the base encoder."""
    torch.manual_seed(seed)  # fresh projections start alike on every rank
    if parent is None:
        path = resolve(base_model)
        return TwoTower(load_encoder(path), dim), load_tokenizer(path), str(path)
    with engine.connect() as conn:
        lineage = chain(conn, parent)
    loaded = artifacts.load_chain(lineage, dim)
    return loaded.model, loaded.tokenizer, loaded.manifest["base_model"]


def run_update(args: TrainingArguments, gate: GateArguments, base_model: str | None = None,
               settings: Settings | None = None, log=print) -> UpdateOutcome:
    settings = settings or get_settings()
    world = join(args.device)
    try:
        if world.is_main:
            return _lead(world, args, gate, base_model or settings.base_model, settings, log)
        return _follow(world, args, settings)
    finally:
        world.close()


def _lead(world: World, args, gate, base_model, settings, log) -> UpdateOutcome:
    engine = get_engine(settings)
    # Autocommit: the lock lives in the session, and no open transaction holds back the xmin horizon.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as lock_conn:
        if not lock_conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": UPDATE_LOCK}).scalar():
            world.broadcast(None)
            return UpdateOutcome("locked", message="another update is running")
        try:
            return _update_locked(world, engine, args, gate, base_model, settings, log)
        finally:
            lock_conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": UPDATE_LOCK})


def _follow(world: World, args: TrainingArguments, settings: Settings) -> UpdateOutcome:
    """A torchrun rank other than 0: train this rank's shards of rank 0's plan, write nothing."""
    plan: _Plan | None = world.broadcast()
    if plan is None:
        return UpdateOutcome("follower", message=f"rank {world.rank}: nothing to train")
    model, tokenizer, _ = _start_model(get_engine(settings), plan.parent, plan.base_model, args.embedding_dim, args.seed)
    if args.strategy == "lora":
        wrap_lora(model, args)
    fine_tune(model, tokenizer, plan.data, args, world.device(args.device), world)
    return UpdateOutcome("follower", message=f"rank {world.rank}: trained its shards")


def _update_locked(world: World, engine, args, gate, base_model, settings, log) -> UpdateOutcome:
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
        log(f"swept {len(swept)} orphaned artifact directories")
    cut = take_cut(engine, xid_from)
    crash_point("after-cut")
    if cut.row_count == 0:
        world.broadcast(None)
        return UpdateOutcome("no-new-rows", message=f"no new rows past the watermark (xid {xid_from}); no version made")
    log(f"cut: {cut.row_count:,} new rows, xid [{cut.xid_from}, {cut.xid_to}), parent {parent}")

    store = open_store(settings)
    data = dataset.build(engine, store, cut, args)
    timings["features_s"] = time.perf_counter() - t0
    world.broadcast(_Plan(parent, base_model, data))
    device = world.device(args.device)
    model, tokenizer, base_path = _start_model(engine, parent, base_model, args.embedding_dim, args.seed)
    parent_model = copy.deepcopy(model) if parent is not None else None
    lora_config = wrap_lora(model, args) if args.strategy == "lora" else None

    t1 = time.perf_counter()
    result = fine_tune(model, tokenizer, data, args, device, world)
    timings["train_s"] = time.perf_counter() - t1
    on = f"{device} x {world.size} ranks" if world.distributed else str(device)
    log(f"trained {result.epochs} epochs, {result.rows_seen:,} rows, {result.rows_per_second:,.0f} rows/s on {on}")

    if lora_config is not None:
        from peft import get_peft_model_state_dict

        encoder_state, encoder_meta = get_peft_model_state_dict(model.encoder), {"kind": "lora", "lora_config": lora_config}
        model.encoder = model.encoder.merge_and_unload()
    elif args.strategy == "full":
        encoder_state, encoder_meta = model.encoder.state_dict(), {"kind": "full"}
    else:
        encoder_state, encoder_meta = {}, {"kind": "inherit" if parent is not None else "base"}

    t2 = time.perf_counter()
    candidate_scores, item_vecs = _score(model, tokenizer, device, data, args, gate)
    scores = {"candidate": candidate_scores}
    if parent_model is not None:
        scores["parent"], _ = _score(parent_model.to(device), tokenizer, device, data, args, gate)
    gated = gate.enabled and parent_model is not None
    promoted = _passes(scores["candidate"], scores["parent"], gate.tolerance) if gated else True
    timings["evaluate_s"] = time.perf_counter() - t2

    metrics = {**scores, "k": gate.k, "gate": "passed" if promoted and gated else ("skipped" if not gated else "failed"),
               "valid_losses": result.valid_losses, "epochs": result.epochs, "rows_seen": result.rows_seen,
               "rows_per_second": result.rows_per_second, "rows_new": data.rows_new, "rows_replay": data.rows_replay}
    manifest = {"parent": parent, "base_model": base_path, "strategy": args.strategy, "encoder": encoder_meta,
                "watermark": {"xid_from": cut.xid_from, "xid_to": cut.xid_to, "row_count": cut.row_count},
                "feature_refs": FEATURE_REFS, "feast_project": settings.feast.project,
                "params": args.to_dict(), "gate": gate.__dict__, "code_version": _code_version()}
    uri = artifacts.new_uri(root)
    sha = artifacts.write(uri, model, tokenizer, manifest, metrics, encoder_state)
    crash_point("artifact-written")
    timings["total_s"] = time.perf_counter() - t0
    version = publish(
        engine,
        NewVersion(parent_version=parent, status="promoted" if promoted else "rejected", strategy=args.strategy,
                   base_model=base_path, artifact_uri=uri, artifact_sha256=sha,
                   params={**args.to_dict(), "gate": gate.__dict__}, metrics=metrics,
                   feast_project=settings.feast.project, feature_refs=FEATURE_REFS, code_version=manifest["code_version"],
                   device=f"{device} x {world.size}" if world.distributed else str(device), timings=timings),
        cut, data.catalog["item_id"].tolist(), item_vecs,
    )
    verdict = "promoted" if promoted else "rejected by the gate; current stays"
    return UpdateOutcome("created", version, promoted, f"version {version}: {verdict}", metrics)
