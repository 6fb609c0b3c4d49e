"""How fresh the served model is, from the SQL state: what `freshrec status` prints and /metrics exports.

- the current version and its age;
- rows committed past its watermark, and the age of the oldest of them (how stale the served
  model's knowledge is at worst);
- the last update run: result, duration;
- whether an update or a watcher holds its lock now;
- the oldest open transaction on the server (the cut waits for it);
- the encoder-state cache's size (estimated from table statistics).
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from freshrec.db import cursors
from freshrec.updater.runs import last_finished

WATCH_LOCK = 0x77617463  # "watc": one watcher per database
UPDATE_LOCK = 0x66726573  # "fres": one update at a time per database (the updater takes it)

_BEHIND = """
WITH served AS (SELECT c.version, v.created_at, w.xid_to FROM current_version c
                JOIN model_versions v USING (version) LEFT JOIN watermarks w USING (version))
SELECT (SELECT version FROM served) AS version,
       extract(epoch FROM now() - (SELECT created_at FROM served))::float8 AS version_age_seconds,
       count(i.id) AS rows_behind,
       extract(epoch FROM now() - min(i.ingest_time))::float8 AS oldest_untrained_seconds
FROM interactions i
WHERE i.ingest_xid >= coalesce((SELECT xid_to FROM served), '0'::xid8)"""
# An advisory lock on a key below 2^32 shows in pg_locks as (classid 0, objid key, objsubid 1).
# Rows no version has consumed yet (past the newest watermark, whatever that version's status):
# what a watching updater waits for. A rejected version's rows are not "new" to it.
_UNSEEN = """
SELECT count(*) AS rows_unseen, extract(epoch FROM now() - min(ingest_time))::float8 AS oldest_unseen_seconds
FROM interactions WHERE ingest_xid >= coalesce((SELECT max(xid_to) FROM watermarks), '0'::xid8)"""
_HELD = """
SELECT EXISTS (SELECT FROM pg_locks l JOIN pg_database d ON d.oid = l.database
               WHERE l.locktype = 'advisory' AND l.classid = 0 AND l.objid = :key AND l.objsubid = 1
                 AND l.granted AND d.datname = current_database())"""
# Estimates, from the planner's statistics: this runs on every /metrics scrape, and a count(*) over a
# growing table would not do. `freshrec cache status` counts exactly.
_CACHE = """
SELECT greatest(c.reltuples, 0)::bigint AS states, pg_total_relation_size(c.oid) AS bytes
FROM pg_class c WHERE c.oid = 'encoder_states'::regclass"""


def lock_held(conn: Connection, key: int) -> bool:
    return bool(conn.execute(sa.text(_HELD), {"key": key}).scalar())


def unseen(conn: Connection) -> dict:
    return dict(conn.execute(sa.text(_UNSEEN)).mappings().one())


def freshness(conn: Connection) -> dict:
    state = dict(conn.execute(sa.text(_BEHIND)).mappings().one())
    state.update(unseen(conn))
    state["last_update"] = last_finished(conn)
    state["update_running"] = lock_held(conn, UPDATE_LOCK)
    state["watcher_running"] = lock_held(conn, WATCH_LOCK)
    state["oldest_transaction"] = cursors.oldest_transaction(conn)
    state["encoder_cache"] = dict(conn.execute(sa.text(_CACHE)).mappings().one())
    return state
