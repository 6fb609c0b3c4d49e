"""Co-purchase counts as SQL state (``ranking.pair_counts``): after several incremental updates, after
an upgrade from versions published before the state existed, and after an erasure, every version's
lineage sum equals a rebuild from the raw rows; after the updates and the upgrade, its neighbours
equal the in-process computation. The same round trip through the migrations checks that dropping
the item vectors' HNSW index (``e2b4d6f8a0c3``) drops every version's and keeps every vector.
"""
from datetime import date

import numpy as np
import pandas as pd
import sqlalchemy as sa

from freshrec.config import get_settings
from freshrec.db import get_engine
from freshrec.erasure import forget
from freshrec.features import apply, online_neighbours, open_store
from freshrec.ingest import online_retail_batch, write_batch
from freshrec.ranking.copurchase import from_log
from freshrec.ranking.inputs import consumed_log
from freshrec.ranking.pair_counts import changed_items, lineage_counts, neighbour_owners, read_neighbours
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.updater import run_update


def _load(path, **kw):
    with get_engine().begin() as conn:
        return write_batch(conn, online_retail_batch(path, **kw), str(path))


def _update(tiny_model) -> int:
    return run_update(TrainingArguments(epochs=1, device="cpu"), GateArguments(enabled=False),
                      base_model=tiny_model).version


def _catalog() -> np.ndarray:
    with get_engine().connect() as conn:
        return np.array([r[0] for r in conn.execute(sa.text("SELECT item_id FROM items ORDER BY item_id"))], dtype=object)


def _horizon(version: int) -> str:
    with get_engine().connect() as conn:
        return conn.execute(sa.text("SELECT xid_to::text FROM watermarks WHERE version = :v"), {"v": version}).scalar()


def _rebuilt(version: int):
    """The co-purchase of every purchase row below the version's horizon, computed in process from the raw rows."""
    return from_log(consumed_log(get_engine(), _horizon(version), _catalog()))


def _as_frame(cp, item_ids) -> pd.DataFrame:
    counts = cp.counts.tocoo()
    frame = pd.DataFrame({"item_a": item_ids[counts.row], "item_b": item_ids[counts.col],
                          "baskets": counts.data.astype(np.int64)})
    return frame[frame["baskets"] > 0].sort_values(["item_a", "item_b"]).reset_index(drop=True)


