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
from torch import nn


@dataclass
class RankerArguments:
    hidden: int = field(default=64, metadata={"help": "width of the ranker's two hidden layers"})
    epochs: int = field(default=6, metadata={"help": "most passes over the ranker's examples"})
    batch_size: int = field(default=1024, metadata={"help": "candidates per step"})
    learning_rate: float = field(default=2e-3, metadata={"help": "the ranker's AdamW learning rate"})
    l2_to_parent: float = field(default=1e-3, metadata={"help": "lambda of the ranker's L2 pull toward its parent"})
    patience: int = field(default=1, metadata={"help": "epochs without validation improvement before stopping"})
    # Replay by basket: the towers' replay rows are single rows of many baskets, and each basket
    # brings ~150 candidates, so row-for-row replay would swamp the new baskets.
    replay_baskets: float = field(default=1.0, metadata={"help": "older baskets replayed per new basket"})
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


class Ranker(nn.Module):
    def __init__(self, n_features: int, hidden: int = 64):
        super().__init__()
        # Feature scaling, fixed by the first version's examples and inherited after.
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).squeeze(-1)

    def fit_scaling(self, x: np.ndarray) -> None:
        self.mean.copy_(torch.from_numpy(x.mean(0)))
        self.std.copy_(torch.from_numpy(x.std(0) + 1e-3))

    @torch.no_grad()
    def score(self, x: np.ndarray) -> np.ndarray:
        self.eval()
        return torch.sigmoid(self(torch.from_numpy(np.ascontiguousarray(x, np.float32)))).numpy()


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
        args: RankerArguments, from_parent: bool) -> RankerResult:
    """Train in place; keeps the epoch with the lowest validation loss."""
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    if len(train[0]) == 0:
        raise ValueError("the ranker has no training examples (no basket with a history in the new rows)")
    x, y = (torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in train)
    xv, yv = (torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in valid)
    if not from_parent:
        ranker.fit_scaling(train[0])
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
