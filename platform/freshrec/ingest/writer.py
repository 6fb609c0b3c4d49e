"""Write a Batch in one transaction: users and items upserted, interactions inserted once per key."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from freshrec.ingest.batch import Batch
from freshrec.ingest.profiles import refresh_profiles
from freshrec.ingest.validate import InputError

_STAGE = {
    "users": "user_id text, country text",
    "items": "item_id text, title text, category text, description text, price numeric, valid_from timestamptz",
    "interactions": "row_no bigint, event_key text, user_id text, item_id text, event_type text, "
    "quantity int, query text, event_time timestamptz",
}

_UPSERT_USERS = """
INSERT INTO users (user_id, country) SELECT DISTINCT ON (user_id) user_id, country FROM _stage_users
ON CONFLICT (user_id) DO UPDATE SET country = coalesce(EXCLUDED.country, users.country)
RETURNING (xmax = 0) AS inserted"""
# An item keeps its earliest valid_from: its text is then known for every event that names it.
_UPSERT_ITEMS = """
INSERT INTO items (item_id, title, category, description, price, valid_from)
SELECT DISTINCT ON (item_id) item_id, title, category, description, price,
       coalesce(valid_from, TIMESTAMPTZ '1970-01-01 00:00:00+00') FROM _stage_items
ON CONFLICT (item_id) DO UPDATE SET
    title = EXCLUDED.title, category = EXCLUDED.category, description = EXCLUDED.description,
    price = coalesce(EXCLUDED.price, items.price), valid_from = least(items.valid_from, EXCLUDED.valid_from),
    updated_at = CASE WHEN (items.title, items.category, items.description)
                      IS DISTINCT FROM (EXCLUDED.title, EXCLUDED.category, EXCLUDED.description)
                 THEN now() ELSE items.updated_at END,
    written_xid = CASE WHEN (items.title, items.category, items.description, items.valid_from)
                       IS DISTINCT FROM (EXCLUDED.title, EXCLUDED.category, EXCLUDED.description,
                                         least(items.valid_from, EXCLUDED.valid_from))
                  THEN pg_current_xact_id() ELSE items.written_xid END
RETURNING (xmax = 0) AS inserted"""
_INSERT_INTERACTIONS = """
INSERT INTO interactions (event_key, user_id, item_id, event_type, quantity, query, event_time)
SELECT event_key, user_id, item_id, event_type, coalesce(quantity, 1), query, event_time
FROM _stage_interactions ORDER BY event_time, row_no
ON CONFLICT (event_key) DO NOTHING
RETURNING id, user_id"""


@dataclass
class LoadSummary:
    rows_read: int = 0
    rows_kept: int = 0
    users_new: int = 0
    items_new: int = 0
    items_updated: int = 0
    interactions_inserted: int = 0
    interactions_duplicate: int = 0
    profile_rows: int = 0


Progress = Callable[[int], object]


def _stage(conn: Connection, name: str, frame: pd.DataFrame, progress: Progress | None = None) -> None:
    """COPY a frame into a temporary table that vanishes at commit."""
    table = f"_stage_{name}"
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    conn.execute(sa.text(f"CREATE TEMP TABLE {table} ({_STAGE[name]}) ON COMMIT DROP"))
    columns = [c.split()[0] for c in _STAGE[name].split(", ")]
    raw = conn.connection.driver_connection
    with raw.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for n, row in enumerate(frame[columns].itertuples(index=False, name=None), 1):
            copy.write_row([None if pd.isna(v) else v for v in row])
            if progress is not None and n % 10_000 == 0:
                progress(10_000)
    if progress is not None:
        progress(len(frame) % 10_000)


def _check_known_items(conn: Connection, source: str) -> None:
    missing = conn.execute(
        sa.text(
            "SELECT s.row_no, s.item_id FROM _stage_interactions s "
            "LEFT JOIN items i ON i.item_id = s.item_id WHERE i.item_id IS NULL ORDER BY s.row_no LIMIT 1"
        )
    ).first()
    if missing is not None:
        raise InputError(source, "item_id", f"{missing.item_id!r} is not in the catalog", int(missing.row_no))


def write_batch(
    conn: Connection, batch: Batch, source: str, profile_length: int = 20, progress: Progress | None = None
) -> LoadSummary:
    """Write ``batch`` inside a savepoint of ``conn``'s transaction: all of it, or nothing.

    Users' profile histories are rebuilt in the same transaction. The daily item aggregates are
    not: they span every item, so a rebuild per request would serialise concurrent writers.
    ``aggregates.catch_up`` rebuilds them after the commit (the loaders, ``features materialize``).
    """
    summary = LoadSummary(rows_read=batch.rows_read, rows_kept=batch.rows_kept)
    with conn.begin_nested():
        interactions = batch.interactions.reset_index(drop=True)
        interactions.insert(0, "row_no", range(1, len(interactions) + 1))
        users = pd.concat([batch.users, interactions[["user_id"]].drop_duplicates()], ignore_index=True)
        _stage(conn, "users", users.drop_duplicates("user_id").reindex(columns=["user_id", "country"]))
        _stage(conn, "items", batch.items)
        _stage(conn, "interactions", interactions, progress)
        summary.users_new = sum(r.inserted for r in conn.execute(sa.text(_UPSERT_USERS)))
        item_rows = conn.execute(sa.text(_UPSERT_ITEMS)).all()
        summary.items_new = sum(r.inserted for r in item_rows)
        summary.items_updated = len(item_rows) - summary.items_new
        _check_known_items(conn, source)
        inserted = conn.execute(sa.text(_INSERT_INTERACTIONS)).all()
        summary.interactions_inserted = len(inserted)
        summary.interactions_duplicate = len(interactions) - len(inserted)
        summary.profile_rows = refresh_profiles(conn, sorted({r.user_id for r in inserted}), profile_length)
    return summary
