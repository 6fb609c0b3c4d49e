"""The stages of making a version, shared by ``freshrec update`` and the benchmark's full retrain.

``start_from`` (the parent, or the base encoder) -> ``train_version`` (towers, then the ranker) ->
the caller gates and publishes it (the updater) or scores it unpublished (the benchmark). One
code path for both keeps the benchmark's arms alike by construction: a full retrain is
``train_version`` with no parent.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

import freshrec
from freshrec.models.base import base_digest, load_encoder, load_tokenizer, resolve
from freshrec.models.encoder import Encoder
from freshrec.models.ranker import Ranker
from freshrec.models.state_cache import StateCache, encoder_digest
from freshrec.models.towers import TwoTower
from freshrec.ranking.events import BrowseLog, EventLog, epoch_seconds
from freshrec.ranking.copurchase import FetchedNeighbours
from freshrec.ranking.inputs import OfflineDays, consumed_browsing, consumed_log
from freshrec.ranking.pair_counts import has_neighbours, read_neighbours
from freshrec.ranking.pipeline import day_of
from freshrec.ranking.scorer import RankingModel
from freshrec.registry import artifacts
from freshrec.registry.versions import chain
from freshrec.training.args import TrainingArguments
from freshrec.training.distributed import World
from freshrec.training.examples import TrainingData
from freshrec.training.ranker import RankerArguments, RankerResult
from freshrec.training.train import TrainResult, fine_tune, wrap_lora
from freshrec.ranking.candidates import CandidateConfig
from freshrec.training.watermark import Cut

log = logging.getLogger("freshrec.updater")


def code_version() -> str:
    """The installed package's version (images carry no .git to ask)."""
    try:
        return metadata.version("freshrec")
    except metadata.PackageNotFoundError:
        return freshrec.__version__


@dataclass
class Start:
    """Where a version starts: its parent's towers and ranker (resolved through its chain), or the
    base encoder with fresh projections."""

    parent: int | None
    model: TwoTower
    tokenizer: object
    base_path: str
    loaded: artifacts.LoadedVersion | None = None

    @property
    def base_sha256(self) -> str:
        """The base model's digest: the parent's record, or the directory's own for a first version."""
        recorded = self.loaded.manifest.get("base_model_sha256") if self.loaded else None
        return recorded or base_digest(Path(self.base_path))

    @property
    def ranker(self) -> Ranker | None:
        return self.loaded.ranker if self.loaded else None


def start_from(engine, parent: int | None, base_model: str | None, dim: int, seed: int = 0) -> Start:
    import torch

    torch.manual_seed(seed)  # fresh projections start alike on every rank
    if parent is None:
        path = resolve(base_model)
        return Start(None, TwoTower(load_encoder(path), dim), load_tokenizer(path), str(path))
    with engine.connect() as conn:
        lineage = chain(conn, parent)
    loaded = artifacts.load_chain(lineage, dim)
    return Start(parent, loaded.model, loaded.tokenizer, loaded.manifest["base_model"], loaded)


