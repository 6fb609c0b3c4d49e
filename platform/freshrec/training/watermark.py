"""The consistent cut of ``interactions`` that one model version consumes.

A cut is every row whose inserting transaction id (``ingest_xid``) lies in ``[xid_from, xid_to)``,
where ``xid_to`` is the xmin horizon of the updater's snapshot,
``pg_snapshot_xmin(pg_current_snapshot())``: the oldest transaction still running. Everything
below it has finished, committed or aborted, so no row can ever appear below the cut later, and
the next version's cut starts exactly where this one ends. Nothing is skipped, nothing is read twice.

Cutting by ``id > last_id`` is wrong: sequence values are handed out at insert time but become
visible at commit time, so a long transaction's rows can commit *below* an id already consumed and
be skipped for good. A long-running transaction here only delays its rows to a later version.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

ZERO_XID = "0"

_ROWS = """
SELECT id, user_id, item_id, event_time FROM interactions
WHERE ingest_xid >= CAST(:xid_from AS xid8) AND ingest_xid < CAST(:xid_to AS xid8)
ORDER BY event_time, id
"""


@dataclass(frozen=True)
class Cut:
    xid_from: str
    xid_to: str
    ids: tuple[int, ...]
    event_time_min: datetime | None
    event_time_max: datetime | None

    @property
    def row_count(self) -> int:
        return len(self.ids)

    @property
    def id_sum(self) -> int:
        return sum(self.ids)

    def entity_sql(self) -> str:
        """The cut as SQL for Feast's entity rows (the range is immutable, so re-reading is exact)."""
        return range_sql(self.xid_from, self.xid_to)


def range_sql(xid_from: str, xid_to: str) -> str:
    # xids are digits read back from PostgreSQL, never user input; int() keeps it that way.
    return (
        "SELECT id AS interaction_id, user_id, item_id, event_time AS event_timestamp FROM interactions "
        f"WHERE ingest_xid >= '{int(xid_from)}'::xid8 AND ingest_xid < '{int(xid_to)}'::xid8"
    )


def parent_horizon(conn: Connection, parent_version: int | None) -> str:
    """Where the next cut starts: the parent's xid_to, or the beginning of time."""
    if parent_version is None:
        return ZERO_XID
    value = conn.execute(
        sa.text("SELECT xid_to::text FROM watermarks WHERE version = :v"), {"v": parent_version}
    ).scalar()
    if value is None:
        raise RuntimeError(f"version {parent_version} has no watermark")
    return value


def take_cut(engine: Engine, xid_from: str) -> Cut:
    """Read the rows in ``[xid_from, snapshot xmin)``, horizon and rows from one snapshot."""
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            xid_to = conn.execute(sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")).scalar()
            if int(xid_to) < int(xid_from):
                xid_to = xid_from
            return _read(conn, xid_from, xid_to)


def cut_between(engine: Engine, xid_from: str, xid_to: str) -> Cut:
    """The rows a consumed range holds now: an erasure's replay trains on an old version's range, less
    the rows the erasure deleted (every transaction below a consumed ``xid_to`` has ended: the range
    can lose rows, never gain any)."""
    with engine.connect() as conn:
        return _read(conn, xid_from, xid_to)


def _read(conn: Connection, xid_from: str, xid_to: str) -> Cut:
    rows = conn.execute(sa.text(_ROWS), {"xid_from": xid_from, "xid_to": xid_to}).all()
    times = [r.event_time for r in rows]
    return Cut(
        xid_from=xid_from,
        xid_to=xid_to,
        ids=tuple(r.id for r in rows),
        event_time_min=min(times) if times else None,
        event_time_max=max(times) if times else None,
    )
