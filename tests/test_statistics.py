"""The planner learns of a load's rows before an update or a materialize reads them.

The table here has autovacuum off, so nothing but ``analyze_changed`` analyses it, and the
figures are the planner's own (``EXPLAIN``), not timings.
"""
import json
import time

import sqlalchemy as sa

from freshrec.db import get_engine
from freshrec.db.statistics import analyze_changed


def _estimate(engine, where: str) -> int:
    with engine.connect() as conn:
        plan = conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) SELECT * FROM stats_probe WHERE {where}")).scalar()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return plan[0]["Plan"]["Plan Rows"]


def _changed(engine) -> int:
    """Rows changed since the last analyse, once the writers' counts have reached the statistics
    (a backend hands them over when it goes idle, up to 10 s later)."""
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT n_mod_since_analyze FROM pg_stat_user_tables "
                                    "WHERE relname = 'stats_probe'")).scalar() or 0


def _insert(engine, first: int, last: int) -> None:
    with engine.begin() as conn:
        before = _changed(engine)
        conn.execute(sa.text("INSERT INTO stats_probe SELECT n, now() FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) n"),
                     {"a": first, "b": last})
    deadline = time.monotonic() + 30
    while _changed(engine) < before + (last - first + 1):
        assert time.monotonic() < deadline, "the insert's counts never reached pg_stat_user_tables"
        time.sleep(0.2)


def _probe(engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE stats_probe (n bigint, at timestamptz) WITH (autovacuum_enabled = false)"))


def _drop(engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE stats_probe"))


def test_a_table_that_grew_past_its_histogram_is_analysed_once_and_its_new_rows_estimated(module_db):
    engine = get_engine()
    _probe(engine)
    try:
        _insert(engine, 1, 20_000)
        assert "stats_probe" in analyze_changed(engine)
        # The week's rows, all past the histogram's last bucket (as each load's ids and times are).
        _insert(engine, 20_001, 22_000)
        stale = _estimate(engine, "n > 20000")
        assert "stats_probe" in analyze_changed(engine)
        fresh = _estimate(engine, "n > 20000")
        assert stale < 100 and 1_500 < fresh < 2_500, (stale, fresh)
        assert _changed(engine) == 0
        # Nothing changed since: nothing to analyse. A few rows are not worth an analyse either.
        assert "stats_probe" not in analyze_changed(engine)
        _insert(engine, 22_001, 22_100)
        assert "stats_probe" not in analyze_changed(engine)
        assert "stats_probe" in analyze_changed(engine, changed_rows=100)
    finally:
        _drop(engine)


def _pending_pages(engine) -> int:
    """Merges the probe's GIN pending list, returning its pages: what was still waiting there."""
    with engine.begin() as conn:
        return conn.execute(sa.text("SELECT gin_clean_pending_list('ix_stats_probe_words')")).scalar()


def test_every_gin_pending_list_is_merged_with_the_analyse_even_below_its_threshold(module_db):
    """A search scans a GIN index's whole pending list until it is merged; a manual ANALYZE leaves it."""
    engine = get_engine()
    _probe(engine)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE stats_probe ADD COLUMN words tsvector "
                                 "GENERATED ALWAYS AS (to_tsvector('english', 'item number ' || n)) STORED"))
            conn.execute(sa.text("CREATE INDEX ix_stats_probe_words ON stats_probe USING gin (words)"))
        _insert(engine, 1, 5_000)
        assert _pending_pages(engine) > 0  # new entries wait in the list (fastupdate, the default)
        _insert(engine, 5_001, 10_000)
        assert "stats_probe" in analyze_changed(engine)
        assert _pending_pages(engine) == 0
        # A few rows, too few to analyse the table again, still fill the list: it is merged all the same.
        _insert(engine, 10_001, 10_050)
        assert _pending_pages(engine) > 0
        _insert(engine, 10_051, 10_100)
        assert "stats_probe" not in analyze_changed(engine)
        assert _pending_pages(engine) == 0
    finally:
        _drop(engine)


def test_materialize_analyses_what_a_load_changed(module_db):
    """``features materialize`` runs right after a load: Feast's point-in-time reads plan on fresh statistics."""
    from freshrec.config import get_settings
    from freshrec.features import apply, materialize, open_store

    engine = get_engine()
    store = open_store()
    apply(store, get_settings().feast.repo_path)
    _probe(engine)
    try:
        _insert(engine, 1, 5_000)
        materialize(store)
        with engine.connect() as conn:
            analysed = conn.execute(sa.text("SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables "
                                            "WHERE relname = 'stats_probe'")).scalar()
        assert analysed and _changed(engine) == 0
    finally:
        _drop(engine)
