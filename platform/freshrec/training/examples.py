"""What training consumes, with no database or Feast import (the throughput bench reads it from Parquet)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class Examples:
    """(user text, item text, label) pairs. ``group`` ties a positive to its negatives: batches take
    whole groups, so a batch encodes each user text once instead of once per pair."""

    user_text: list[str]
    item_text: list[str]
    label: np.ndarray
    group: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def groups(self) -> list[np.ndarray]:
        """Row indices of each group."""
        order = np.argsort(self.group, kind="stable")
        return np.split(order, np.flatnonzero(np.diff(self.group[order])) + 1) if len(order) else []

    def take(self, idx: np.ndarray) -> Examples:
        return Examples([self.user_text[i] for i in idx], [self.item_text[i] for i in idx], self.label[idx], self.group[idx])

    def write(self, path: Path) -> None:
        pd.DataFrame({"user_text": self.user_text, "item_text": self.item_text, "label": self.label,
                      "group": self.group}).to_parquet(path)

    @classmethod
    def read(cls, path: Path) -> Examples:
        frame = pd.read_parquet(path)
        return cls(frame["user_text"].tolist(), frame["item_text"].tolist(), frame["label"].to_numpy(np.float32),
                   frame["group"].to_numpy())


@dataclass
class TrainingData:
    """The towers' examples, and the rows behind them (user_id, item_id, event_timestamp, Feast's
    point-in-time user_text, n_events, n_baskets), which the ranker turns into basket queries."""

    train: Examples
    valid: Examples
    train_rows: pd.DataFrame  # new rows (minus the held-out newest) and the replayed older rows (column replay)
    valid_rows: pd.DataFrame  # held-out new rows that choose the epoch
    gate_rows: pd.DataFrame  # the newest held-out rows: the gate's evidence, never trained or tuned on
    guard_rows: pd.DataFrame  # older rows, not replayed: the forgetting check
    catalog: pd.DataFrame  # item_id, item_text: every item the index holds
    rows_new: int  # every row of the cut, the quarantined ones included
    rows_replay: int
    quarantined: pd.DataFrame  # interaction_id, reason: consumed rows that could not train
    seed: int  # this update's sampling seed (replay, guard, negatives), recorded in lineage
