"""The search side's query tower: the pre-trained encoder's embedding, plus a learned residual.

    q' = normalize(q + W q + b)        q: the normalised mean-pooled embedding of the query text

W and b start at zero, so a version that has learned nothing ranks exactly as the pre-trained
encoder does; training moves the query side only, against item vectors that stay the pre-trained
encoder's (``freshrec.search.index``). The item side never moves, so the semantic space the
encoder came with is kept, and a new item needs no re-encoding after an update. No I/O here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class QueryAdapter(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.delta = nn.Linear(dim, dim)
        nn.init.zeros_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)

    @property
    def dim(self) -> int:
        return self.delta.in_features

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return F.normalize(q + self.delta(q), dim=-1)

    @torch.no_grad()
    def transform(self, q):
        """numpy in, numpy out (serving)."""
        import numpy as np

        self.eval()
        return self(torch.from_numpy(np.ascontiguousarray(q, np.float32))).numpy()
