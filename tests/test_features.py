"""Feast on the real database: point-in-time user texts, the online store, and backfills."""
from datetime import date

import pytest
import sqlalchemy as sa

from freshrec.config import get_settings
from freshrec.db import get_engine
from freshrec.features import apply, historical_features, materialize, online_user_texts, open_store
from freshrec.ingest import online_retail_batch, write_batch

LENGTH = 20


def _load(path, **kw):
    with get_engine().begin() as conn:
        return write_batch(conn, online_retail_batch(path, **kw), str(path), LENGTH)


@pytest.fixture(scope="module")
def store(module_db, retail_sample):
    # January first, then December: a backfill of *older* event times after a materialization.
    _load(retail_sample, since=date(2011, 1, 1))
    store = open_store()
    apply(store, get_settings().feast.repo_path)
    materialize(store)
    _load(retail_sample, until=date(2010, 12, 31))
    materialize(store)
    return store


def _expected_profile(history, user_id, before):
    """The last LENGTH titles the user interacted with strictly before ``before``, newest first."""
    rows = history[(history.user_id == user_id) & (history.event_time < before)]
    rows = rows.sort_values(["event_time", "id"], ascending=False).head(LENGTH)
    return "; ".join(rows.title) if len(rows) else None


def _history():
    import pandas as pd

    sql = "SELECT i.id, i.user_id, i.event_time, it.title FROM interactions i JOIN items it USING (item_id)"
    with get_engine().connect() as conn:
        return pd.read_sql(sa.text(sql), conn)


def test_user_text_is_point_in_time(store):
    entity_sql = "SELECT user_id, item_id, event_time AS event_timestamp FROM interactions"
    frame = historical_features(store, entity_sql)
    history = _history()
    assert len(frame) == len(history)
    mismatches = [
        (row.user_id, row.event_timestamp)
        for row in frame.itertuples()
        if row.user_text != _expected_profile(history, row.user_id, row.event_timestamp)
    ]
    assert mismatches == []
    # Every row has its item text, and some rows do have history (the check above is not vacuous).
    assert frame.item_text.notna().all()
    assert frame.user_text.notna().mean() > 0.1


def test_user_text_never_contains_its_own_basket(store):
    entity_sql = """SELECT i.user_id, i.item_id, i.event_time AS event_timestamp FROM interactions i
                    WHERE NOT EXISTS (SELECT 1 FROM interactions p WHERE p.user_id = i.user_id
                                      AND p.item_id = i.item_id AND p.event_time < i.event_time)"""
    frame = historical_features(store, entity_sql)
    titles = dict(get_engine().connect().execute(sa.text("SELECT item_id, title FROM items")).all())
    # Title never bought before this moment: it must not appear in the profile of this moment.
    leaked = [r for r in frame.itertuples() if r.user_text and titles[r.item_id] in r.user_text.split("; ")]
    assert leaked == []


def test_online_store_holds_the_newest_profile_including_backfilled_users(store):
    history = _history()
    december_only = set(history.user_id) - set(history[history.event_time.dt.year == 2011].user_id)
    users = sorted(set(history.user_id))
    online = {u: text for u, (text, _) in online_user_texts(store, users + ["no-such-user"]).items()}
    assert online["no-such-user"] is None
    far_future = history.event_time.max() + (history.event_time.max() - history.event_time.min())
    assert {u: online[u] for u in users} == {u: _expected_profile(history, u, far_future) for u in users}
    assert december_only and all(online[u] for u in december_only)


def test_a_renamed_item_keeps_its_old_text_for_older_events(store, tmp_path):
    """Item text has a history: a title changed today does not rewrite last month's training rows."""
    import pandas as pd

    from freshrec.ingest import items_batch

    with get_engine().connect() as conn:
        item, first_sale, old_title = conn.execute(sa.text(
            "SELECT i.item_id, min(x.event_time), i.title FROM items i JOIN interactions x USING (item_id) "
            "GROUP BY i.item_id, i.title ORDER BY count(*) DESC LIMIT 1")).one()
    renamed_at = pd.Timestamp("2011-01-05 00:00", tz="UTC")
    catalog = tmp_path / "catalog.csv"
    pd.DataFrame([{"item_id": item, "title": "A NEW NAME", "valid_from": renamed_at.isoformat()}]).to_csv(catalog, index=False)
    with get_engine().begin() as conn:
        summary = write_batch(conn, items_batch(catalog), str(catalog), LENGTH)
        again = write_batch(conn, items_batch(catalog), str(catalog), LENGTH)  # the same file: nothing new
    assert summary.item_texts_new == 1 and again.item_texts_new == 0
    entity_sql = (f"SELECT '{item}' AS item_id, min(user_id) AS user_id, t AS event_timestamp FROM interactions, "
                  f"(VALUES (TIMESTAMPTZ '{first_sale.isoformat()}'), (TIMESTAMPTZ '{renamed_at.isoformat()}')) v(t) GROUP BY t")
    texts = historical_features(store, entity_sql).sort_values("event_timestamp")["item_text"].tolist()
    assert texts == [old_title, "A NEW NAME"]
    # A December buyer of the item buys it again after the change: their profile history is rebuilt, and
    # names each purchase by the title it had then.
    from freshrec.ingest import interactions_frame_batch

    with get_engine().connect() as conn:
        buyer = conn.execute(sa.text("SELECT min(user_id) FROM interactions WHERE item_id = :i AND event_time < :t"),
                             {"i": item, "t": renamed_at}).scalar()
    event = pd.DataFrame([{"event_key": "renamed-again", "user_id": buyer, "item_id": item, "event_type": "purchase",
                           "event_time": pd.Timestamp("2011-01-06 12:00", tz="UTC"), "quantity": 1, "query": None}])
    with get_engine().begin() as conn:
        write_batch(conn, interactions_frame_batch(event, "test"), "test", LENGTH)
        newest = conn.execute(sa.text("SELECT profile_text FROM user_profiles WHERE user_id = :u ORDER BY valid_from DESC "
                                      "LIMIT 1"), {"u": buyer}).scalar()
        assert conn.execute(sa.text("SELECT title FROM items WHERE item_id = :i"), {"i": item}).scalar() == "A NEW NAME"
        assert conn.execute(sa.text("SELECT count(*) FROM item_texts WHERE item_id = :i"), {"i": item}).scalar() == 2
    titles = newest.split("; ")
    assert titles[0] == "A NEW NAME" and old_title in titles[1:]
