"""Write a Batch in one transaction: users and items upserted, interactions inserted once per key."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
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
# Item text is versioned (``item_texts``): a staged text that differs from the item's newest one
# becomes a new version, valid from the file's ``valid_from``, or from now for a changed item
# without one (a new item without one: from 1970, so every event may name it). The same stamp
# again corrects that version. Training then reads each event's text as of its time.
_INSERT_TEXTS = """
INSERT INTO item_texts (item_id, valid_from, title, category, description)
SELECT DISTINCT ON (s.item_id) s.item_id,
       coalesce(s.valid_from, CASE WHEN newest.item_id IS NULL THEN TIMESTAMPTZ '1970-01-01 00:00:00+00'
                                   ELSE now() END),
       s.title, s.category, s.description
FROM _stage_items s
LEFT JOIN LATERAL (SELECT t.item_id, t.title, t.category, t.description FROM item_texts t
                   WHERE t.item_id = s.item_id ORDER BY t.valid_from DESC LIMIT 1) newest ON true
WHERE newest.item_id IS NULL
   OR (newest.title, newest.category, newest.description) IS DISTINCT FROM (s.title, s.category, s.description)
   OR s.valid_from IS NOT NULL AND NOT EXISTS (
        SELECT FROM item_texts t WHERE t.item_id = s.item_id AND t.valid_from <= s.valid_from)
ORDER BY s.item_id
ON CONFLICT (item_id, valid_from) DO UPDATE SET
    title = EXCLUDED.title, category = EXCLUDED.category, description = EXCLUDED.description,
    written_xid = pg_current_xact_id()
RETURNING item_id"""
# New items first (item_texts refers to them), then their text versions, then every staged item
# takes its newest text (display, search) and its first text's valid_from: the earliest moment an
# event may name it.
_INSERT_ITEMS = """
INSERT INTO items (item_id, title, category, description, price, valid_from)
SELECT DISTINCT ON (item_id) item_id, title, category, description, price,
       coalesce(valid_from, TIMESTAMPTZ '1970-01-01 00:00:00+00') FROM _stage_items ORDER BY item_id
ON CONFLICT (item_id) DO NOTHING
RETURNING item_id"""
_REFRESH_ITEMS = """
UPDATE items i SET
    title = t.title, category = t.category, description = t.description,
    price = coalesce(s.price, i.price), valid_from = first.valid_from,
    updated_at = CASE WHEN (i.title, i.category, i.description) IS DISTINCT FROM (t.title, t.category, t.description)
                 THEN now() ELSE i.updated_at END,
    written_xid = CASE WHEN (i.title, i.category, i.description, i.valid_from)
                       IS DISTINCT FROM (t.title, t.category, t.description, first.valid_from)
                  THEN pg_current_xact_id() ELSE i.written_xid END
FROM (SELECT DISTINCT ON (item_id) item_id, price FROM _stage_items ORDER BY item_id) s,
     LATERAL (SELECT * FROM item_texts t WHERE t.item_id = s.item_id ORDER BY t.valid_from DESC LIMIT 1) t,
     LATERAL (SELECT min(valid_from) AS valid_from FROM item_texts f WHERE f.item_id = s.item_id) first
WHERE i.item_id = s.item_id"""
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
    item_texts_new: int = 0
    interactions_inserted: int = 0
    interactions_duplicate: int = 0
    # Rows of erased customers (their event keys are tombstoned): skipped, so a reload does not bring
    # them back. A new event of theirs (a new key) is new activity and is kept.
    rows_tombstoned: int = 0
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


_FIRST_UNKNOWN = """
SELECT s.row_no, s.item_id, s.event_time, i.item_id IS NULL AS unknown, i.valid_from
FROM _stage_interactions s LEFT JOIN items i ON i.item_id = s.item_id
WHERE i.item_id IS NULL OR s.event_time < i.valid_from ORDER BY s.row_no LIMIT 1"""


def _check_item_texts(conn: Connection, source: str) -> None:
    """Every event names a catalog item whose text existed at the event's time (training reads that text)."""
    bad = conn.execute(sa.text(_FIRST_UNKNOWN)).first()
    if bad is None:
        return
    if bad.unknown:
        raise InputError(source, "item_id", f"{bad.item_id!r} is not in the catalog", int(bad.row_no))
    raise InputError(source, "event_time", f"{bad.event_time.isoformat()} is before item {bad.item_id!r} has a text "
                                           f"(valid from {bad.valid_from.isoformat()})", int(bad.row_no))


_TOMBSTONED = "SELECT key_hash FROM tombstones WHERE kind = :k AND key_hash = ANY(:h)"


def _without_tombstoned(conn: Connection, interactions: pd.DataFrame, users: pd.DataFrame
                        ) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The batch less erased customers' events (by their keys' keyed hashes), and less erased customers
    themselves unless they come with new events; and how many events were skipped."""
    if not conn.execute(sa.text("SELECT EXISTS (SELECT 1 FROM tombstones)")).scalar():
        return interactions, users, 0  # no erasure yet: no hashing
    from freshrec.config import get_settings
    from freshrec.erasure.keys import erasure_key, keyed_hashes

    key = erasure_key(get_settings())

    def tombstoned(kind: str, values: pd.Series) -> np.ndarray:
        hashes = keyed_hashes(key, kind, values.astype(str))
        found = {bytes(r[0]) for r in conn.execute(sa.text(_TOMBSTONED), {"k": kind, "h": hashes})}
        return np.array([h in found for h in hashes], dtype=bool)

    skipped = tombstoned("event", interactions["event_key"]) if len(interactions) else np.zeros(0, bool)
    kept = interactions[~skipped]
    if len(users):
        erased = tombstoned("user", users["user_id"]) & ~users["user_id"].isin(kept["user_id"]).to_numpy()
        users = users[~erased]
    return kept, users, int(skipped.sum())


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
        interactions, known_users, summary.rows_tombstoned = _without_tombstoned(conn, batch.interactions, batch.users)
        interactions = interactions.reset_index(drop=True)
        interactions.insert(0, "row_no", range(1, len(interactions) + 1))
        users = pd.concat([known_users, interactions[["user_id"]].drop_duplicates()], ignore_index=True)
        _stage(conn, "users", users.drop_duplicates("user_id").reindex(columns=["user_id", "country"]))
        _stage(conn, "items", batch.items)
        _stage(conn, "interactions", interactions, progress)
        summary.users_new = sum(r.inserted for r in conn.execute(sa.text(_UPSERT_USERS)))
        summary.items_new = len(conn.execute(sa.text(_INSERT_ITEMS)).all())
        summary.item_texts_new = len(conn.execute(sa.text(_INSERT_TEXTS)).all())
        staged = conn.execute(sa.text(_REFRESH_ITEMS)).rowcount
        summary.items_updated = staged - summary.items_new
        _check_item_texts(conn, source)
        inserted = conn.execute(sa.text(_INSERT_INTERACTIONS)).all()
        summary.interactions_inserted = len(inserted)
        summary.interactions_duplicate = len(interactions) - len(inserted)
        summary.profile_rows = refresh_profiles(conn, sorted({r.user_id for r in inserted}), profile_length)
    return summary
