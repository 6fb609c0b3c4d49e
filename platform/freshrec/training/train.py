"""Fine-tune a TwoTower from its parent on the rows past the watermark (head, lora or full)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from freshrec.faults import crash_point
from freshrec.training.args import TrainingArguments
from freshrec.training.distributed import World
from freshrec.models.encoder import Encoder, autocast
from freshrec.models.state_cache import StateCache
from freshrec.training.examples import Examples, TrainingData
from freshrec.models.towers import TwoTower, bce_loss, l2_to_reference


@dataclass
class TrainResult:
    epochs: int = 0
    rows_seen: int = 0  # (user, item, label) pairs stepped over, all ranks together
    prepare_seconds: float = 0.0  # the head strategy's one pass of the frozen encoder over every text
    seconds: float = 0.0  # the optimisation loop, validation included
    valid_losses: list[float] = field(default_factory=list)
    encoder_cache: dict = field(default_factory=dict)  # the head strategy's hits and encodes

    @property
    def rows_per_second(self) -> float:
        """End to end: the head strategy's encoder pass counts against it."""
        total = self.prepare_seconds + self.seconds
        return self.rows_seen / total if total else 0.0


def _batches(groups: list[np.ndarray], size: int, rng: np.random.Generator, world: World):
    """Row indices of this rank's share of each global batch of ``size`` groups per rank.

    Every rank draws the same permutation and takes the same number of steps (DDP needs both).
    """
    order = rng.permutation(len(groups))
    for start in range(0, len(order), size * world.size):
        chosen = order[start : start + size * world.size]
        if len(chosen) >= world.size:  # a tail too short to give every rank a group is dropped
            yield np.concatenate([groups[g] for g in chosen[world.rank :: world.size]])


def _unique(texts: list[str]) -> tuple[list[str], np.ndarray]:
    """Distinct texts and, per input, its position among them (a user's negatives share its text)."""
    index: dict[str, int] = {}
    inverse = np.array([index.setdefault(t, len(index)) for t in texts])
    return list(index), inverse


class _Step:
    """Logits of one batch of examples, by strategy: cached pooled states (head) or live encoding."""

    def __init__(self, enc: Encoder, net: torch.nn.Module, args: TrainingArguments, examples: list[Examples]):
        self.enc, self.net, self.args = enc, net, args
        self.cache: dict[str, torch.Tensor] = {}
        if args.strategy == "head":
            users = sorted({t for ex in examples for t in ex.user_text})
            items = sorted({t for ex in examples for t in ex.item_text})
            self.user_index = {t: i for i, t in enumerate(users)}
            self.item_index = {t: i for i, t in enumerate(items)}
            self.cache["users"] = enc.pooled_all(users, args.max_user_tokens)
            self.cache["items"] = enc.pooled_all(items, args.max_item_tokens)

    def logits(self, ex: Examples, idx: np.ndarray, train: bool = True) -> torch.Tensor:
        users = [ex.user_text[i] for i in idx]
        items = [ex.item_text[i] for i in idx]
        if self.cache:
            u = self.cache["users"][[self.user_index[t] for t in users]]
            v = self.cache["items"][[self.item_index[t] for t in items]]
        else:
            (users, u_at), (items, v_at) = _unique(users), _unique(items)
            u = self.enc.tokens(users, self.args.max_user_tokens)
            v = self.enc.tokens(items, self.args.max_item_tokens)
            u["rows"], v["rows"] = torch.from_numpy(u_at).to(self.enc.device), torch.from_numpy(v_at).to(self.enc.device)
        with autocast(self.enc.device):
            # Training goes through DDP's forward, so its gradient hooks fire; evaluation, which
            # rank 0 runs alone, through the bare model, so it waits on no other rank.
            return (self.net if train else self.enc.model)(u, v).float()


