"""Co-purchase pair counts as SQL state, keyed by the version whose cut added them.

``copurchase_counts`` holds, for each version, what its cut's rows added to "items i and j were
bought in the same basket" (every ordered pair, and each item with itself: the baskets holding it).
A lineage's counts are the sum over its versions, so:
- lineage says which rows made which counts (a version's are exactly its cut's);
- an update adds only its cut's pairs, in its publish transaction: the work follows the new rows;
- an erasure subtracts the customer's pairs from the versions that counted them, in its own
  transaction (``subtract_users``);
- a version's top-k neighbours (``item_neighbours``) are recomputed only for the items its cut
  touched; every other item's are its parent's, copied in SQL (an untouched item's counts, and so
  its P(partner | item), did not change).

A basket is a user's purchases at one moment (as ``EventLog``). One whose rows span two cuts is
counted exactly: the later cut adds C(all its rows) - C(its earlier rows), the pairs with at least
one item new to it. Nothing here is dense, and nothing leaves the database.

``copurchase_cuts`` records which versions' counts are written: a version published before this
table existed (an upgrade) is counted from its watermark when a descendant first needs it.
"""
from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from freshrec.ranking.copurchase import NEIGHBOURS

# The pairs a cut [xid_from, xid_to) adds, optionally for some users only (an erasure's). ``before``:
# the item was already in the basket below the cut (its pairs with other such items are counted).
# Pairs come from unnesting each basket's items twice, not from joining the items with themselves
# (the same nested-loop risk as below).
_DELTA = """
WITH touched AS (
    SELECT DISTINCT user_id, event_time FROM interactions
    WHERE event_type = 'purchase' AND ingest_xid >= CAST(:xid_from AS xid8) AND ingest_xid < CAST(:xid_to AS xid8)
      {users}
), basket_items AS (
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
WHERE NOT (a.before AND b.before)
GROUP BY 1, 2"""
_FOR_USERS = "AND user_id = ANY(:users)"

_UNCOUNTED = """
SELECT a.ancestor AS version, w.xid_from::text AS xid_from, w.xid_to::text AS xid_to
FROM version_ancestry a JOIN watermarks w ON w.version = a.ancestor
WHERE a.version = :version AND NOT EXISTS (SELECT FROM copurchase_cuts c WHERE c.version = a.ancestor)
ORDER BY a.depth DESC"""
_LINEAGE = "SELECT array_agg(ancestor) FROM version_ancestry WHERE version = :version"

# Each item's k strongest partners by P(partner | item) = pairs / baskets holding the item, in
# float4 as the in-process ``CoPurchase.neighbours`` (ties: the catalog's order, ``ORDER BY item_id``).
# Windows, never a join of the counts with themselves: on fresh, unanalysed rows the planner may
# take a nested loop there, quadratic in the pairs (seen: a replay's publish ran for many minutes).
_NEIGHBOURS = """
WITH counts AS (
    SELECT item_a, item_b, sum(baskets)::float4 AS n FROM copurchase_counts
    WHERE version = ANY(:lineage) {items}
    GROUP BY 1, 2 HAVING sum(baskets) > 0
), with_own AS (
    SELECT item_a, item_b, n, max(n) FILTER (WHERE item_b = item_a) OVER (PARTITION BY item_a) AS own FROM counts
), ranked AS (
    SELECT item_a, item_b, n / own AS strength,
           row_number() OVER (PARTITION BY item_a ORDER BY n / own DESC, item_b) AS r
    FROM with_own WHERE item_b <> item_a
)
INSERT INTO item_neighbours (version, item_id, partners, strengths)
SELECT :version, item_a, array_agg(item_b ORDER BY r), array_agg(strength ORDER BY r)
FROM ranked WHERE r <= :k GROUP BY item_a"""
_COPY_UNTOUCHED = """
INSERT INTO item_neighbours (version, item_id, partners, strengths)
SELECT :version, p.item_id, p.partners, p.strengths FROM item_neighbours p
WHERE p.version = :parent AND NOT (p.item_id = ANY(:touched))"""


