"""The online store misses no late row.

The wall-clock cursor this replaced (rows with ``ingested_at > last run's end``) loses a row whose
transaction started before a run and committed after it: ``ingested_at`` is ``now()``, the
transaction's *start*. The transaction-horizon cursor cannot. The second test is that scenario
exactly, and fails on the old cursor. The first is the torture run: writers with long and aborted
transactions while materializations run again and again; at the end every user's online profile
is their newest in SQL. (It alone passed on the old code too: in one process Feast's registry is
cached for 60 s, so the old cursor lagged and its windows were wide.)
"""
import random
import threading
import time
import uuid
from datetime import datetime, timezone

import pandas as pd
import pytest
import sqlalchemy as sa

from freshrec.config import get_settings
from freshrec.db import get_engine
from freshrec.features import apply, materialize, online_user_texts, open_store
from freshrec.ingest import interactions_frame_batch, write_batch

WRITERS, SECONDS = 5, 12.0


def _writer(stop, committed, aborted, seed):
    rng = random.Random(seed)
    engine = get_engine()
    while not stop.is_set():
        # Mostly users written once: a missed write is not repaired by a later one.
        user = f"m-user-{rng.randint(0, 5000)}"
        # Live traffic: events stamped as they happen, so a transaction that commits late holds an
        # event older than those committed around it.
        event = {"event_key": f"m-{uuid.uuid4().hex}", "user_id": user, "item_id": f"m-item-{rng.randint(0, 9)}",
                 "event_type": "purchase", "event_time": datetime.now(timezone.utc), "quantity": 1, "query": None}
        batch = interactions_frame_batch(pd.DataFrame([event]), "torture")
        abort = rng.random() < 0.15
        with engine.connect() as conn:
            tx = conn.begin()
            write_batch(conn, batch, "torture")
            # Some transactions stay open across several materializations before they commit.
            time.sleep(rng.uniform(0.3, 1.2) if rng.random() < 0.15 else rng.choice([0.0, 0.01]))
            tx.rollback() if abort else tx.commit()
        (aborted if abort else committed).append(user)


@pytest.fixture
def store(module_db):
    with get_engine().begin() as conn:
        conn.execute(sa.text("INSERT INTO items (item_id, title, valid_from) SELECT 'm-item-' || n, 'thing ' || n, "
                             "'2010-01-01' FROM generate_series(0, 9) n ON CONFLICT DO NOTHING"))
    store = open_store()
    apply(store, get_settings().feast.repo_path)
    return store


def test_no_committed_profile_is_missing_online(store):
    stop, committed, aborted = threading.Event(), [], []
    threads = [threading.Thread(target=_writer, args=(stop, committed, aborted, i)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    runs = 0
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        materialize(store)
        runs += 1
    stop.set()
    for t in threads:
        t.join()
    materialize(store)  # everyone has finished: this run takes the rest

    with get_engine().connect() as conn:
        newest = dict(conn.execute(sa.text(
            "SELECT DISTINCT ON (user_id) user_id, profile_text FROM user_profiles WHERE user_id LIKE 'm-user-%' "
            "ORDER BY user_id, valid_from DESC")).all())
    online = {u: text for u, (text, _) in online_user_texts(store, sorted(newest)).items()}
    missing = sorted(u for u in newest if online[u] != newest[u])
    assert len(committed) > 100 and aborted and runs >= 3 and len(newest) > 100
    assert missing == [], f"{len(missing)} of {len(newest)} users' newest profiles are not online"
    print(f"\n{runs} materializations, {len(committed)} committed batches, {len(aborted)} aborted: 0 profiles missing")


def _event(user: str) -> pd.DataFrame:
    return pd.DataFrame([{"event_key": f"m-{uuid.uuid4().hex}", "user_id": user, "item_id": "m-item-0",
                          "event_type": "purchase", "event_time": datetime.now(timezone.utc), "quantity": 1,
                          "query": None}])


def test_a_load_that_commits_after_a_run_started_is_not_skipped(store):
    """The scenario exactly: a write begins, a materialization runs and ends, the write commits, a later
    write commits, a materialization runs (each run a fresh process, as `freshrec features materialize`)."""
    engine = get_engine()
    with engine.connect() as late:
        tx = late.begin()
        write_batch(late, interactions_frame_batch(_event("m-late"), "late"), "late")  # begins before the run ...
        time.sleep(0.05)
        materialize(open_store())
        tx.commit()  # ... and commits after it
    time.sleep(0.05)
    with engine.begin() as conn:
        write_batch(conn, interactions_frame_batch(_event("m-after"), "after"), "after")
    materialize(open_store())
    with engine.connect() as conn:
        newest = conn.execute(sa.text("SELECT profile_text FROM user_profiles WHERE user_id = 'm-late' "
                                      "ORDER BY valid_from DESC LIMIT 1")).scalar()
    assert online_user_texts(open_store(), ["m-late"])["m-late"][0] == newest


def test_the_wall_clock_cursor_it_replaced_misses_that_load(store):
    """The same scenario through the old cursor (profiles with ``ingested_at`` after the last run's end):
    ``ingested_at`` is ``now()``, the transaction's start, so the late row looks older than the cursor."""
    engine = get_engine()

    def wall_clock_materialize(since: datetime) -> datetime:
        ended = datetime.now(timezone.utc)
        with engine.connect() as conn:
            start = conn.execute(sa.text("SELECT min(valid_from) FROM user_profiles WHERE ingested_at > :t"),
                                 {"t": since}).scalar()
        if start is not None:
            open_store().materialize(start_date=start, end_date=ended)
        return ended

    cursor = wall_clock_materialize(datetime(1970, 1, 1, tzinfo=timezone.utc))
    with engine.connect() as late:
        tx = late.begin()
        write_batch(late, interactions_frame_batch(_event("m-wall-late"), "late"), "late")
        time.sleep(0.05)
        cursor = wall_clock_materialize(cursor)
        tx.commit()
    time.sleep(0.05)
    with engine.begin() as conn:
        write_batch(conn, interactions_frame_batch(_event("m-wall-after"), "after"), "after")
    wall_clock_materialize(cursor)
    online = online_user_texts(open_store(), ["m-wall-late", "m-wall-after"])
    assert online["m-wall-after"][0] is not None  # the later write went online ...
    assert online["m-wall-late"][0] is None  # ... the late-committing one never did
    materialize(open_store())  # freshrec's transaction-horizon cursor picks it up
    assert online_user_texts(open_store(), ["m-wall-late"])["m-wall-late"][0] is not None
