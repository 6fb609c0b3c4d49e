"""Where the pipeline's inputs come from: PostgreSQL for events, Feast's sources and store for aggregates.

Two paths to the same numbers:
- offline (the updater, the gate): the event log of the rows a version's lineage consumed (for a
  child version, only its baskets' users': ``updater.stages.ranker_inputs``), and
  the daily item aggregates read in bulk from ``item_daily_stats``, the table behind Feast's
  ``item_stats`` view (a day x item array, where Feast's point-in-time join would take one entity
  row per candidate; ``tests/test_ranking.py`` proves both give the same values);
- online (the API, the benchmark): the user's own rows up to the serving clock, read per request,
  and ``item_stats`` from Feast's online store.
"""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from freshrec.db.frames import read_frame
from freshrec.ranking.candidates import DayState
from freshrec.ranking.copurchase import CoPurchase
from freshrec.ranking.events import BrowseLog, EventLog

STAT_COLUMNS = ["events_7d", "events_28d", "buyers", "repeat_buyers"]

# Purchases: the ranker predicts what is bought, so baskets, labels and the repeat history are
# purchases (views, clicks and carts shape the profile text and the activity counts).
# Bulk reads (``db.frames.read_frame``, ``read_timed``) take times as whole microseconds since the epoch:
# no date parsing in pandas, and no float parsing either (see ``read_timed``).
_MICROS = "(extract(epoch FROM {0}) * 1000000)::int8 AS {0}"
_EPOCH = _MICROS.format("event_time")
_EVENT_TYPES = {"user_id": object, "item_id": object, "event_time": "int64"}
_CONSUMED_ROWS = f"""
SELECT user_id, item_id, {_EPOCH} FROM interactions
WHERE ingest_xid < CAST(:xid_to AS xid8) AND event_type = 'purchase'"""
_ROWS_BEFORE = f"""
SELECT user_id, item_id, {_EPOCH} FROM interactions WHERE event_time < :clock AND event_type = 'purchase'"""
# The data's own clock: now for a live shop, the end of the newest day for a replayed data set.
_CLOCK = """
SELECT least(now(), date_trunc('day', max(event_time) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day')
FROM interactions"""
# The clock (the caller's, else the data's) and the users' rows before it in one round trip: the
# LEFT JOIN keeps one row, the clock's, for users without any.
_USER_ROWS = f"""
WITH clock AS (SELECT coalesce(CAST(:clock AS timestamptz), ({_CLOCK})) AS t)
SELECT c.t AS clock, i.user_id, i.item_id, extract(epoch FROM i.event_time)::float8 AS event_time,
       i.event_type = 'purchase' AS bought
FROM clock c LEFT JOIN interactions i ON i.user_id = ANY(:users) AND i.event_time < c.t"""
# Views, clicks and carts: candidate context (``BrowseLog``), never baskets or labels.
_CONSUMED_BROWSING = f"""
SELECT user_id, item_id, {_EPOCH} FROM interactions
WHERE ingest_xid < CAST(:xid_to AS xid8) AND event_type <> 'purchase' AND user_id = ANY(:users)"""
# The newest row at or before each moment: rows are written only on days an item's counts change.
_COLUMNS = "item_id, events_7d, events_28d, buyers, repeat_buyers"
_STAT_TYPES = {"item_id": object, **{c: "float64" for c in STAT_COLUMNS}}
_STATS_AT = f"""
SELECT DISTINCT ON (item_id) {_COLUMNS} FROM item_daily_stats
WHERE valid_from <= :stamp ORDER BY item_id, valid_from DESC"""
_STATS_BETWEEN = f"""
SELECT {_MICROS.format("valid_from")}, {_COLUMNS} FROM item_daily_stats
WHERE valid_from > :first AND valid_from <= :last ORDER BY valid_from, item_id"""


