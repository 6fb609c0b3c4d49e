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
    forgetful = SearchArguments(learning_rate=0.1, epochs=10, l2_to_parent=0.0, patience=10)
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


def test_the_known_item_set_is_fixed_as_the_catalog_grows(make_database):
    """Members are chosen by a hash of the item id and their queries written once: a bigger catalog adds
    members and keeps every earlier query word for word; the updater's exclusions hold all of them."""
    import pandas as pd

    from freshrec.search.knownitem import known_items, training_exclusions

    make_database("known")
    engine = get_engine()
    titles = [f"{colour} {thing} {kind} holder" for colour in ("red", "blue", "green", "pink", "white")
              for thing in ("heart", "star", "owl", "cake") for kind in ("glass", "tin", "paper")]
    catalog = pd.DataFrame({"item_id": [f"I{n:03d}" for n in range(len(titles))], "title": titles})
    first = known_items(engine, catalog.head(30)).queries
    grown = known_items(engine, catalog).queries
    assert 0 < first["item_id"].nunique() < 30 and grown["item_id"].nunique() > first["item_id"].nunique()
    kept = grown.merge(first, on=["item_id", "variant"], suffixes=("", "_before"))
    assert len(kept) == len(first) and (kept["query"] == kept["query_before"]).all()
    # Later members never change an earlier item's membership, and every query of the set is excluded.
    assert set(first["item_id"]) == set(grown["item_id"]) & set(catalog.head(30)["item_id"])
    excluded = training_exclusions(known_items(engine, catalog))
    assert all((" ".join(q.lower().split()), i) in excluded for q, i in zip(grown["query"], grown["item_id"]))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM known_item_queries")).scalar() == len(grown)
    # A head noun's relevant items are every title holding its words in a row, as a scan of all
    # titles finds them (the set reads them through a word index), plus the member itself.
    # Titles that hold a head noun's words apart ("holder tin ...") are not relevant to it.
    apart = pd.DataFrame({"item_id": [f"J{n}" for n in range(3)],
                          "title": [f"holder {kind} star white" for kind in ("glass", "tin", "paper")]})
    catalog = pd.concat([catalog, apart], ignore_index=True)
    heads = known_items(engine, catalog).queries
    heads = heads[heads["variant"] == "head"]
    assert len(heads)
    words_apart = 0
    for query, item, relevant in zip(heads["query"], heads["item_id"], heads["relevant"]):
        titles = dict(zip(catalog["item_id"], catalog["title"]))
        scanned = {i for i, t in titles.items() if f" {query} " in f" {t} "}
        assert relevant == frozenset(scanned | {item}) and len(scanned) > 1
        words_apart += sum(set(query.split()) <= set(t.split()) and i not in scanned for i, t in titles.items())
    assert words_apart > 0  # the word index alone would have counted them
