"""Co-purchase pair counts as SQL state, keyed by the version whose cut added them.

``copurchase_counts`` holds, for each version, what its cut's rows added to "items i and j were
bought in the same basket" (each unordered pair once, ``item_a <= item_b`` in the database's
collation, and each item with itself: the baskets holding it; ``copurchase_pairs`` reads both ways).
A lineage's counts are the sum over its versions, so:
- lineage says which rows made which counts (a version's are exactly its cut's);
- an update adds only its cut's pairs, in its publish transaction: the work follows the new rows;
- an erasure subtracts the customer's pairs from the versions that counted them, in its own
  transaction (``subtract_users``);
- a version's top-k neighbours (``item_neighbours``) are what these counts rank to
  (``tests/test_copurchase_counts.py``), though the updater ranks them in process from the raw
  purchase rows (``updater.build._neighbours``): on this shop a purchase row makes about 10 pair
  rows, and a first design that ranked the touched items from the lineage's counts in SQL made a
  publish grow with history.

A basket is a user's purchases at one moment (as ``EventLog``). One whose rows span two cuts is
counted exactly: the later cut adds C(all its rows) - C(its earlier rows), the pairs with at least
one item new to it. Nothing here is dense.

``copurchase_cuts`` records which versions' counts are written: a version published before this
table existed (an upgrade) is counted from its watermark when a descendant first needs it.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from freshrec.db.partitions import new_partition

# The pairs a cut [xid_from, xid_to) adds, optionally for some users only (an erasure's). ``before``:
# the item was already in the basket below the cut (its pairs with other such items are counted).
# Pairs come from unnesting each basket's items twice, never from joining the items with themselves:
# on fresh, unanalysed rows the planner may take a nested loop there, quadratic in the rows.
# The baskets a cut [xid_from, xid_to) touched: a purchase row of theirs is in it.
_TOUCHED = """
WITH touched AS (
    SELECT DISTINCT user_id, event_time FROM interactions
    WHERE event_type = 'purchase' AND ingest_xid >= CAST(:xid_from AS xid8) AND ingest_xid < CAST(:xid_to AS xid8)
      {users}
)"""
_DELTA = _TOUCHED + """, basket_items AS (
    SELECT i.user_id, i.event_time, i.item_id, bool_or(i.ingest_xid < CAST(:xid_from AS xid8)) AS before
    FROM interactions i JOIN touched t USING (user_id, event_time)
    WHERE i.event_type = 'purchase' AND i.ingest_xid < CAST(:xid_to AS xid8)
    GROUP BY 1, 2, 3
), baskets AS (
    SELECT array_agg(item_id) AS items, array_agg(before) AS befores FROM basket_items GROUP BY user_id, event_time
)
SELECT a.item AS item_a, b.item AS item_b, count(*) AS baskets
FROM baskets k CROSS JOIN LATERAL unnest(k.items, k.befores) AS a(item, before)
CROSS JOIN LATERAL unnest(k.items, k.befores) AS b(item, before)
WHERE a.item <= b.item AND NOT (a.before AND b.before)
GROUP BY 1, 2"""
_FOR_USERS = "AND user_id = ANY(:users)"
# Every item of those baskets: the only items whose pair counts, and so whose partners, a cut changes.
_CHANGED_ITEMS = _TOUCHED.format(users="") + """
SELECT DISTINCT i.item_id FROM interactions i JOIN touched t USING (user_id, event_time)
WHERE i.event_type = 'purchase' AND i.ingest_xid < CAST(:xid_to AS xid8)"""


def changed_items(conn: Connection, xid_from: str, xid_to: str) -> list[str]:
    """The items whose co-purchase partners a cut can change: those of the baskets it touched."""
    return list(conn.execute(sa.text(_CHANGED_ITEMS), {"xid_from": xid_from, "xid_to": xid_to}).scalars())

_UNCOUNTED = """
SELECT a.ancestor AS version, w.xid_from::text AS xid_from, w.xid_to::text AS xid_to
FROM version_ancestry a JOIN watermarks w ON w.version = a.ancestor
WHERE a.version = :version AND NOT EXISTS (SELECT FROM copurchase_cuts c WHERE c.version = a.ancestor)
ORDER BY a.depth DESC"""

def _count_cut(conn: Connection, version: int, xid_from: str, xid_to: str) -> int:
    """Write what one version's cut adds, as its own partition (``db.partitions``); returns the number
    of pair rows."""
    with new_partition(conn, "copurchase_counts", version, key="version, item_a, item_b") as table:
        written = conn.execute(sa.text(
            f"INSERT INTO {table} (version, item_a, item_b, baskets) SELECT :version, d.* FROM ({_DELTA.format(users='')}) d"),
            {"version": version, "xid_from": xid_from, "xid_to": xid_to}).rowcount
    conn.execute(sa.text("INSERT INTO copurchase_cuts (version, pair_rows) VALUES (:v, :n)"), {"v": version, "n": written})
    return written


def count_lineage(conn: Connection, version: int) -> int:
    """Count the cut of ``version`` and of any ancestor not counted yet (published before the table),
    oldest first, in the caller's transaction; returns the pair rows written."""
    pending = conn.execute(sa.text(_UNCOUNTED), {"version": version}).all()
    return sum(_count_cut(conn, r.version, r.xid_from, r.xid_to) for r in pending)


