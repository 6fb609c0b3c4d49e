"""Keep ``item_daily_stats`` current: per item, the Feast source of ``item_stats``.

A row for day D holds the item's interactions over the 7 and 28 days ending with D, and how many
users ever bought it and bought it again (in a second basket), all counted through the end of D.
It is stamped D+1 00:00 UTC, so a point-in-time read at time t sees only days before t's day.

**Rows only where something changed.** An item's counts change on a day it had events (they enter
the windows, buyers grow) and 7 and 28 days after one (they leave the windows), and on no other
day. So those are the only days with a row: the newest row at or before any moment is that
moment's value (what Feast's point-in-time join and the online store both take), and an item
nobody touched for a month got its last row, all zeros but its buyers, on the day its last event
left the 28-day window. The table grows with events (at most three rows per item and event day),
not with items times days.

A refresh rebuilds the rows stamped after ``since``: it reads the interactions from 28 days before
(the windows look back 27 days, and an event 28 days back leaves the window that day), and
continues the buyer counts from each item's newest row before them; its cost follows the days
rebuilt, not the table.

``catch_up`` finds ``since`` the way the updater finds its rows: by transaction horizon. It
rebuilds from the first day among the interactions committed since its last run (a cursor of
``ingest_xid``, kept in ``feature_cursors``), so a row that commits late, or a backfill with old
event times, is never skipped, and a run with nothing new costs one index probe.
"""
from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from freshrec.db import cursors

# One refresh at a time: two loaders rebuilding the same days from two snapshots would each
# miss the other's rows. Under READ COMMITTED the statement after the lock sees every commit.
_LOCK = 0x69746D73  # "itms"
WINDOW_DAYS = 28

# :items NULL: every item; else only these (an erasure rebuilds the items its customer touched).
_ONLY = "(CAST(:items AS text[]) IS NULL OR {col} = ANY(CAST(:items AS text[])))"
_DELETE = "DELETE FROM item_daily_stats WHERE valid_from > CAST(:since AS date) AND " + _ONLY.format(col="item_id")
_REBUILD = """
INSERT INTO item_daily_stats (item_id, valid_from, events_7d, events_28d, buyers, repeat_buyers)
WITH bounds AS (
    SELECT CAST(:since AS date) AS since, CAST(:since AS date) - 28 AS start,
           (SELECT max(event_time AT TIME ZONE 'UTC')::date FROM interactions) AS newest
),
recent AS (  -- interactions from 28 days before the first rebuilt day
    SELECT i.user_id, i.item_id, i.event_type, i.event_time, (i.event_time AT TIME ZONE 'UTC')::date AS day
    FROM interactions i, bounds b WHERE i.event_time >= b.start::timestamp AT TIME ZONE 'UTC' AND ONLY_ITEMS
),
per_day AS (SELECT item_id, day, count(*) AS events FROM recent GROUP BY item_id, day),
changes AS (  -- the days each item's counts change: its event days, and 7 and 28 days after them
    SELECT item_id, day, sum(events) AS events FROM (
        SELECT item_id, day, events FROM per_day
        UNION ALL SELECT item_id, day + 7, 0 FROM per_day
        UNION ALL SELECT item_id, day + 28, 0 FROM per_day) c
    GROUP BY item_id, day
),
recent_buys AS (SELECT DISTINCT user_id, item_id, event_time, day FROM recent WHERE event_type = 'purchase'),
earlier AS (  -- baskets with the item before the window, per buyer active in it (at most 2 matter)
    SELECT p.user_id, p.item_id, least(count(DISTINCT i.event_time), 2) AS n
    FROM (SELECT DISTINCT user_id, item_id FROM recent_buys) p
    JOIN interactions i ON i.user_id = p.user_id AND i.item_id = p.item_id AND i.event_type = 'purchase'
    CROSS JOIN bounds b
    WHERE i.event_time < b.start::timestamp AT TIME ZONE 'UTC'
    GROUP BY p.user_id, p.item_id
),
nth AS (
    SELECT r.item_id, r.day,
           coalesce(e.n, 0) + row_number() OVER (PARTITION BY r.user_id, r.item_id ORDER BY r.event_time) AS nth
    FROM recent_buys r LEFT JOIN earlier e USING (user_id, item_id)
),
buyers AS (
    SELECT item_id, day, count(*) FILTER (WHERE nth = 1) AS new_buyers, count(*) FILTER (WHERE nth = 2) AS new_repeaters
    FROM nth WHERE nth <= 2 GROUP BY item_id, day
),
base AS (  -- each changed item's counts through the day before the window: its newest stored row then
    SELECT c.item_id, s.buyers, s.repeat_buyers
    FROM (SELECT DISTINCT item_id FROM changes) c CROSS JOIN bounds b
    JOIN LATERAL (SELECT buyers, repeat_buyers FROM item_daily_stats s
                  WHERE s.item_id = c.item_id AND s.valid_from <= b.start::timestamp AT TIME ZONE 'UTC'
                  ORDER BY s.valid_from DESC LIMIT 1) s ON true
),
windowed AS (
    SELECT c.item_id, c.day,
           sum(c.events) OVER (w RANGE BETWEEN interval '6 days' PRECEDING AND CURRENT ROW) AS events_7d,
           sum(c.events) OVER (w RANGE BETWEEN interval '27 days' PRECEDING AND CURRENT ROW) AS events_28d,
           coalesce(bs.buyers, 0) + sum(coalesce(n.new_buyers, 0)) OVER (w ROWS UNBOUNDED PRECEDING) AS buyers,
           coalesce(bs.repeat_buyers, 0) + sum(coalesce(n.new_repeaters, 0)) OVER (w ROWS UNBOUNDED PRECEDING) AS repeat_buyers
    FROM changes c
    LEFT JOIN buyers n USING (item_id, day)
    LEFT JOIN base bs USING (item_id)
    WINDOW w AS (PARTITION BY c.item_id ORDER BY c.day)
)
SELECT w.item_id, (w.day + 1)::timestamp AT TIME ZONE 'UTC', w.events_7d, w.events_28d, w.buyers, w.repeat_buyers
FROM windowed w, bounds b WHERE w.day >= b.since AND w.day <= b.newest
""".replace("ONLY_ITEMS", _ONLY.format(col="i.item_id"))


