"""The gate covers search: a version whose query tower learned shuffled (query, item) pairs forgets how to
find known items (queries that never train), and its search verdict rejects it. The pre-trained MiniLM
is the base (the tiny random encoder has no language to forget)."""
from datetime import date

import sqlalchemy as sa

from freshrec.config import get_settings
from freshrec.db import get_engine
from freshrec.features import apply, open_store
from freshrec.ingest import online_retail_batch, write_batch
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.training.search import SearchArguments
from freshrec.updater import run_update


def test_a_version_fine_tuned_on_shuffled_query_pairs_is_rejected(module_db, retail_sample):
    with get_engine().begin() as conn:  # two days, a synthetic search on every purchase
        write_batch(conn, online_retail_batch(retail_sample, until=date(2010, 12, 2), queries=1.0), "sample")
    apply(open_store(), get_settings().feast.repo_path)
    first = run_update(TrainingArguments(epochs=1), GateArguments(enabled=False))
    assert first.status == "created" and first.metrics["search"]["train"]["train_pairs"] > 100
    # The same purchases again, each carrying another item's query: nonsense to learn from.
    with get_engine().begin() as conn:
        conn.execute(sa.text("""
            INSERT INTO interactions (event_key, user_id, item_id, event_type, quantity, event_time, query)
            SELECT x.event_key || '-shuffled', x.user_id, x.item_id, x.event_type, x.quantity,
                   x.event_time + interval '20 days', other.query
            FROM (SELECT *, row_number() OVER (ORDER BY md5(event_key)) AS n FROM interactions) x
            JOIN (SELECT query, row_number() OVER (ORDER BY md5(event_key || 'x')) AS n FROM interactions) other USING (n)"""))
    forgetful = SearchArguments(learning_rate=0.05, epochs=10, l2_to_parent=0.0, patience=10)
    # Half the older rows replay, the other half are the guard slice (two days of history hold few).
    outcome = run_update(TrainingArguments(epochs=1, replay_fraction=0.5), GateArguments(min_baskets=5),
                         search_args=forgetful)
    assert "search" in outcome.metrics, outcome.message
    search = outcome.metrics["search"]
    assert outcome.status == "created" and not outcome.promoted
    assert search["gate"] == "failed" and search["gate_reason"].startswith("failed: search known_items rr")
    assert search["candidate"]["known_items"]["rr"] < 0.9 * search["day_one"]["known_items"]["rr"]
    # The first version learned real searches: it found the known items at least as well as day one.
    learned = first.metrics["search"]
    assert learned["candidate"]["known_items"]["rr"] >= learned["day_one"]["known_items"]["rr"]
    with get_engine().connect() as conn:
        assert conn.execute(sa.text("SELECT version FROM current_version")).scalar() == first.version