@dataclass
class RankedNeighbours:
    """A version's neighbours as it publishes them: the lists it ranked (item_id, partners, strengths),
    the items it ranked (one without partners has no list), and the parent whose lists of every other
    item it carries over unchanged (None: it ranked every item)."""

    frame: pd.DataFrame
    ranked: list[str] | None = None
    carried_from: int | None = None


def carry_neighbours(conn: Connection, version: int, parent: int, ranked: list[str]) -> int:
    """The parent's lists of every item not ranked again, into ``version`` as they are (``computed_by``
    kept: the online store holds each list once); returns how many."""
    return conn.execute(sa.text(
        "INSERT INTO item_neighbours (version, item_id, partners, strengths, computed_by) "
        "SELECT :v, item_id, partners, strengths, computed_by FROM item_neighbours "
        "WHERE version = :parent AND NOT (item_id = ANY(:ranked))"),
        {"v": version, "parent": parent, "ranked": list(ranked)}).rowcount


def neighbour_owners(conn: Connection, version: int) -> dict[str, int]:
    """{item id: the version that ranked its list} over a version's neighbours (its online keys)."""
    return dict(conn.execute(sa.text("SELECT item_id, computed_by FROM item_neighbours WHERE version = :v"),
                             {"v": version}).all())


def read_neighbours(conn: Connection, version: int, item_ids: list[str]) -> dict[str, tuple[list[str], list[float]]]:
    """These items' stored neighbours in a version: {item id: (partner ids, strengths)}.

    In binary: psycopg parses binary arrays in C; their text form took twice as long (0.76 against
    0.43 s for 12,000 items' lists at 10x the bundled shop), and a float4 comes back as exactly its value."""
    with conn.connection.driver_connection.cursor(binary=True) as cursor:
        cursor.execute("SELECT item_id, partners, strengths FROM item_neighbours WHERE version = %s AND item_id = ANY(%s)",
                       (int(version), list(item_ids)))
        return {item: (partners, strengths) for item, partners, strengths in cursor}


def has_neighbours(conn: Connection, version: int) -> bool:
    return conn.execute(sa.text("SELECT EXISTS (SELECT FROM item_neighbours WHERE version = :v)"), {"v": version}).scalar()


def lineage_counts(conn: Connection, version: int) -> pd.DataFrame:
    """The summed pair counts of a version's lineage, both ways (item_a, item_b, baskets), for audits
    and tests."""
    return pd.DataFrame(conn.execute(sa.text(
        "SELECT item_id AS item_a, partner AS item_b, sum(baskets)::bigint AS baskets FROM copurchase_pairs "
        "WHERE version IN (SELECT ancestor FROM version_ancestry WHERE version = :version) "
        "GROUP BY 1, 2 HAVING sum(baskets) > 0 ORDER BY 1, 2"),
        {"version": version}).all(), columns=["item_a", "item_b", "baskets"])


_COUNTED_WITH_USERS = """
SELECT w.version, w.xid_from::text AS xid_from, w.xid_to::text AS xid_to
FROM watermarks w JOIN copurchase_cuts c USING (version)
WHERE EXISTS (SELECT FROM interactions i WHERE i.user_id = ANY(:users) AND i.event_type = 'purchase'
              AND i.ingest_xid >= w.xid_from AND i.ingest_xid < w.xid_to)"""


def subtract_users(conn: Connection, users: list[str]) -> int:
    """Take these customers' baskets out of every version's counts (in the erasure's transaction,
    before their rows are deleted). Their neighbours tables stay until the replay retires them.
    Returns the pair rows changed."""
    changed = 0
    for row in conn.execute(sa.text(_COUNTED_WITH_USERS), {"users": users}).all():
        params = {"version": row.version, "xid_from": row.xid_from, "xid_to": row.xid_to, "users": users}
        changed += conn.execute(sa.text(
            f"WITH d AS ({_DELTA.format(users=_FOR_USERS)}) UPDATE copurchase_counts c SET baskets = c.baskets - d.baskets "
            "FROM d WHERE c.version = :version AND c.item_a = d.item_a AND c.item_b = d.item_b"), params).rowcount
        conn.execute(sa.text("DELETE FROM copurchase_counts WHERE version = :version AND baskets <= 0"), params)
    return changed


def drop_versions(conn: Connection, versions: list[int]) -> None:
    """Retired (erased) versions' counts go with them (their emptied partitions are dropped after the
    commit, ``db.partitions.drop_partitions``)."""
    conn.execute(sa.text("DELETE FROM copurchase_counts WHERE version = ANY(:v)"), {"v": versions})
    conn.execute(sa.text("DELETE FROM copurchase_cuts WHERE version = ANY(:v)"), {"v": versions})