def trainable_digest(model) -> str:
    """sha256 of the trainable weights: data-parallel ranks must end with the very same ones."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def encoder_delta(model: TwoTower, args: TrainingArguments, parent: int | None, lora_config: dict | None):
    """What the version stores of its encoder, and how to rebuild it (merges LoRA into the model)."""
    if args.strategy == "lora":
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(model.encoder)
        model.encoder = model.encoder.merge_and_unload()
        return state, {"kind": "lora", "lora_config": lora_config}
    if args.strategy == "full":
        return model.encoder.state_dict(), {"kind": "full"}
    return {}, {"kind": "inherit" if parent is not None else "base"}


def ranking_model(engine, model, tokenizer, device, cache, catalog, ranker, config, args) -> RankingModel:
    """A version's parts as the pipeline uses them (its encoder's states through the shared cache)."""
    model.to(device).eval()
    cache = cache or StateCache(engine, encoder_digest(model.encoder, device))
    return RankingModel.build(Encoder(model, tokenizer, device, cache=cache), catalog["item_text"].tolist(), ranker,
                              config, args.max_user_tokens, args.max_item_tokens)


def needed_days(data: TrainingData) -> np.ndarray:
    """The UTC days of every basket the ranker trains, validates or is gated on."""
    frames = [data.train_rows, data.valid_rows, data.gate_rows, data.guard_rows]
    times = np.concatenate([epoch_seconds(f["event_timestamp"]) for f in frames if len(f)] or [np.zeros(0)])
    return np.unique(day_of(times))


def users_of(data: TrainingData) -> list[str]:
    """Every user whose baskets the ranker trains, validates or is gated on."""
    frames = [data.train_rows, data.valid_rows, data.gate_rows, data.guard_rows]
    return sorted({u for f in frames for u in f["user_id"]})


def ranker_inputs(engine, parent: int | None, cut: Cut, data: TrainingData, item_ids: np.ndarray
                  ) -> tuple[EventLog, OfflineDays]:
    """The event log and day states the ranker trains and is gated on.

    A child reads only what its baskets need: the purchase history of the users whose baskets it
    trains, validates or is gated on, and, for co-purchase, its parent's published neighbours, read
    item by item as those users' baskets ask for them. These are what served the cut's baskets when
    they happened (no train/serve skew); for the older baskets it replays, they also count baskets
    that came later, an approximation the README states. Nothing here grows with the shop's history.

    A version without a parent (a first version, a full retrain), or whose parent has no stored
    neighbours, counts co-purchase through every consumed basket, point in time (its cut is all
    of history anyway)."""
    with engine.connect() as conn:
        stored = parent is not None and has_neighbours(conn, parent)
    if not stored:
        events = consumed_log(engine, cut.xid_to, item_ids)
        return events, OfflineDays(engine, events, needed_days(data))
    events = consumed_log(engine, cut.xid_to, item_ids, users=users_of(data))
    index = pd.Index(item_ids)

    def fetch(ids: list[str]) -> dict:
        with engine.connect() as conn:
            return read_neighbours(conn, parent, ids)

    return events, OfflineDays(engine, events, needed_days(data), FetchedNeighbours(fetch, item_ids, index))


@dataclass
class Trained:
    """A version's parts, trained and not yet judged or published."""

    model: TwoTower
    tokenizer: object
    towers: TrainResult
    encoder_state: dict
    encoder_meta: dict
    candidate: RankingModel  # the new towers, item index and ranker, as the pipeline ranks with them
    parent: RankingModel | None  # the parent's, for the gate
    events: EventLog
    browse: BrowseLog  # the same users' views, clicks and carts: candidate context
    days: OfflineDays
    ranker: RankerResult
    ranker_info: dict
    cache: StateCache | None
    device: object
    catalog: object  # item_id, item_text: the index's items, in its order
    timings: dict[str, float] = field(default_factory=dict)


