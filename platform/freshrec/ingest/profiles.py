"""Keep ``user_profiles`` current: one row per (user, moment), the Feast source of ``user_text``.

A profile row lists the titles of the user's last N interactions, newest first, each title as it
read at its event (``item_texts``). It is stamped one
microsecond *after* its newest event: Feast's point-in-time join takes feature rows with
``timestamp <= entity timestamp``, so an entity row at time t sees only events strictly before t,
never its own basket.
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

_REFRESH = """
DELETE FROM user_profiles p USING _affected_users a WHERE p.user_id = a.user_id;

INSERT INTO user_profiles (user_id, valid_from, profile_text, n_events, n_baskets)
SELECT user_id,
       event_time + interval '1 microsecond',
       array_to_string(ARRAY(SELECT t FROM unnest(recent) WITH ORDINALITY u(t, o) ORDER BY o DESC), '; '),
       n_events,
       n_baskets
FROM (
    SELECT DISTINCT ON (user_id, event_time) user_id, event_time, recent, n_events, n_baskets
    FROM (
        SELECT i.user_id, i.event_time, i.id,
               array_agg(CASE WHEN i.query IS NULL THEN coalesce(t.title, it.title)
                              ELSE 'searched ' || i.query || ': ' || coalesce(t.title, it.title) END) OVER recent_rows AS recent,
               count(*) OVER (PARTITION BY i.user_id ORDER BY i.event_time, i.id) AS n_events,
               dense_rank() OVER (PARTITION BY i.user_id ORDER BY i.event_time) AS n_baskets
        FROM interactions i
        JOIN _affected_users a ON a.user_id = i.user_id
        JOIN items it ON it.item_id = i.item_id
        -- the item's title as it read at the event (item_texts keeps every version; rows from before
        -- any version, written around the loaders, fall back to the current title)
        LEFT JOIN LATERAL (SELECT t.title FROM item_texts t WHERE t.item_id = i.item_id AND t.valid_from <= i.event_time
                           ORDER BY t.valid_from DESC LIMIT 1) t ON true
        WINDOW recent_rows AS (PARTITION BY i.user_id ORDER BY i.event_time, i.id
                               ROWS BETWEEN {preceding} PRECEDING AND CURRENT ROW)
    ) per_event
    ORDER BY user_id, event_time, id DESC
) per_moment;
"""


def refresh_profiles(conn: Connection, user_ids: list[str], length: int) -> int:
    """Rebuild the profile history of ``user_ids``; returns the number of profile rows written."""
    if not user_ids:
        return 0
    conn.execute(sa.text("CREATE TEMP TABLE IF NOT EXISTS _affected_users (user_id text PRIMARY KEY) ON COMMIT DROP"))
    conn.execute(sa.text("TRUNCATE _affected_users"))
    conn.execute(
        sa.text("INSERT INTO _affected_users SELECT DISTINCT unnest(CAST(:ids AS text[]))"), {"ids": list(user_ids)}
    )
    delete_sql, insert_sql = _REFRESH.format(preceding=int(length) - 1).split(";\n\n")
    conn.execute(sa.text(delete_sql))
    return conn.execute(sa.text(insert_sql)).rowcount
