"""The ranker: a small MLP over the candidates' features, trained like the towers.

BCE on (query, candidate, bought-in-that-basket), plus an L2 pull toward the parent's weights when
there is a parent, AdamW, early stopping on held-out baskets. A child starts from its parent's
weights (warm start) and keeps its parent's feature scaling, so versions stay comparable.

Why an MLP and not gradient-boosted trees: on the same candidates and features it ranks as well
as LightGBM (``freshrec bench rankers`` measures both), and only the MLP updates from its parent
with the same loss and the same L2 anchor as the towers, where continued boosting grows the model
with every version. No I/O here.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from freshrec.models.ranker import Ranker


@dataclass
class RankerArguments:
    hidden: int = field(default=64, metadata={"help": "width of the ranker's two hidden layers"})
    epochs: int = field(default=6, metadata={"help": "most passes over the ranker's examples"})
    batch_size: int = field(default=1024, metadata={"help": "candidates per step"})
    learning_rate: float = field(default=2e-3, metadata={"help": "the ranker's AdamW learning rate"})
    l2_to_parent: float = field(default=1e-3, metadata={"help": "lambda of the ranker's L2 pull toward its parent"})
    patience: int = field(default=1, metadata={"help": "epochs without validation improvement before stopping"})
    # 0 by default: the parent's towers trained on every older basket, so their tower features there
    # would be in sample (too good), unlike the new baskets' and tomorrow's. The warm start and the
    # L2 pull keep what the parent learned; the gate's guard slice checks it. (By basket, if set: each
    # basket brings ~150 candidates, so row-for-row replay would swamp the new baskets.)
    replay_baskets: float = field(default=0.0, metadata={"help": "older baskets replayed per new basket"})
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {"hidden": self.hidden >= 1, "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1,
                  "learning_rate": self.learning_rate > 0, "l2_to_parent": self.l2_to_parent >= 0,
                  "replay_baskets": self.replay_baskets >= 0}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid ranker argument {bad[0]}={getattr(self, bad[0])!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RankerResult:
    epochs: int = 0
    examples: int = 0
    positives: int = 0
    seconds: float = 0.0
    valid_losses: list[float] = field(default_factory=list)


def _loss(ranker: Ranker, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    ranker.eval()
    with torch.no_grad():
        total = sum(F.binary_cross_entropy_with_logits(ranker(x[s : s + batch]), y[s : s + batch], reduction="sum").item()
                    for s in range(0, len(x), batch))
    return total / max(len(x), 1)


def fit(ranker: Ranker, train: tuple[np.ndarray, np.ndarray], valid: tuple[np.ndarray, np.ndarray],
        args: RankerArguments, from_parent: bool, names: tuple[str, ...] | None = None) -> RankerResult:
    """Train in place; keeps the epoch with the lowest validation loss.

    ``names`` are the columns of the feature matrices (default: the ranker's own); the ranker
    trains on its own features among them.
    """
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    if len(train[0]) == 0:
        raise ValueError("the ranker has no training examples (no basket with a history in the new rows)")
    names = names or ranker.feature_names
    x, y = (torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in (ranker.select(train[0], names), train[1]))
    xv, yv = (torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in (ranker.select(valid[0], names), valid[1]))
    if not from_parent:
        ranker.fit_scaling(x.numpy())
    reference = {n: p.detach().clone() for n, p in ranker.named_parameters()}
    optimizer = torch.optim.AdamW(ranker.parameters(), lr=args.learning_rate, weight_decay=0.0)
    result = RankerResult(examples=len(x), positives=int(y.sum()))
    validated = len(xv) > 0  # without held-out baskets: every epoch runs and the last is kept
    best, best_state, stale = _loss(ranker, xv, yv, args.batch_size) if from_parent and validated else np.inf, None, 0
    for _ in range(args.epochs):
        ranker.train()
        order = torch.randperm(len(x))
        for start in range(0, len(x), args.batch_size):
            idx = order[start : start + args.batch_size]
            loss = F.binary_cross_entropy_with_logits(ranker(x[idx]), y[idx])
            if from_parent and args.l2_to_parent:
                loss = loss + args.l2_to_parent * sum((p - reference[n]).pow(2).sum() for n, p in ranker.named_parameters())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        result.epochs += 1
        now = _loss(ranker, xv, yv, args.batch_size) if validated else float("nan")
        result.valid_losses.append(now)
        diverged = not all(torch.isfinite(p).all() for p in ranker.parameters())
        if diverged or (validated and not np.isfinite(now)):
            break  # a diverged epoch is never kept: the best so far (or the parent) stands
        if not validated or now < best - 1e-5:
            best, best_state, stale = now, {k: v.clone() for k, v in ranker.state_dict().items()}, 0
        else:
            stale += 1
            if stale > args.patience:
                break
    if best_state is not None:
        ranker.load_state_dict(best_state)
    elif from_parent:  # no epoch beat the parent on held-out baskets: keep the parent's weights
        ranker.load_state_dict({**ranker.state_dict(), **{n: reference[n] for n in reference}})
    else:
        raise ValueError("the ranker diverged in its first epoch (non-finite weights or loss): lower its learning rate")
    result.seconds = time.perf_counter() - started
    return result