def read_timed(conn: Connection, sql: str, params: dict, dtypes: dict, column: str = "event_time") -> pd.DataFrame:
    """``read_frame`` of a query whose ``column`` is whole microseconds since the epoch (``_EPOCH``),
    returned as epoch seconds.

    The seconds must equal, bit for bit, what ``events.epoch_seconds`` makes of the same timestamp
    on the other side of the comparison (a basket's own moment, from Feast's rows): a basket's
    items are found by exact equality of times. Microseconds / 1e6, correctly rounded on both sides,
    agree; parsing a float8's text, or pandas' nanoseconds / 1e9, can miss by an ulp on sub-second
    times (the API takes ISO 8601 times with fractions)."""
    frame = read_frame(conn, sql, params, dtypes)
    frame[column] = frame[column].to_numpy(np.int64) / 1e6
    return frame


def consumed_log(engine: Engine, xid_to: str, item_ids: np.ndarray, users: list[str] | None = None) -> EventLog:
    """Every purchase below a cut's horizon (exactly what the lineage ending at that cut consumed), or
    only these users' (their whole history up to it: an update's baskets need no one else's)."""
    sql, params = _CONSUMED_ROWS, {"xid_to": str(int(xid_to))}
    if users is not None:
        sql, params = sql + " AND user_id = ANY(:users)", {**params, "users": list(users)}
    with engine.connect() as conn:
        frame = read_timed(conn, sql, params, _EVENT_TYPES)
    return EventLog.build(frame, item_ids)


def users_log(conn: Connection, user_ids: list[str], clock: datetime | None, item_ids: np.ndarray,
              item_index: pd.Index | None = None) -> tuple[EventLog, BrowseLog, datetime]:
    """These users' purchases, and what else they did, strictly before ``clock`` (live rows included: the
    freshest history there is), and the clock itself (``serving_clock``'s when None), in one query."""
    # Per request: plain rows and epoch seconds from SQL, and arrays, not a DataFrame.
    rows = conn.execute(sa.text(_USER_ROWS), {"users": list(user_ids), "clock": clock}).all()
    clock = rows[0][0]
    found = [r[1:] for r in rows if r[1] is not None]
    user_column, item_column, time_column, bought_column = zip(*found) if found else ((), (), (), ())
    users, items = np.array(user_column, dtype=object), np.array(item_column, dtype=object)
    times, bought = np.array(time_column, dtype=np.float64), np.array(bought_column, dtype=bool)
    index = item_index if item_index is not None else pd.Index(item_ids)
    return (EventLog.from_columns(users[bought], items[bought], times[bought], item_ids, index),
            BrowseLog.from_columns(users[~bought], items[~bought], times[~bought], index), clock)


def consumed_browsing(engine: Engine, xid_to: str, users, item_ids: np.ndarray) -> BrowseLog:
    """What these users viewed, clicked or carted below a cut's horizon (the lineage's rows)."""
    with engine.connect() as conn:
        frame = read_timed(conn, _CONSUMED_BROWSING, {"xid_to": str(int(xid_to)), "users": list(users)}, _EVENT_TYPES)
    return BrowseLog.build(frame, pd.Index(item_ids))


def rows_before(conn: Connection, clock: datetime, item_ids: np.ndarray) -> EventLog:
    """Every user's events strictly before ``clock`` (the benchmark's neighbour-based baselines)."""
    return EventLog.build(read_timed(conn, _ROWS_BEFORE, {"clock": clock}, _EVENT_TYPES), item_ids)


def serving_clock(conn: Connection) -> datetime:
    """When "now" is for ranking: the present, or the end of the newest day of a replayed data set."""
    value = conn.execute(sa.text(_CLOCK)).scalar()
    return value or datetime.now(timezone.utc)