def train_version(engine, data: TrainingData, cut: Cut, start: Start, args: TrainingArguments,
                  ranker_args: RankerArguments, candidates: CandidateConfig, device, world: World = World()) -> Trained:
    """Towers from ``start`` on ``data``, then the ranker, with its tower features out of sample."""
    from freshrec.updater.ranker_stage import train_ranker

    timings: dict[str, float] = {}
    model, tokenizer, parent = start.model, start.tokenizer, start.parent
    parent_model = copy.deepcopy(model) if parent is not None else None
    lora_config = wrap_lora(model, args) if args.strategy == "lora" else None
    # The head strategy keeps the parent's (frozen) encoder: its states carry over between versions.
    cache = StateCache(engine, encoder_digest(model.encoder, device)) if args.strategy == "head" else None
    # Cross-fitting (a version without a parent) trains fold towers from the same start: copy it first.
    fold_start = copy.deepcopy(model) if parent is None else None

    t = time.perf_counter()
    towers = fine_tune(model, tokenizer, data, args, device, world, from_parent=parent is not None, cache=cache)
    timings["train_s"] = time.perf_counter() - t
    on = f"{device} x {world.size} ranks" if world.distributed else str(device)
    log.info(f"towers: {towers.epochs} epochs, {towers.rows_seen:,} pairs, {towers.rows_per_second:,.0f} pairs/s on {on}; "
             f"encoder states {towers.encoder_cache}; trainable weights sha256 {trainable_digest(model)}")
    encoder_state, encoder_meta = encoder_delta(model, args, parent, lora_config)

    t = time.perf_counter()
    catalog = data.catalog
    candidate = ranking_model(engine, model, tokenizer, device, cache, catalog, None, candidates, args)
    parent_rm = None
    if parent_model is not None:
        parent_rm = ranking_model(engine, parent_model, tokenizer, device, cache if args.strategy == "head" else None,
                                  catalog, start.ranker, start.loaded.candidates or candidates, args)
    item_ids = catalog["item_id"].to_numpy(dtype=object)
    events, days = ranker_inputs(engine, parent, cut, data, item_ids)
    browse = consumed_browsing(engine, cut.xid_to, users_of(data), item_ids)
    timings["ranker_inputs_s"] = time.perf_counter() - t

    t = time.perf_counter()
    if parent_rm is not None:
        scorers = [(parent_rm, None)]  # the parent never trained on the cut's baskets
    else:
        scorers = fold_scorers(engine, fold_start, tokenizer, data, args, candidates, device)
    ranker, ranker_result, ranker_info = train_ranker(start.ranker, scorers, events, data, days, ranker_args, browse)
    candidate.ranker = ranker
    timings["ranker_s"] = time.perf_counter() - t
    log.info(f"ranker: {ranker_result.epochs} epochs on {ranker_result.examples:,} candidates of "
             f"{ranker_info['train_baskets']:,} baskets ({ranker_result.positives:,} bought)"
             + "".join(f"; {ranker_info[k]}" for k in ("fresh", "untrained") if k in ranker_info))
    return Trained(model, tokenizer, towers, encoder_state, encoder_meta, candidate, parent_rm, events, browse, days,
                   ranker_result, ranker_info, cache, device, catalog, timings)


FOLDS = 2


def fold_of(user_ids) -> np.ndarray:
    """A user's fold: stable across runs and processes (not Python's salted hash)."""
    return np.array([int.from_bytes(hashlib.md5(str(u).encode()).digest()[:2], "little") % FOLDS for u in user_ids])


def fold_scorers(engine, start_model: TwoTower, tokenizer, data: TrainingData, args: TrainingArguments,
                 candidates: CandidateConfig, device) -> list[tuple[RankingModel, int]]:
    """Out-of-fold tower scores for a version without a parent (a first version, a full retrain).

    Its towers trained on every basket the ranker learns from, so their scores there are in sample
    (too good): the ranker would learn to trust them more than it should on tomorrow's baskets.
    Instead, for each fold of users, towers trained on the other folds' rows score its baskets.
    Fold towers train the projections only (the ``head`` strategy, from the same start), whatever
    the version's strategy: out of sample is what matters here, and heads cost little.
    """
    head_args = replace(args, strategy="head")
    cache = StateCache(engine, encoder_digest(start_model.encoder, device))
    folds = fold_of(data.train_rows["user_id"])[data.train.group]
    valid_folds = fold_of(data.valid_rows["user_id"])[data.valid.group] if len(data.valid) else np.zeros(0, int)
    scorers = []
    for fold in range(FOLDS):
        model = copy.deepcopy(start_model)
        rest = np.flatnonzero(folds != fold)
        fold_data = copy.copy(data)
        fold_data.train = data.train.take(rest)
        fold_data.valid = data.valid.take(np.flatnonzero(valid_folds != fold))
        fine_tune(model, tokenizer, fold_data, head_args, device, from_parent=False, cache=cache)
        scorers.append((ranking_model(engine, model, tokenizer, device, cache, data.catalog, None, candidates, args),
                        fold))
    return scorers
