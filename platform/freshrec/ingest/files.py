"""Bring your own shop: a catalog file and an event log, in CSV or Parquet.

items:        item_id, title [, category, description, price, valid_from]
interactions: event_key, user_id, item_id, event_type, event_time [, quantity, query]
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd

from freshrec.ingest.batch import INTERACTION_COLUMNS, ITEM_COLUMNS, Batch
from freshrec.ingest.validate import InputError, parse_frame, read_table

_NO_USERS = pd.DataFrame({"user_id": pd.Series(dtype=object), "country": pd.Series(dtype=object)})


def _no_duplicate_keys(frame: pd.DataFrame, key: str, source: str) -> None:
    dup = frame[key].duplicated()
    if dup.any():
        row = int(dup.to_numpy().nonzero()[0][0])
        raise InputError(source, key, f"{frame[key].iloc[row]!r} appears more than once", row + 1)


def items_batch(path: Path) -> Batch:
    items = parse_frame(read_table(path), ITEM_COLUMNS, str(path))
    _no_duplicate_keys(items, "item_id", str(path))
    empty = pd.DataFrame(columns=[c.name for c in INTERACTION_COLUMNS])
    return Batch(users=_NO_USERS, items=items, interactions=empty, rows_read=len(items), rows_kept=len(items))


def interactions_batch(path: Path, max_future: timedelta = timedelta(minutes=5)) -> Batch:
    return interactions_frame_batch(read_table(path), str(path), max_future)


EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=timezone.utc)


def _plausible_times(events: pd.DataFrame, source: str, max_future: timedelta) -> None:
    # A clock gone wrong (1970, or a year ahead) would corrupt every time-based feature and the
    # data clock the ranker works at: refuse it at the door.
    latest = datetime.now(timezone.utc) + max_future
    for bad, reason in ((events["event_time"] < EARLIEST_EVENT, f"is before {EARLIEST_EVENT:%Y-%m-%d}"),
                        (events["event_time"] > latest, f"is more than {max_future.total_seconds():.0f} s in the future")):
        rows = bad.to_numpy().nonzero()[0]
        if len(rows):
            raise InputError(source, "event_time", f"{events['event_time'].iloc[rows[0]].isoformat()} {reason}",
                             int(rows[0]) + 1)


def interactions_frame_batch(frame: pd.DataFrame, source: str, max_future: timedelta = timedelta(minutes=5)) -> Batch:
    """Events from any table (a file, or POST /v1/events' JSON), checked the same way."""
    events = parse_frame(frame, INTERACTION_COLUMNS, source)
    _no_duplicate_keys(events, "event_key", source)
    _plausible_times(events, source, max_future)
    empty_items = pd.DataFrame(columns=[c.name for c in ITEM_COLUMNS])
    return Batch(users=_NO_USERS, items=empty_items, interactions=events, rows_read=len(events), rows_kept=len(events))
