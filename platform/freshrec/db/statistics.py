"""Fresh planner statistics before a large read.

An update or a materialize usually runs right after a load. Autovacuum analyses a table only once
``autovacuum_analyze_scale_factor`` (10%) of its rows have changed, and then at its next nap. Until
then the planner knows nothing of the new rows. New rows lie past the histogram's last bucket (their
``event_time`` and ``ingest_xid`` grow), so a filter on them is estimated at a handful of rows, and
the planner picks nested loops over thousands. At 1x, an update right after the week's load
built its ranker inputs in 4.2 s; after ``ANALYZE``, the same update on a copy of that database took
0.38 s.

A week at 1x is 1.2% of the interactions, and at 100x it would be well under 1%, so the rule counts
rows, not a share: a table is analysed once ``CHANGED_ROWS`` rows changed (or a tenth of a small
table). ``ANALYZE`` samples at most 300 x ``default_statistics_target`` rows, so it costs about the
same at any table size.

Autovacuum's analyse also merges each GIN index's pending list (``fastupdate``: new entries wait in
an unsorted list, up to ``gin_pending_list_limit``, 4 MB); a manual ``ANALYZE`` does not, so it is
done here too, for every GIN index of the schema, whether or not its table changed enough to be
analysed: ``items`` changes little in a load, and its list still fills. Every search scans the whole list until it is merged: after
the week's load at 10x the bundled shop, ``items.search_doc``'s list held 165 pages, and a search
that matched 30 items took 4.5 ms in the index instead of 0.07 ms (``EXPLAIN ANALYZE``). The
update's gate runs about 800 such searches, and so does every API process between a load and
autovacuum's next visit.
"""
from __future__ import annotations

import logging
import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

log = logging.getLogger("freshrec.db")

CHANGED_ROWS = 1_000

# Tables and the partitions of item_embeddings and copurchase_counts (a partition is written once, by
# the publish that makes it, and read by the next update through a filter on its version). A
# partitioned parent holds no rows, and autovacuum never analyses one. Only tables this role may
# analyse (their owner's rights): another's would only warn, and be found stale again each time.
_STALE = """
SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.schemaname = current_schema() AND c.relkind = 'r' AND pg_has_role(c.relowner, 'USAGE')
  AND s.n_mod_since_analyze >= greatest(1, least(:rows, 0.1 * s.n_live_tup))
ORDER BY s.relname"""
# The schema's GIN indexes that this role may merge (the owner's rights, as for the analyse); an index
# still being built concurrently (not valid, or not ready) is left alone.
_GIN = """
SELECT i.indexrelid::regclass::text FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
JOIN pg_am a ON a.oid = x.relam JOIN pg_class t ON t.oid = i.indrelid
WHERE x.relnamespace = CAST(current_schema() AS regnamespace) AND a.amname = 'gin'
  AND i.indisvalid AND i.indisready AND pg_has_role(t.relowner, 'USAGE')
ORDER BY 1"""


def analyze_changed(engine: Engine, changed_rows: int = CHANGED_ROWS) -> list[str]:
    """``ANALYZE`` every table of the schema that changed by ``changed_rows`` rows since its last analyse,
    and merge every GIN index's pending list; the tables analysed, in order."""
    started = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        analysed = []
        for table in [r[0] for r in conn.execute(sa.text(_STALE), {"rows": changed_rows})]:
            try:
                conn.execute(sa.text(f'ANALYZE "{table}"'))
                analysed.append(table)
            except sa.exc.ProgrammingError as e:  # an erased version's partition, dropped since the query
                if getattr(e.orig, "sqlstate", None) != "42P01":
                    raise
        merge_pending(conn)
    if analysed:
        log.info(f"analysed {', '.join(analysed)} in {time.perf_counter() - started:.2f} s (changed since their "
                 "last analyse; the planner would otherwise not know the new rows)")
    return analysed


def merge_pending(conn) -> int:
    """Merge the pending list of every GIN index of the schema into its tree (on an autocommit
    connection); returns the pages merged. A speed-up, never a reason to fail the caller: an index that
    cannot be merged now (dropped since, a lock timeout) is logged and left to autovacuum."""
    pages = 0
    for index in conn.execute(sa.text(_GIN)).scalars():
        try:
            pages += conn.execute(sa.text("SELECT gin_clean_pending_list(CAST(:i AS regclass))"), {"i": index}).scalar() or 0
        except sa.exc.DBAPIError as e:
            log.warning(f"could not merge the pending list of {index}, left to autovacuum: {e.orig}")
    if pages:
        log.info(f"merged {pages} pending pages of GIN indexes")
    return pages