def _rows_of(frame: pd.DataFrame, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each frame row's item row (by its ``item_id`` column, else its index), and which are known."""
    rows = pd.Index(item_ids).get_indexer(frame.index if "item_id" not in frame else frame["item_id"])
    return rows, rows >= 0


def _stat_array(frame: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    out = np.zeros((len(item_ids), len(STAT_COLUMNS)), np.float32)
    rows, known = _rows_of(frame, item_ids)
    out[rows[known]] = frame[STAT_COLUMNS].to_numpy(np.float32)[known]
    return out


def daily_item_stats(engine: Engine, item_ids: np.ndarray, day_starts: list[float]) -> dict[float, np.ndarray]:
    """Offline: the aggregates valid at each day's start (each item's newest row by then), items x 4.

    One scan for the first day, then the rows stamped up to the last day, applied in order: reading
    each day's newest rows on its own scanned the table once per day (items x days rows), 8 s of an
    update at 3x the bundled shop.
    """
    days = sorted({float(d) for d in day_starts})
    if not days:
        return {}
    first, last = (datetime.fromtimestamp(d, timezone.utc) for d in (days[0], days[-1]))
    with engine.connect() as conn:
        base = read_frame(conn, _STATS_AT, {"stamp": first}, _STAT_TYPES)
        later = read_timed(conn, _STATS_BETWEEN, {"first": first, "last": last},  # one day: its scan is all
                           {"valid_from": "int64", **_STAT_TYPES}, "valid_from") if len(days) > 1 else None
    stamped = later["valid_from"].to_numpy() if later is not None else np.zeros(0)
    state, out, done = _stat_array(base, item_ids), {}, 0
    for day in days:  # an item with no row by that day did not exist yet: zeros
        upto = int(np.searchsorted(stamped, day, side="right"))
        if upto > done:  # an item's newest row in the stretch wins
            newest = later.iloc[done:upto].drop_duplicates("item_id", keep="last")
            rows, known = _rows_of(newest, item_ids)
            state[rows[known]] = newest[STAT_COLUMNS].to_numpy(np.float32)[known]
            done = upto
        out[day] = state.copy()
    return {d: out[float(d)] for d in day_starts}


def online_stats_array(store, item_ids: np.ndarray) -> np.ndarray:
    """Online: every item's newest aggregates from Feast's online store, items x 4."""
    from freshrec.features import online_item_stats

    return _stat_array(online_item_stats(store, list(item_ids)), item_ids)


class OfflineDays:
    """Day states for point-in-time training and gating, for the days of ``day_starts``.

    Co-purchase counts advance through the log's baskets before each day, unless a fixed
    ``copurchase`` is given (a child version's: its parent's published neighbours); the aggregates
    come from ``item_daily_stats`` at the day's start.

    Each pass (training, validation, each model on each gate slice) walks its days in increasing
    order, and the next pass starts earlier again. Every step rebuilds the sparse counts, so starting
    each pass over from nothing cost (passes x days x pairs): the state at the first day of a pass is
    kept (a few of them), and a later pass resumes from the newest one at or before its first day.
    """

    KEEP = 3  # kept states: each shares its matrix with no one once the pass moves on

    def __init__(self, engine: Engine, log: EventLog, day_starts, copurchase=None):
        self.log, self.fixed = log, copurchase
        self.copurchase = CoPurchase(log.n_items)
        self.kept: dict[float, CoPurchase] = {}
        self.stats = daily_item_stats(engine, log.item_ids, sorted({float(d) for d in day_starts}))

    def _resume(self, day: float) -> CoPurchase:
        """The newest kept state at or before ``day`` (a copy), or nothing counted yet."""
        earlier = [d for d in self.kept if d <= day]
        return self.kept[max(earlier)].copy() if earlier else CoPurchase(self.log.n_items)

    def __call__(self, day: float) -> DayState:
        if self.fixed is not None:
            return DayState(self.fixed, self.stats[day])
        starts_a_pass = day < self.copurchase.added_until or not self.kept
        if day < self.copurchase.added_until:
            self.copurchase = self._resume(day)
        self.copurchase.advance(self.log, day)
        if starts_a_pass and day not in self.kept:
            self.kept[day] = self.copurchase.copy()
            if len(self.kept) > self.KEEP:
                del self.kept[next(iter(self.kept))]  # the oldest kept, by insertion
        return DayState(self.copurchase, self.stats[day])
