"""Keep ``item_daily_stats`` current: per item and day, the Feast source of ``item_stats``.

A row for day D holds the item's interactions over the 7 and 28 days ending with D, and how many
users ever bought it and bought it again (in a second basket), all counted through the end of D.
It is stamped D+1 00:00 UTC, so a point-in-time read at time t sees only days before t's day.

Every item has a row for every day from its first interaction to the newest day in the table:
an item nobody touched for a month still gets its zero counts, so the newest row of every item
(what ``feast materialize`` copies online) is always right for the newest day.

A refresh rebuilds the rows of the days from ``since`` on. The trailing windows look back 27
days, and the buyer counts continue from the stored row of the day before the window, so its
cost follows the days rebuilt, not the table (a week of the bundled data: about 1.5 s).

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

_DELETE = "DELETE FROM item_daily_stats WHERE valid_from > CAST(:since AS date)"
_REBUILD = """
INSERT INTO item_daily_stats (item_id, valid_from, events_7d, events_28d, buyers, repeat_buyers)
WITH bounds AS (
    SELECT CAST(:since AS date) AS since, CAST(:since AS date) - 27 AS start,
           (SELECT max(event_time AT TIME ZONE 'UTC')::date FROM interactions) AS newest
),
recent AS (  -- interactions of the window days
    SELECT i.user_id, i.item_id, i.event_type, i.event_time, (i.event_time AT TIME ZONE 'UTC')::date AS day
    FROM interactions i, bounds b WHERE i.event_time >= b.start::timestamp AT TIME ZONE 'UTC'
),
per_day AS (SELECT item_id, day, count(*) AS events FROM recent GROUP BY item_id, day),
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
base AS (  -- the stored counts through the day before the window (every known item has that row:
           -- rows run daily to the newest day, so the newest stamp at or before it holds them all)
    SELECT s.item_id, s.buyers, s.repeat_buyers FROM item_daily_stats s
    WHERE s.valid_from = (SELECT max(valid_from) FROM item_daily_stats, bounds b
                          WHERE valid_from <= b.start::timestamp AT TIME ZONE 'UTC')
),
first_days AS (  -- items known before the window continue from its start
    SELECT item_id, min(day) AS first_day FROM (
        SELECT item_id, b.start AS day FROM base, bounds b
        UNION ALL SELECT item_id, day FROM per_day) d
    GROUP BY item_id
),
dense AS (
    SELECT f.item_id, g.day::date AS day
    FROM first_days f CROSS JOIN bounds b,
         LATERAL generate_series(greatest(f.first_day, b.start), b.newest, interval '1 day') g(day)
),
windowed AS (
    SELECT d.item_id, d.day,
           sum(coalesce(p.events, 0)) OVER (w ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) AS events_7d,
           sum(coalesce(p.events, 0)) OVER (w ROWS BETWEEN 27 PRECEDING AND CURRENT ROW) AS events_28d,
           coalesce(bs.buyers, 0) + sum(coalesce(n.new_buyers, 0)) OVER (w ROWS UNBOUNDED PRECEDING) AS buyers,
           coalesce(bs.repeat_buyers, 0) + sum(coalesce(n.new_repeaters, 0)) OVER (w ROWS UNBOUNDED PRECEDING) AS repeat_buyers
    FROM dense d
    LEFT JOIN per_day p USING (item_id, day)
    LEFT JOIN buyers n USING (item_id, day)
    LEFT JOIN base bs USING (item_id)
    WINDOW w AS (PARTITION BY d.item_id ORDER BY d.day)
)
SELECT w.item_id, (w.day + 1)::timestamp AT TIME ZONE 'UTC', w.events_7d, w.events_28d, w.buyers, w.repeat_buyers
FROM windowed w, bounds b WHERE w.day >= b.since
"""


def refresh_item_stats(conn: Connection, since: date) -> int:
    """Rebuild the rows of the days from ``since`` on (inside ``conn``'s transaction); returns rows written."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
    # The windows of days >= since reach 27 days back: rows before that stay as they are.
    conn.execute(sa.text(_DELETE), {"since": since})
    return conn.execute(sa.text(_REBUILD), {"since": since}).rowcount


CURSOR = "item_daily_stats"
_FIRST_NEW_DAY = """
SELECT min(event_time AT TIME ZONE 'UTC')::date FROM interactions
WHERE ingest_xid >= CAST(:xid_from AS xid8) AND ingest_xid < CAST(:xid_to AS xid8)"""


def catch_up(engine: Engine) -> int:
    """Rebuild from the first day of every interaction committed since the last catch-up; returns rows written."""
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
        # Every transaction below the horizon has ended: none of them can add a row behind the cursor later.
        now, previous = cursors.horizon(conn), cursors.read(conn, CURSOR)
        if int(now) <= int(previous):
            return 0
        since = conn.execute(sa.text(_FIRST_NEW_DAY), {"xid_from": previous, "xid_to": now}).scalar()
        written = refresh_item_stats(conn, since) if since is not None else 0
        cursors.write(conn, CURSOR, now)
    return written


def full_rebuild_since() -> date:
    """A day before any data: refreshing from it rebuilds the whole table."""
    return date(1970, 1, 1) + timedelta(days=WINDOW_DAYS)
