"""From a watermark cut to training examples: Feast's point-in-time texts, negatives, replay, holdout.

A row that cannot train (its item had no text at the row's time, say) is set aside with a reason
(``TrainingData.quarantined``): it stays consumed, the update goes on, and the publish records it.
"""
from __future__ import annotations

import hashlib

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


def sample_seed(seed: int, cut: Cut) -> int:
    """The seed of one update's sampling (replay, guard, negatives): fixed by the cut, new for each version.

    A constant seed would replay the same older rows every week; this one is recorded in lineage. It is
    hashed from the ids of the rows the cut holds, not from its transaction ids: those depend on
    everything else the database did (autovacuum's analyses take xids too), so the same data loaded the
    same way drew a different replay sample, and a verdict near the gate's floor went either way. So an
    update retried on the same rows (after a rejection, or a rollback) draws the same sample and gets
    the same verdict: new rows, not a second roll, change it.
    """
    digest = hashlib.sha256(f"{seed}:".encode() + np.asarray(cut.ids, "<i8").tobytes()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def in_draw_order(rows: pd.DataFrame, ids: list[int]) -> pd.DataFrame:
    """``rows`` (read by id) in the order ``older_ids`` drew their ids, not the query plan's: the same
    cut trains on the same rows in the same order."""
    drawn = {i: n for n, i in enumerate(ids)}
    return rows.sort_values("interaction_id", key=lambda s: s.map(drawn))


_ID_RANGE = "SELECT min(id), max(id) FROM interactions WHERE ingest_xid < CAST(:xid AS xid8) AND {where}"
_PRESENT = "SELECT id FROM interactions WHERE id = ANY(:ids) AND ingest_xid < CAST(:xid AS xid8) AND {where}"


def older_ids(engine: Engine, xid_from: str, n: int, seed: int, where: str = "true") -> list[int]:
    """A uniform sample of ``n`` ids of rows consumed before ``xid_from`` (and matching ``where``, a
    fixed SQL condition), by random id probes.

    Ids are drawn at random between the smallest and largest such id and kept where such a row is:
    index lookups, so the cost follows the sample, not the history (an ``ORDER BY random()`` would
    sort every row ever consumed). Each round draws as many as the last round's hit rate says it needs.
    """
    if n <= 0:
        return []
    rng = np.random.default_rng(seed)
    with engine.connect() as conn:
        lo, hi = conn.execute(sa.text(_ID_RANGE.format(where=where)), {"xid": xid_from}).one()
        if lo is None:
            return []
        found: list[int] = []
        tried: set[int] = set()
        span, rate = hi - lo + 1, 1.0
        for _ in range(12):  # ids have holes (aborted inserts, erased rows, rows not matching): draw again
            want = n - len(found)
            if want <= 0 or len(tried) >= span:
                break
            probes = np.unique(rng.integers(lo, hi + 1, size=min(span, int(1.5 * want / rate) + 16)))
            probes = probes[~np.isin(probes, list(tried))] if tried else probes
            tried.update(probes.tolist())
            present = [r[0] for r in conn.execute(sa.text(_PRESENT.format(where=where)),
                                                   {"ids": probes.tolist(), "xid": xid_from})]
            rate = max(len(present) / max(len(probes), 1), 0.01)
            found += [int(i) for i in rng.permutation(present)[:want]]
    return found


def _ids_sql(ids: list[int]) -> str:
    # Integers drawn above, never user input.
    listed = ",".join(str(int(i)) for i in ids)
    return ("SELECT id AS interaction_id, user_id, item_id, event_time AS event_timestamp FROM interactions "
            f"WHERE id IN ({listed})")


def quarantine(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows that can train, and those that cannot, each with a reason."""
    no_item_text = rows["item_text"].isna()
    reasons = pd.Series("", index=rows.index)
    reasons[no_item_text] = "the item had no text at the event's time"
    bad = reasons != ""
    return rows[~bad], pd.DataFrame({"interaction_id": rows.loc[bad, "interaction_id"].astype("int64"),
                                     "reason": reasons[bad]})


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
    # Sorted so, a basket's rows are contiguous: one starts where the user or the moment changes
    # (compared as numbers: formatting every timestamp as text took most of this).
    user = rows["user_id"].to_numpy()
    when = pd.to_datetime(rows["event_timestamp"], utc=True).to_numpy(dtype="datetime64[ns]")
    first_row = np.ones(len(rows), bool)
    first_row[1:] = (user[1:] != user[:-1]) | (when[1:] != when[:-1])
    target = len(rows) - max(1, int(round(len(rows) * fraction)))
    starts = np.flatnonzero(first_row)
    cut = starts[np.argmin(np.abs(starts - target))] if len(starts) > 1 else len(rows)
    return rows.iloc[:cut], rows.iloc[cut:]


def build(engine: Engine, store, cut: Cut, args: TrainingArguments) -> TrainingData:
    seed = sample_seed(args.seed, cut)
    rng = np.random.default_rng(seed)
    new, quarantined = quarantine(historical_features(store, cut.entity_sql()))
    # The newest rows are held out, in two disjoint halves: the older half chooses the epoch
    # (early stopping of towers and ranker), the newest half decides the gate.
    train_new, held = split_by_basket(new, args.holdout_fraction)
    valid, gate = split_by_basket(held, 0.5)

    # The first version has no older rows (and Feast refuses an empty entity query).
    n_replay = int(len(new) * args.replay_fraction) if cut.xid_from != ZERO_XID else 0
    ids = older_ids(engine, cut.xid_from, 2 * n_replay, seed)
    # Older rows were quarantined when their version consumed them: they are left out here too.
    older = quarantine(historical_features(store, _ids_sql(ids)))[0] if ids else new.iloc[:0]
    older = in_draw_order(older, ids)  # the first n_replay replay, the rest guard
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
        rows_new=len(new) + len(quarantined),
        rows_replay=len(replay),
        quarantined=quarantined,
        seed=seed,
    )
