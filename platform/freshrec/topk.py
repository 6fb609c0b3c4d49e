"""The k best columns of each row of a score matrix.

torch's top-k, not NumPy's ``argpartition`` of a negated copy: 256 queries over 28,000 items took
90 ms that way and 12-16 ms this way, and an update ranks tens of thousands of queries (training
examples, the gate) over the whole catalog. Ties are broken arbitrarily either way; NaN ranks with -inf,
below every number.
"""
from __future__ import annotations

import numpy as np
import torch


def top_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k highest scores, highest first (k capped at the columns)."""
    k = min(k, scores.shape[1])
    if k <= 0:
        return np.zeros((scores.shape[0], 0), np.int64)
    values = torch.from_numpy(np.ascontiguousarray(scores))
    # torch ranks NaN above everything; a sort (and argpartition of the negated scores) ranks it last.
    values = torch.nan_to_num(values, nan=-float("inf"), posinf=float("inf"), neginf=-float("inf"))
    return torch.topk(values, k, dim=1).indices.numpy()