def _count_cut(conn: Connection, version: int, xid_from: str, xid_to: str) -> int:
    """Write what one version's cut adds; returns the number of pair rows."""
    written = conn.execute(sa.text(
        f"INSERT INTO copurchase_counts (version, item_a, item_b, baskets) SELECT :version, d.* FROM ({_DELTA.format(users='')}) d"),
        {"version": version, "xid_from": xid_from, "xid_to": xid_to}).rowcount
    conn.execute(sa.text("INSERT INTO copurchase_cuts (version, pair_rows) VALUES (:v, :n)"), {"v": version, "n": written})
    # The planner's statistics must know the rows just added (ANALYZE counts this transaction's own
    # inserts): estimated at one row, a version's fresh counts got a nested loop over the lineage's
    # millions of rows in the neighbours query (a 3x shop's weekly publish took 250 s).
    conn.execute(sa.text("ANALYZE copurchase_counts"))
    return written


def count_lineage(conn: Connection, version: int) -> int:
    """Count the cut of ``version`` and of any ancestor not counted yet (published before the table),
    oldest first, in the caller's transaction; returns the pair rows written."""
    pending = conn.execute(sa.text(_UNCOUNTED), {"version": version}).all()
    return sum(_count_cut(conn, r.version, r.xid_from, r.xid_to) for r in pending)


def publish_neighbours(conn: Connection, version: int, parent: int | None, k: int = NEIGHBOURS) -> int:
    """The version's ``item_neighbours`` from its lineage's counts (after ``count_lineage``): the items
    its cut touched recomputed, the others copied from the parent. Returns the rows written."""
    lineage = conn.execute(sa.text(_LINEAGE), {"version": version}).scalar()
    incremental = parent is not None and has_neighbours(conn, parent)
    params = {"version": version, "lineage": lineage, "k": k}
    if not incremental:  # a first version, or a parent without stored neighbours: every item
        return conn.execute(sa.text(_NEIGHBOURS.format(items="")), params).rowcount
    # The items the cut touched, as an array: each looked up by the primary key, whatever the estimates.
    touched = [r[0] for r in conn.execute(sa.text(
        "SELECT DISTINCT item_a FROM copurchase_counts WHERE version = :version"), {"version": version})]
    written = conn.execute(sa.text(_NEIGHBOURS.format(items="AND item_a = ANY(:touched)")),
                           {**params, "touched": touched}).rowcount
    return written + conn.execute(sa.text(_COPY_UNTOUCHED),
                                  {"version": version, "parent": parent, "touched": touched}).rowcount


def neighbours_frame(conn: Connection, version: int) -> pd.DataFrame:
    """A version's neighbours as Feast's ``item_neighbours`` view takes them (item_id, partners, strengths)."""
    rows = conn.execute(sa.text("SELECT item_id, partners, strengths FROM item_neighbours WHERE version = :v "
                                "ORDER BY item_id"), {"v": version}).all()
    return pd.DataFrame(rows, columns=["item_id", "partners", "strengths"])


def read_neighbours(conn: Connection, version: int, item_ids: list[str]) -> dict[str, tuple[list[str], list[float]]]:
    """These items' stored neighbours in a version: {item id: (partner ids, strengths)}."""
    return {r.item_id: (list(r.partners), list(r.strengths)) for r in conn.execute(sa.text(
        "SELECT item_id, partners, strengths FROM item_neighbours WHERE version = :v AND item_id = ANY(:i)"),
        {"v": version, "i": list(item_ids)})}


def has_neighbours(conn: Connection, version: int) -> bool:
    return conn.execute(sa.text("SELECT EXISTS (SELECT FROM item_neighbours WHERE version = :v)"), {"v": version}).scalar()


def lineage_counts(conn: Connection, version: int) -> pd.DataFrame:
    """The summed pair counts of a version's lineage (item_a, item_b, baskets), for audits and tests."""
    return pd.DataFrame(conn.execute(sa.text(
        "SELECT item_a, item_b, sum(baskets)::bigint AS baskets FROM copurchase_counts "
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
    """Retired (erased) versions' counts go with them."""
    conn.execute(sa.text("DELETE FROM copurchase_counts WHERE version = ANY(:v)"), {"v": versions})
    conn.execute(sa.text("DELETE FROM copurchase_cuts WHERE version = ANY(:v)"), {"v": versions})
