"""From a watermark cut to training examples: Feast's point-in-time texts, negatives, replay, holdout."""
from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from freshrec.features import historical_features
from freshrec.training.args import TrainingArguments
from freshrec.training.examples import Examples, TrainingData
from freshrec.training.watermark import ZERO_XID, Cut


def catalog(engine: Engine) -> pd.DataFrame:
    """Every item with the text the item tower embeds (the same expression as Feast's source)."""
    sql = "SELECT item_id, concat_ws(' | ', title, category, description) AS item_text FROM items ORDER BY item_id"
    with engine.connect() as conn:
        return pd.read_sql(sa.text(sql), conn)


def _older_rows_sql(xid_from: str, limit: int, seed: int) -> str:
    # A seeded, repeatable sample of rows consumed by earlier versions.
    return (
        "SELECT id AS interaction_id, user_id, item_id, event_time AS event_timestamp FROM interactions "
        f"WHERE ingest_xid < '{int(xid_from)}'::xid8 ORDER BY md5(id::text || '{int(seed)}') LIMIT {int(limit)}"
    )


def _with_history(frame: pd.DataFrame) -> pd.DataFrame:
    # A row whose user had no earlier interaction has no profile text: nothing to learn from.
    return frame[frame["user_text"].notna() & (frame["user_text"] != "")]


def _examples(rows: pd.DataFrame, items: pd.DataFrame, args: TrainingArguments, rng: np.random.Generator) -> Examples:
    n = len(rows)
    if args.negative_sampler == "popularity":
        weights = items["popularity"].to_numpy(dtype=float) + 1.0
        picks = rng.choice(len(items), size=(n, args.negatives), p=weights / weights.sum())
    else:
        picks = rng.integers(0, len(items), size=(n, args.negatives))
    texts = items["item_text"].to_numpy()
    users = rows["user_text"].tolist()
    user_text = users + [u for u in users for _ in range(args.negatives)]
    item_text = rows["item_text"].tolist() + texts[picks.reshape(-1)].tolist()
    label = np.concatenate([np.ones(n), np.zeros(n * args.negatives)]).astype(np.float32)
    group = np.concatenate([np.arange(n), np.repeat(np.arange(n), args.negatives)])
    return Examples(user_text, item_text, label, group)


def split_by_basket(rows: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The oldest rows and the newest ``fraction`` of them, never cutting a basket (user, moment) in two."""
    if len(rows) < 2:
        return rows, rows.iloc[:0]
    rows = rows.sort_values(["event_timestamp", "user_id", "interaction_id"])
    basket = rows["user_id"].astype(str) + "\x00" + rows["event_timestamp"].astype(str)
    first_row = ~basket.duplicated().to_numpy()
    target = len(rows) - max(1, int(round(len(rows) * fraction)))
    starts = np.flatnonzero(first_row)
    cut = starts[np.argmin(np.abs(starts - target))] if len(starts) > 1 else len(rows)
    return rows.iloc[:cut], rows.iloc[cut:]


def build(engine: Engine, store, cut: Cut, args: TrainingArguments) -> TrainingData:
    rng = np.random.default_rng(args.seed)
    new = historical_features(store, cut.entity_sql())
    # The newest rows are held out, in two disjoint halves: the older half chooses the epoch
    # (early stopping of towers and ranker), the newest half decides the gate.
    train_new, held = split_by_basket(new, args.holdout_fraction)
    valid, gate = split_by_basket(held, 0.5)

    # The first version has no older rows (and Feast refuses an empty entity query).
    n_replay = int(len(new) * args.replay_fraction) if cut.xid_from != ZERO_XID else 0
    older = historical_features(store, _older_rows_sql(cut.xid_from, 2 * n_replay, args.seed)) if n_replay else new.iloc[:0]
    replay, guard = older.iloc[:n_replay], older.iloc[n_replay:]

    items = catalog(engine)
    counts = pd.concat([train_new, replay])["item_id"].value_counts()
    items["popularity"] = items["item_id"].map(counts).fillna(0)
    train_rows = _with_history(pd.concat([train_new.assign(replay=False), replay.assign(replay=True)]))
    return TrainingData(
        train=_examples(train_rows, items, args, rng),
        valid=_examples(_with_history(valid), items, args, rng),
        train_rows=train_rows,
        valid_rows=_with_history(valid),
        gate_rows=_with_history(gate),
        guard_rows=_with_history(guard),
        catalog=items[["item_id", "item_text"]],
        rows_new=len(new),
        rows_replay=len(replay),
    )
