"""Fine-tune the search side's query adapter on (query, item) pairs: the searches that led to a click,
cart or purchase.

Contrastive: for each query, its item against the batch's other items and a sample of the catalog
(softmax over cosines / temperature), in the pre-trained encoder's space, whose item side never
moves. Plus an L2 pull toward the parent's adapter (toward zero, the pre-trained encoder itself,
for a first version): it learns the shop's words without forgetting the language. Early stopping
on held-out pairs keeps the best epoch. No I/O here.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from freshrec.models.query_adapter import QueryAdapter


@dataclass
class SearchArguments:
    epochs: int = field(default=5, metadata={"help": "most passes over the query pairs"})
    batch_size: int = field(default=128, metadata={"help": "query pairs per step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the query adapter"})
    negatives: int = field(default=512, metadata={"help": "catalog items sampled as negatives per step"})
    temperature: float = field(default=0.05, metadata={"help": "softmax temperature over cosines"})
    # 1e-3: on the bundled data's first 13 weeks (synthetic queries), 0.1 held the adapter so close to its start
    # that held-out searches gained a third as much (reciprocal rank 0.718 -> 0.733, against 0.756 at 1e-3),
    # and 1e-3 cost nothing on the known-item queries that never train (0.775 -> 0.794).
    l2_to_parent: float = field(default=1e-3, metadata={"help": "lambda of the L2 pull toward the parent's adapter"})
    replay_fraction: float = field(default=1.0, metadata={"help": "older query events replayed per new one"})
    patience: int = field(default=1, metadata={"help": "epochs without validation improvement before stopping"})
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {"epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "learning_rate": self.learning_rate > 0,
                  "negatives": self.negatives >= 0, "temperature": self.temperature > 0,
                  "l2_to_parent": self.l2_to_parent >= 0, "replay_fraction": 0 <= self.replay_fraction <= 10}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid search argument {bad[0]}={getattr(self, bad[0])!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchFit:
    epochs: int = 0
    pairs: int = 0
    seconds: float = 0.0
    valid_losses: list[float] = field(default_factory=list)


LOGITS_PER_BLOCK = 1 << 24  # query x item logits at once (64 MiB of float32)


def _loss(adapter: QueryAdapter, queries: torch.Tensor, targets: torch.Tensor, items: torch.Tensor,
          negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean cross-entropy of each query's own item among the batch's items and the sampled negatives.

    A block of queries at a time: a first version's held-out set against its items was one matrix
    of tens of thousands squared (with its softmax, most of a 15 GiB peak at 30x the bundled shop).
    """
    columns, label = torch.unique(torch.cat([targets, negatives]), return_inverse=True)
    candidates, label = items[columns].T, label[: len(targets)]
    block = max(1, LOGITS_PER_BLOCK // len(columns))
    total = queries.new_zeros(())
    for start in range(0, len(targets), block):
        logits = adapter(queries[start : start + block]) @ candidates / temperature
        total = total + F.cross_entropy(logits, label[start : start + block], reduction="sum")
    return total / len(targets)


def fit_adapter(adapter: QueryAdapter, train: tuple[np.ndarray, np.ndarray], valid: tuple[np.ndarray, np.ndarray],
                item_vectors: np.ndarray, args: SearchArguments) -> SearchFit:
    """Train in place on (query states, item rows); keeps the epoch with the lowest validation loss
    (the starting point itself, when no epoch beats it)."""
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    items = torch.from_numpy(np.ascontiguousarray(item_vectors, np.float32))
    q, t = torch.from_numpy(np.ascontiguousarray(train[0], np.float32)), torch.from_numpy(train[1].astype(np.int64))
    qv, tv = torch.from_numpy(np.ascontiguousarray(valid[0], np.float32)), torch.from_numpy(valid[1].astype(np.int64))
    reference = {n: p.detach().clone() for n, p in adapter.named_parameters()}
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=args.learning_rate, weight_decay=0.0)
    result = SearchFit(pairs=len(t))
    negatives = torch.from_numpy(rng.integers(0, len(items), size=max(args.negatives, 1)))

    def valid_loss() -> float:
        if not len(tv):
            return float("nan")
        adapter.eval()
        with torch.no_grad():
            return float(_loss(adapter, qv, tv, items, negatives, args.temperature))

    best, best_state, stale = valid_loss(), None, 0
    for _ in range(args.epochs):
        adapter.train()
        order = torch.from_numpy(rng.permutation(len(t)))
        for start in range(0, len(t), args.batch_size):
            batch = order[start : start + args.batch_size]
            sampled = torch.from_numpy(rng.integers(0, len(items), size=args.negatives))
            loss = _loss(adapter, q[batch], t[batch], items, sampled, args.temperature)
            if args.l2_to_parent:
                loss = loss + args.l2_to_parent * sum((p - reference[n]).pow(2).sum() for n, p in adapter.named_parameters())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        result.epochs += 1
        now = valid_loss()
        result.valid_losses.append(now)
        if not np.isfinite(best) or now < best - 1e-4:
            best, best_state, stale = now, {k: v.clone() for k, v in adapter.state_dict().items()}, 0
        else:
            stale += 1
            if stale > args.patience:
                break
    if best_state is not None:
        adapter.load_state_dict(best_state)
    elif len(tv):  # no epoch beat the starting point on held-out pairs: keep it
        adapter.load_state_dict({n: reference[n] for n in reference})
    result.seconds = time.perf_counter() - started
    return result