def _assert_counts_rebuild(version: int) -> int:
    """The lineage's counts equal the rebuild; returns their total."""
    with get_engine().connect() as conn:
        stored = lineage_counts(conn, version)
    rebuilt = _as_frame(_rebuilt(version), _catalog())
    # Sorted alike in Python (the database's collation may order ids differently).
    stored = stored.sort_values(["item_a", "item_b"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(stored.astype({"item_a": object, "item_b": object}), rebuilt, check_dtype=False)
    return int(stored["baskets"].sum())


def _assert_ranked_only_what_changed(version: int) -> None:
    """A child ranked the items of its cut's baskets and carried its parent's other lists over; online,
    each list is read under the version that ranked it, and equals the version's row."""
    with get_engine().connect() as conn:
        owners = neighbour_owners(conn, version)
        parent = conn.execute(sa.text("SELECT parent_version FROM model_versions WHERE version = :v"), {"v": version}).scalar()
        cut = conn.execute(sa.text("SELECT xid_from::text, xid_to::text FROM watermarks WHERE version = :v"), {"v": version}).one()
        changed = set(changed_items(conn, *cut))
        ranked = {i for i, v in owners.items() if v == version}
        carried = sorted(i for i, v in owners.items() if v != version)
        assert ranked and carried and ranked <= changed and not changed & set(carried)
        parents = neighbour_owners(conn, parent)
        assert all(parents[i] == owners[i] for i in carried)  # the parent's lists, under its keys
        sample = carried[:5] + sorted(ranked)[:5]
        rows = read_neighbours(conn, version, sample)
    online = online_neighbours(open_store(), version, sample, {i: owners[i] for i in carried})
    assert set(online) == set(sample)
    for item in sample:
        assert online[item][0] == rows[item][0]
        np.testing.assert_array_equal(np.float32(online[item][1]), np.float32(rows[item][1]))


def _assert_neighbours_rebuild(version: int) -> None:
    item_ids = _catalog()
    expected = _rebuilt(version).neighbours().frame(item_ids).set_index("item_id")
    with get_engine().connect() as conn:
        stored = pd.DataFrame(conn.execute(sa.text(
            "SELECT item_id, partners, strengths FROM item_neighbours WHERE version = :v"), {"v": version}).all(),
            columns=["item_id", "partners", "strengths"]).set_index("item_id")
    assert sorted(stored.index) == sorted(expected.index), version
    for item, row in expected.iterrows():
        got = stored.loc[item]
        assert list(got["partners"]) == list(row["partners"]), (version, item)
        np.testing.assert_array_equal(np.float32(got["strengths"]), np.float32(row["strengths"]))


def test_counts_follow_the_cuts_and_equal_a_rebuild_through_updates_an_upgrade_and_an_erasure(
        module_db, retail_sample, tiny_model):
    engine = get_engine()
    _load(retail_sample, until=date(2010, 12, 1))
    apply(open_store(), get_settings().feast.repo_path)
    assert _update(tiny_model) == 1
    _load(retail_sample, since=date(2010, 12, 2), until=date(2010, 12, 31))
    # A basket of version 1's grows in version 2's cut: one more item at the same moment. Version 2
    # adds exactly the pairs with the new item.
    with engine.begin() as conn:
        grown = conn.execute(sa.text(
            "INSERT INTO interactions (event_key, user_id, item_id, event_type, quantity, event_time) "
            "SELECT 'late-' || b.event_key, b.user_id, "
            "       (SELECT item_id FROM items WHERE item_id NOT IN (SELECT item_id FROM interactions x "
            "        WHERE x.user_id = b.user_id AND x.event_time = b.event_time) ORDER BY item_id LIMIT 1), "
            "       'purchase', 1, b.event_time "
            "FROM (SELECT * FROM interactions WHERE event_time < '2010-12-02' AND event_type = 'purchase' "
            "      ORDER BY id LIMIT 1) b RETURNING user_id")).scalar()
    assert _update(tiny_model) == 2
    with engine.connect() as conn:
        per_version = dict(conn.execute(sa.text("SELECT version, pair_rows FROM copurchase_cuts")).all())
        version_two = conn.execute(sa.text("SELECT count(*) FROM copurchase_counts WHERE version = 2")).scalar()
    assert set(per_version) == {1, 2} and per_version[2] == version_two > 0
    with engine.connect() as conn:  # each version's counts in a partition of its own
        assert conn.execute(sa.text("SELECT count(*) FROM copurchase_counts_v2")).scalar() == version_two
    _assert_ranked_only_what_changed(2)
    for version in (1, 2):
        _assert_counts_rebuild(version)
        _assert_neighbours_rebuild(version)

    # An upgrade: versions published before the counts existed (no partition, no cut row) are counted
    # when a child needs them.
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE copurchase_counts_v1, copurchase_counts_v2"))
        conn.execute(sa.text("DELETE FROM copurchase_cuts"))
    _load(retail_sample, since=date(2011, 1, 1), until=date(2011, 1, 4))
    assert _update(tiny_model) == 3
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(sa.text("SELECT version FROM copurchase_cuts ORDER BY version"))] == [1, 2, 3]
    for version in (1, 2, 3):
        _assert_counts_rebuild(version)
    _assert_neighbours_rebuild(3)

    # An erasure subtracts the customer's baskets from every version's counts in its own transaction.
    with engine.connect() as conn:
        buyer = conn.execute(sa.text(
            "SELECT user_id FROM interactions WHERE event_type = 'purchase' AND user_id <> :g GROUP BY user_id "
            "HAVING min(event_time) < '2010-12-02' AND max(event_time) >= '2011-01-01' "
            "ORDER BY count(*) DESC LIMIT 1"), {"g": grown}).scalar()
    assert buyer is not None
    for user in (buyer, grown):  # the second: the basket that spans two cuts
        before = _assert_counts_rebuild(3)
        forget(engine, get_settings(), [user])
        assert _assert_counts_rebuild(3) < before, user
        for version in (1, 2):
            _assert_counts_rebuild(version)
    # An update before the replay: its parent's lists still count the erased baskets, which its cut
    # cannot name, so it ranks every item (none carried over) and equals a rebuild without them.
    _load(retail_sample, since=date(2011, 1, 5))
    assert _update(tiny_model) == 4
    with get_engine().connect() as conn:
        assert set(neighbour_owners(conn, 4).values()) == {4}
    _assert_neighbours_rebuild(4)

    # Counts written both ways by the schema before ``b8d0f2a4c6e9`` keep one row per unordered pair
    # through the upgrade, and the same sums.
    from freshrec.db import downgrade, upgrade

    # On the way, ``e2b4d6f8a0c3``: the downgrade gives every version's partition of item_embeddings an
    # HNSW index again, and the upgrade drops them all, leaving every vector.
    hnsw = ("SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'item_embeddings_v%' "
            "AND indexdef LIKE '%USING hnsw%'")
    partitions = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'item_embeddings'::regclass"
    with engine.connect() as conn:
        unordered = conn.execute(sa.text("SELECT count(*) FROM copurchase_counts")).scalar()
        vectors = conn.execute(sa.text("SELECT count(*) FROM item_embeddings")).scalar()
        assert conn.execute(sa.text(hnsw)).scalar() == 0
    engine.dispose()
    downgrade(module_db, "a7c9e1f3b5d7")
    with engine.connect() as conn:
        both_ways = conn.execute(sa.text("SELECT count(*) FROM copurchase_counts")).scalar()
        mirrored = conn.execute(sa.text("SELECT count(*) FROM copurchase_counts WHERE item_a > item_b")).scalar()
        assert conn.execute(sa.text(hnsw)).scalar() == conn.execute(sa.text(partitions)).scalar() > 0
    assert both_ways > unordered and mirrored == both_ways - unordered
    upgrade(module_db)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM copurchase_counts")).scalar() == unordered
        assert conn.execute(sa.text("SELECT sum(pair_rows) FROM copurchase_cuts")).scalar() == unordered
        assert conn.execute(sa.text(hnsw)).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM item_embeddings")).scalar() == vectors
    for version in (1, 2, 3):
        _assert_counts_rebuild(version)


def test_published_neighbour_arrays_keep_any_item_id_and_strength_exactly(module_db):
    """A publish writes neighbours as array literals it builds itself (``registry.versions``): ids with
    the characters an array literal or COPY treat specially, and float32 strengths, come back as given."""
    from freshrec.db.frames import copy_rows
    from freshrec.registry.versions import _float_array, _text_array

    ids = ["a,b", 'c"d', "e\\f", "{g}", " h ", "NULL", "x\ty", "z\nw", "ü-1", ""]
    strengths = np.float32([0.1, 1 / 3, 1e-8, 0.99999994, 1.0, 0.0, 2.5e-5, 0.5, 0.25, 0.75])
    with get_engine().begin() as conn:
        conn.execute(sa.text("CREATE TEMP TABLE arrays (partners text[], strengths float4[])"))
        copy_rows(conn.connection.driver_connection, "COPY arrays (partners, strengths) FROM STDIN",
                 [(_text_array(ids), _float_array(strengths.tolist()))])
        partners, stored = conn.execute(sa.text("SELECT partners, strengths FROM arrays")).one()
    assert partners == ids
    np.testing.assert_array_equal(np.float32(stored), strengths)
