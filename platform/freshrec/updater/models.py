"""The model side of an update: where it starts, what it stores of its encoder, what it ranks with."""
from __future__ import annotations

import hashlib
from importlib import metadata

import numpy as np

import freshrec
from freshrec.ranking.events import epoch_seconds
from freshrec.ranking.model import RankingModel
from freshrec.ranking.pipeline import day_of
from freshrec.registry import artifacts
from freshrec.registry.versions import chain
from freshrec.training.args import TrainingArguments
from freshrec.training.base_models import load_encoder, load_tokenizer, resolve
from freshrec.training.encoder import Encoder
from freshrec.training.examples import TrainingData
from freshrec.training.modeling import TwoTower
from freshrec.training.state_cache import StateCache, encoder_digest


def code_version() -> str:
    """The installed package's version (images carry no .git to ask)."""
    try:
        return metadata.version("freshrec")
    except metadata.PackageNotFoundError:
        return freshrec.__version__


def start_model(engine, parent: int | None, base_model: str | None, dim: int, seed: int = 0):
    """The parent's towers (resolved through its chain) and the parent as loaded, or fresh towers."""
    import torch

    torch.manual_seed(seed)  # fresh projections start alike on every rank
    if parent is None:
        path = resolve(base_model)
        return TwoTower(load_encoder(path), dim), load_tokenizer(path), str(path), None
    with engine.connect() as conn:
        lineage = chain(conn, parent)
    loaded = artifacts.load_chain(lineage, dim)
    return loaded.model, loaded.tokenizer, loaded.manifest["base_model"], loaded


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
