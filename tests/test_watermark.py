"""Exactly-once under concurrency: writers with long and aborted transactions, cuts again and again.

Each cut records, at consumption time, the ids it read. At the end every committed row must have
been read by exactly one cut, no aborted row by any, and each cut's range must still hold exactly
the ids it read (a row that committed late into a consumed range would break that).
"""
import random
import threading
import time
import uuid

import psycopg
import pytest
import sqlalchemy as sa

from freshrec.db import get_engine
from freshrec.updater import UPDATE_LOCK, run_update
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.training.watermark import ZERO_XID, take_cut

WRITERS, SECONDS = 6, 6.0


def _writer(url, stop, committed, aborted, seed):
    rng = random.Random(seed)
    with psycopg.connect(url) as conn:
        while not stop.is_set():
            keys = [f"w-{uuid.uuid4().hex}" for _ in range(rng.randint(1, 4))]
            with conn.transaction(force_rollback=(abort := rng.random() < 0.15)):
                for key in keys:
                    conn.execute(
                        "INSERT INTO interactions (event_key, user_id, item_id, event_type, event_time) "
                        "VALUES (%s, 'writer', 'writer-item', 'click', now())", (key,))
                    # Some transactions stay open long; the cut must wait for them, not skip them.
                    time.sleep(rng.choice([0.0, 0.005, 0.02]) if rng.random() > 0.05 else rng.uniform(0.5, 1.5))
            (aborted if abort else committed).extend(keys)


@pytest.fixture
def writer_db(module_db):
    with get_engine().begin() as conn:
        conn.execute(sa.text("INSERT INTO users (user_id) VALUES ('writer') ON CONFLICT DO NOTHING"))
        conn.execute(sa.text("INSERT INTO items (item_id, title, valid_from) VALUES ('writer-item', 'pen', now()) ON CONFLICT DO NOTHING"))
    return module_db


def test_every_committed_row_is_cut_exactly_once(writer_db):
    engine = get_engine()
    stop, committed, aborted = threading.Event(), [], []
    threads = [threading.Thread(target=_writer, args=(writer_db, stop, committed, aborted, i)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    cuts, naive_seen, last_id, xid_from = [], set(), 0, ZERO_XID
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        cut = take_cut(engine, xid_from)
        cuts.append(cut)
        xid_from = cut.xid_to
        # The naive scheme, side by side: it can only be shown to lose rows, never asserted on.
        with engine.connect() as conn:
            ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM interactions WHERE id > :i"), {"i": last_id})]
        naive_seen.update(ids)
        last_id = max(ids, default=last_id)
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    cuts.append(take_cut(engine, xid_from))  # everyone has finished: the last cut takes the rest

    with engine.connect() as conn:
        key_of = dict(conn.execute(sa.text("SELECT id, event_key FROM interactions WHERE user_id = 'writer'")).all())
        still_in_range = [
            sorted(r[0] for r in conn.execute(sa.text(
                "SELECT id FROM interactions WHERE ingest_xid >= CAST(:a AS xid8) AND ingest_xid < CAST(:b AS xid8)"),
                {"a": c.xid_from, "b": c.xid_to}))
            for c in cuts
        ]
    read = [i for c in cuts for i in c.ids]
    assert len(committed) > 200 and aborted
    assert len(read) == len(set(read))  # nobody read twice
    assert {key_of[i] for i in read if i in key_of} == set(committed)  # every committed row read once
    assert not set(aborted) & set(key_of.values())  # aborted rows never became rows at all
    assert [sorted(c.ids) for c in cuts] == still_in_range  # no late row slipped into a consumed range
    print(f"\nxid8 cuts: {len(cuts)} cuts, {len(committed)} committed rows, 0 missed; "
          f"id > last_id: {len(set(key_of) - naive_seen)} missed")


def test_a_second_updater_exits_cleanly(module_db):
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as holder:
        holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": UPDATE_LOCK})
        try:
            outcome = run_update(TrainingArguments(), GateArguments())
        finally:
            holder.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": UPDATE_LOCK})
    assert outcome.status == "locked" and outcome.message == "another update is running"


def _insert(conn, key):
    return conn.execute(sa.text(
        "INSERT INTO interactions (event_key, user_id, item_id, event_type, event_time) "
        "VALUES (:k, 'writer', 'writer-item', 'click', now()) RETURNING id"), {"k": key}).scalar()


def test_an_id_cursor_loses_a_row_that_commits_late_and_the_xid_cut_does_not(writer_db):
    """The race exactly: a row takes its id, a later id commits first, a cursor reads, the first commits."""
    engine = get_engine()
    with engine.connect() as conn:
        last_id = conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM interactions")).scalar()
        xid_from = conn.execute(sa.text("SELECT coalesce(max(xid_to)::text, '0') FROM watermarks")).scalar()
    first = take_cut(engine, xid_from)  # everything before this test
    with engine.connect() as late:
        tx = late.begin()
        late_id = _insert(late, f"late-{uuid.uuid4().hex}")
        with engine.begin() as conn:
            early_id = _insert(conn, f"early-{uuid.uuid4().hex}")
        assert early_id > late_id
        with engine.connect() as conn:  # the naive cursor's read: it moves past early_id
            naive = [r[0] for r in conn.execute(sa.text("SELECT id FROM interactions WHERE id > :i"), {"i": last_id})]
        during = take_cut(engine, first.xid_to)  # the horizon stops at the open transaction: neither row yet
        tx.commit()
    after = take_cut(engine, during.xid_to)
    # The id cursor did not read it, and now stands past it (it reads id > max(naive) next): lost for good.
    assert early_id in naive and late_id not in naive and late_id < max(naive)
    assert late_id not in during.ids and early_id not in during.ids
    assert {late_id, early_id} <= set(after.ids)  # the xid8 cut read both, once
