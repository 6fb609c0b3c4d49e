"""Cursors of committed transactions: how far a derived table or the online store has caught up.

The same cut as the updater's watermark: a cursor advances to the horizon of a snapshot,
``pg_snapshot_xmin(pg_current_snapshot())``, below which every transaction has ended. A row whose
writing transaction is below the horizon can never appear later, so "rows with
``cursor <= written_xid < horizon``" misses nothing, however late a transaction commits. Wall
clocks (``now()`` is a transaction's *start*) do miss such rows.
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def horizon(conn: Connection) -> str:
    """The oldest transaction still running (every older one has committed or aborted)."""
    return conn.execute(sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")).scalar()


def read(conn: Connection, name: str) -> str:
    return conn.execute(sa.text("SELECT xid_horizon::text FROM feature_cursors WHERE name = :n"), {"n": name}).scalar() or "0"


def write(conn: Connection, name: str, xid: str) -> None:
    conn.execute(sa.text(
        "INSERT INTO feature_cursors (name, xid_horizon) VALUES (:n, CAST(:h AS xid8)) "
        "ON CONFLICT (name) DO UPDATE SET xid_horizon = EXCLUDED.xid_horizon, updated_at = now()"),
        {"n": name, "h": xid})


_OLDEST = """
SELECT pid, datname AS database, state, extract(epoch FROM now() - xact_start)::float8 AS age_seconds
FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
ORDER BY age(backend_xid) DESC LIMIT 1"""


def oldest_transaction(conn: Connection) -> dict | None:
    """The running transaction that holds the horizon back, in any database of the server.

    Rows it has not committed yet, and every row committed after it started, wait for it: a
    session left "idle in transaction" stalls every watermark and materialization. PostgreSQL's
    ``idle_in_transaction_session_timeout`` bounds that. (Without pg_read_all_stats, another
    role's session shows no start time: its age reads as unknown.)
    """
    row = conn.execute(sa.text(_OLDEST)).mappings().first()
    return dict(row) if row else None
