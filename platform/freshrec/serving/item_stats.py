"""Every item's aggregates as the API holds them: read from Feast's online store once, then only the
items whose aggregates changed.

The ranker needs each candidate's aggregates, and popularity ranks the whole catalog, so the API
holds the array for every item and refreshes it once a minute from its watcher thread. Reading every
item through ``get_online_features`` takes 2-3 s of Python at 10x the bundled shop (28k items), and
while it runs it holds the interpreter's lock that the requests need: at 10x the returning-user p99
rose with it. A refresh now re-reads only the items whose ``item_daily_stats`` rows were written
since the online store's cursor (``features.materialize``) as it stood at the last read. Between
loads that is none. A load rebuilds the rows of every item whose counts change from its first day
on (those with events in the 28 days before it): those are read again each minute until a
materialize moves the cursor past them. An erasure stamps the items it touched (``aggregates``). A
version swap takes the array of the version it replaces, by item id, and reads only the items that
version lacked and those written since.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from freshrec.db import cursors
from freshrec.ranking import inputs

# Every row written from the cursor on: those a materialize may since have put online, and those
# (an erasure's push) written online without a materialize.
_CHANGED = "SELECT DISTINCT item_id FROM item_daily_stats WHERE written_xid >= CAST(:since AS xid8)"


@dataclass(frozen=True)
class HeldStats:
    """The aggregates of a snapshot's items (rows in its item order, 4 columns), the data clock's day
    they are for, when they were read (monotonic seconds), and ``since``: the online store's cursor
    before that read. Every row written below it was online when they were read."""

    day: float | None
    read_at: float
    stats: np.ndarray
    since: str


def _online_cursor(conn) -> str:
    from freshrec.features.store import ONLINE_CURSOR

    return cursors.read(conn, ONLINE_CURSOR)


def read_all(engine: Engine, store, item_ids: np.ndarray, day: float | None) -> HeldStats:
    """Every item's aggregates from the online store."""
    with engine.connect() as conn:
        since = _online_cursor(conn)  # before the read: whatever is written from here on is read again
    return HeldStats(day, time.monotonic(), inputs.online_stats_array(store, item_ids), since)


def catch_up(held: HeldStats, engine: Engine, store, item_ids: np.ndarray, row_of: dict[str, int],
             also: np.ndarray | None = None) -> HeldStats:
    """``held`` with the items whose aggregates were written since its cursor (and the rows ``also``)
    read again, in one read of the online store."""
    with engine.connect() as conn:
        since = _online_cursor(conn)  # before the read, as in read_all
        changed = {row_of[i] for i in conn.execute(sa.text(_CHANGED), {"since": held.since}).scalars() if i in row_of}
    rows = np.array(sorted(changed.union(() if also is None else also.tolist())), dtype=np.int64)
    stats = held.stats
    if len(rows):
        stats = stats.copy()  # a request may hold the old array: never write into it
        stats[rows] = inputs.online_stats_array(store, item_ids[rows])
    return HeldStats(held.day, time.monotonic(), stats, since)


def carried_over(previous: HeldStats, previous_ids: np.ndarray, engine: Engine, store, item_ids: np.ndarray,
                 row_of: dict[str, int]) -> HeldStats:
    """Another snapshot's aggregates for these items (the version swapped in), by item id; the items it
    did not hold, and those written since its cursor, read from the online store."""
    from_row = {item_id: r for r, item_id in enumerate(previous_ids)}
    stats = np.zeros((len(item_ids), previous.stats.shape[1]), previous.stats.dtype)
    mine = np.array([r for r, i in enumerate(item_ids) if i in from_row], dtype=np.int64)
    stats[mine] = previous.stats[[from_row[i] for i in item_ids[mine]]]
    missing = np.setdiff1d(np.arange(len(item_ids)), mine)
    return catch_up(HeldStats(previous.day, previous.read_at, stats, previous.since), engine, store, item_ids,
                    row_of, also=missing)