# Named items (an erasure's) that the rebuild left without a row from ``since`` on: their value from
# then on is their newest earlier row, or nothing at all. Readers that follow ``written_xid`` (the
# materialize window, the API's refresh of its item aggregates) must still see that they changed,
# so that row is stamped by this transaction, and an item with no row left gets a row of zeros.
_UNCHANGED_SINCE = """
SELECT item_id FROM unnest(CAST(:items AS text[])) AS named(item_id)
WHERE NOT EXISTS (SELECT FROM item_daily_stats s WHERE s.item_id = named.item_id
                  AND s.valid_from > CAST(:since AS date))"""
_RESTAMP = f"""
UPDATE item_daily_stats s SET written_xid = pg_current_xact_id()
FROM (SELECT DISTINCT ON (item_id) item_id, valid_from FROM item_daily_stats
      WHERE item_id IN ({_UNCHANGED_SINCE}) ORDER BY item_id, valid_from DESC) newest
WHERE s.item_id = newest.item_id AND s.valid_from = newest.valid_from"""
_ZEROS = f"""
INSERT INTO item_daily_stats (item_id, valid_from, events_7d, events_28d, buyers, repeat_buyers)
SELECT item_id, (CAST(:since AS date) + 1)::timestamp AT TIME ZONE 'UTC', 0, 0, 0, 0
FROM ({_UNCHANGED_SINCE}) gone WHERE NOT EXISTS (SELECT FROM item_daily_stats s WHERE s.item_id = gone.item_id)"""


def refresh_item_stats(conn: Connection, since: date, items: list[str] | None = None) -> int:
    """Rebuild the rows of the days from ``since`` on (inside ``conn``'s transaction), of every item or
    of ``items`` only; returns rows written."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
    # The windows of days >= since reach 27 days back: rows before that stay as they are.
    params = {"since": since, "items": None if items is None else sorted(set(items))}
    conn.execute(sa.text(_DELETE), params)
    written = conn.execute(sa.text(_REBUILD), params).rowcount
    if items is not None:
        conn.execute(sa.text(_RESTAMP), params)
        written += conn.execute(sa.text(_ZEROS), params).rowcount
    return written


CURSOR = "item_daily_stats"
_FIRST_NEW_DAY = """
SELECT min(event_time AT TIME ZONE 'UTC')::date FROM interactions
WHERE ingest_xid >= CAST(:xid_from AS xid8) AND ingest_xid < CAST(:xid_to AS xid8)"""
# The day after the newest the table covers: days between it and the new rows (days nobody bought
# anything) still hold changes, events leaving the windows, and are rebuilt too.
_COVERED = "SELECT (max(valid_from) AT TIME ZONE 'UTC')::date FROM item_daily_stats"


def catch_up(engine: Engine) -> int:
    """Rebuild from the first day of every interaction committed since the last catch-up; returns rows written."""
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
        # Every transaction below the horizon has ended: none of them can add a row behind the cursor later.
        now, previous = cursors.horizon(conn), cursors.read(conn, CURSOR)
        if int(now) <= int(previous):
            return 0
        since = conn.execute(sa.text(_FIRST_NEW_DAY), {"xid_from": previous, "xid_to": now}).scalar()
        covered = conn.execute(sa.text(_COVERED)).scalar()
        if since is not None and covered is not None:
            since = min(since, covered)
        written = refresh_item_stats(conn, since) if since is not None else 0
        cursors.write(conn, CURSOR, now)
    return written


def full_rebuild_since() -> date:
    """A day before any data: refreshing from it rebuilds the whole table."""
    return date(1970, 1, 1) + timedelta(days=WINDOW_DAYS)
