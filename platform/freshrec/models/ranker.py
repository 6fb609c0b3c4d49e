"""The ranker: a small MLP over a candidate's features (``freshrec.ranking.features``).

A version's ranker names the features it was trained on (``feature_names``); it scores a feature
matrix of the current code by picking those columns, so a version keeps serving after the code
computes more features than it knew (an upgrade). Fitting lives in ``freshrec.training.ranker``.
No I/O here.
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit
import torch
from torch import nn


class Ranker(nn.Module):
    """An MLP over the named features; ``score`` picks them out of a wider matrix by name."""

    def __init__(self, feature_names: tuple[str, ...] | list[str], hidden: int = 64):
        super().__init__()
        self.feature_names = tuple(feature_names)
        n_features = len(self.feature_names)
        # Feature scaling, fixed by the first version's examples and inherited after.
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))
        self._columns: tuple[tuple[str, ...], np.ndarray] | None = None

    @property
    def hidden(self) -> int:
        return self.net[0].out_features

    def columns(self, names: tuple[str, ...]) -> np.ndarray:
        """Where this ranker's features sit among ``names`` (a KeyError names one that is not there)."""
        if self._columns is None or self._columns[0] != names:
            position = {n: i for i, n in enumerate(names)}
            missing = [f for f in self.feature_names if f not in position]
            if missing:
                raise KeyError(f"the ranker needs features {missing} that this code does not compute")
            self._columns = (names, np.array([position[f] for f in self.feature_names]))
        return self._columns[1]

    def select(self, x: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """This ranker's columns of a feature matrix whose columns are ``names``."""
        if names == self.feature_names:
            return x
        return x[:, self.columns(names)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).squeeze(-1)

    def fit_scaling(self, x: np.ndarray) -> None:
        self.mean.copy_(torch.from_numpy(x.mean(0)))
        self.std.copy_(torch.from_numpy(x.std(0) + 1e-3))

    @torch.no_grad()
    def score(self, x: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """Probabilities for rows of a feature matrix whose columns are ``names``.

        The same layers as ``forward``, in NumPy: a request scores about a hundred rows, and torch's
        intra-op thread pool, woken from idle between requests, took 2.8 ms (p99 20 ms) for what
        NumPy does in tens of microseconds (measured in the API's request path at 10x the shop).
        """
        picked = np.ascontiguousarray(self.select(x, names), np.float32)
        if not all(isinstance(m, (nn.Linear, nn.ReLU)) for m in self.net):  # a net NumPy does not mirror
            self.eval()
            return torch.sigmoid(self(torch.from_numpy(picked))).numpy()
        as_array = lambda t: t.detach().cpu().numpy()  # noqa: E731 - views of the weights, no copy on CPU
        h = (picked - as_array(self.mean)) / as_array(self.std)
        for m in self.net:
            h = h @ as_array(m.weight).T + as_array(m.bias) if isinstance(m, nn.Linear) else np.maximum(h, 0.0)
        return expit(h[:, 0]).astype(np.float32)