def _valid_loss(step: _Step, ex: Examples, batch_size: int) -> float:
    if len(ex) == 0:
        return float("nan")
    step.enc.model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(ex), batch_size):
            idx = np.arange(start, min(start + batch_size, len(ex)))
            labels = torch.from_numpy(ex.label[idx]).to(step.enc.device)
            total += bce_loss(step.logits(ex, idx, train=False), labels).item() * len(idx)
    return total / len(ex)


def wrap_lora(model: TwoTower, args: TrainingArguments) -> dict:
    """Put PEFT adapters on the shared encoder's attention; return their config for the manifest."""
    from peft import LoraConfig, get_peft_model

    config = {"r": args.lora_rank, "lora_alpha": 2 * args.lora_rank, "lora_dropout": 0.0,
              "target_modules": ["query", "value"]}
    model.encoder = get_peft_model(model.encoder, LoraConfig(**config))
    return config


def _trainable(name: str, strategy: str) -> bool:
    # BERT's pooler feeds nothing here (mean pooling replaces it): training it would only make
    # DistributedDataParallel wait for gradients that never come.
    if name.startswith("pooler.") or ".pooler." in name:
        return False
    return strategy == "full" or (strategy == "lora" and "lora_" in name)


def fine_tune(model: TwoTower, tokenizer, data: TrainingData, args: TrainingArguments, device: torch.device,
              world: World = World(), from_parent: bool = True, cache: StateCache | None = None) -> TrainResult:
    """AdamW on BCE + lambda * ||theta - theta_parent||^2, early-stopped on the held-out newest rows.

    The L2 pull applies only when ``model`` holds a trained parent: toward freshly initialised
    projections it would only hold a model back (``from_parent=False``: a first version, a full
    retrain). Under torchrun each rank trains its shard of every batch and DDP averages the
    gradients; ``rows_seen`` counts all ranks' rows. ``cache`` serves the head strategy's
    frozen-encoder states.
    """
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)  # the same permutation on every rank
    model.to(device)
    enc = Encoder(model, tokenizer, device, cache=cache if args.strategy == "head" else None)
    for name, p in model.encoder.named_parameters():
        p.requires_grad = _trainable(name, args.strategy)
    reference = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    prepared = time.perf_counter()
    step = _Step(enc, world.wrap(model, device), args, [data.train, data.valid])
    batch = args.batch_size * (1 + args.negatives)
    train_groups = data.train.groups()
    result = TrainResult()
    best, best_state, stale = float("inf"), None, 0
    started = time.perf_counter()
    result.prepare_seconds = started - prepared
    for epoch in range(args.epochs):
        model.train()
        rows = 0
        batches = tqdm(_batches(train_groups, args.batch_size, rng, world), desc=f"epoch {epoch + 1}/{args.epochs}",
                       unit="batch", total=-(-len(train_groups) // (args.batch_size * world.size)),
                       disable=None if world.is_main else True, leave=False)
        for idx in batches:
            labels = torch.from_numpy(data.train.label[idx]).to(device)
            loss = bce_loss(step.logits(data.train, idx), labels)
            if args.l2_to_parent and from_parent:
                loss = loss + args.l2_to_parent * l2_to_reference(model, reference)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            rows += len(idx)
            crash_point("training")
        result.rows_seen += int(world.sum(rows))
        result.epochs += 1
        # Rank 0's validation loss decides for all, so every rank stops after the same epoch.
        loss_now = world.broadcast(_valid_loss(step, data.valid, batch) if world.is_main else None)
        result.valid_losses.append(loss_now)
        if not loss_now < best - 1e-4 and not np.isnan(loss_now):
            stale += 1
            if stale > args.patience:
                break
        else:
            best, stale = loss_now, 0
            best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    if best_state is not None:  # early stopping keeps the best epoch, not the last
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in best_state:
                    p.copy_(best_state[n])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result.seconds = time.perf_counter() - started
    result.encoder_cache = enc.stats.as_dict()
    return result

