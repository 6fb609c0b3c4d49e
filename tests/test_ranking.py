"""The ranking pipeline on real rows: point-in-time features recomputed from raw rows, Feast's point-in-time
join against the offline read, the daily aggregate's refresh, the ranker in the lineage, and the API
ranking exactly what the benchmark scores."""
from datetime import date

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from freshrec.config import get_settings
from freshrec.db import get_engine
from freshrec.features import ITEM_STATS, apply, historical_features, materialize, open_store
from freshrec.ingest import online_retail_batch, write_batch
from freshrec.ingest.aggregates import catch_up, full_rebuild_since, refresh_item_stats
from freshrec.ranking.candidates import FEATURES, CandidateConfig
from freshrec.ranking.events import DAY, EventLog, epoch_seconds
from freshrec.ranking.inputs import STAT_COLUMNS, OfflineDays, daily_item_stats
from freshrec.ranking.pipeline import Queries, TowerIndex, candidates_by_day, day_of, labels


@pytest.fixture(scope="module")
def loaded(module_db, retail_sample):
    with get_engine().begin() as conn:
        write_batch(conn, online_retail_batch(retail_sample), "sample")
    catch_up(get_engine())
    store = open_store()
    apply(store, get_settings().feast.repo_path)
    materialize(store)
    return store


def _raw():
    with get_engine().connect() as conn:
        rows = pd.read_sql(sa.text("SELECT user_id, item_id, event_type, event_time FROM interactions"), conn)
        items = pd.read_sql(sa.text("SELECT item_id FROM items ORDER BY item_id"), conn)["item_id"].to_numpy(dtype=object)
    rows["t"] = epoch_seconds(rows["event_time"])
    return rows, items


def _recomputed_item_stats(rows: pd.DataFrame, item: str, day_start: float) -> list[float]:
    """events_7d, events_28d, buyers, repeat_buyers through the day before ``day_start``, from raw rows."""
    mine = rows[(rows.item_id == item) & (rows.t < day_start)]
    buys = mine[mine.event_type == "purchase"].groupby("user_id")["t"].nunique()
    return [float((mine.t >= day_start - 7 * DAY).sum()), float((mine.t >= day_start - 28 * DAY).sum()),
            float(len(buys)), float((buys >= 2).sum())]


def _recomputed_copurchase(rows: pd.DataFrame, user: str, t: float, item: str) -> float:
    """Sum over the items i of the user's last 3 baskets before t of P(item | i), from the baskets
    of the days before t's day."""
    day = float(day_of(np.array([t]))[0])
    baskets = rows[rows.t < day].groupby(["user_id", "t"])["item_id"].agg(set)
    mine = rows[(rows.user_id == user) & (rows.t < t)].groupby("t")["item_id"].agg(set).sort_index()
    recent = set().union(*mine.iloc[-3:]) if len(mine) else set()
    total = 0.0
    for i in recent - {item}:
        with_i = [b for b in baskets if i in b]
        total += sum(item in b for b in with_i) / max(len(with_i), 1)
    return total


def test_bulk_reads_through_copy_equal_pandas_read_sql(loaded):
    """``db.frames.read_frame`` renders the parameters client-side (COPY takes none): a list holding a
    quote, a timestamp and an ``xid8`` cast read the same rows as bound parameters do."""
    from datetime import datetime, timezone

    from freshrec.db.frames import read_frame

    sql = ("SELECT user_id, item_id, extract(epoch FROM event_time)::float8 AS event_time, quantity FROM interactions "
           "WHERE user_id = ANY(:users) AND event_time < :clock AND ingest_xid < CAST(:xid AS xid8) "
           "ORDER BY id")
    with get_engine().connect() as conn:
        users = [r[0] for r in conn.execute(sa.text("SELECT user_id FROM users ORDER BY user_id LIMIT 5"))]
        params = {"users": [*users, "o'brien; drop table items"], "clock": datetime(2011, 1, 1, tzinfo=timezone.utc),
                  "xid": conn.execute(sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")).scalar()}
        bound = pd.read_sql(sa.text(sql), conn, params=params)
        copied = read_frame(conn, sql, params, {"user_id": object, "item_id": object, "event_time": "float64",
                                                "quantity": "int64"})
        empty = read_frame(conn, sql, {**params, "users": []}, {"user_id": object, "item_id": object,
                                                                 "event_time": "float64", "quantity": "int64"})
    assert len(bound) > 0 and len(empty) == 0 and list(empty.columns) == list(copied.columns)
    pd.testing.assert_frame_equal(copied, bound, check_dtype=False)


def test_sub_second_times_are_the_same_seconds_from_every_path(loaded):
    """A basket's items are found by equality of times: its moment (``epoch_seconds``, from Feast's rows),
    the updater's bulk reads (``read_timed``) and the API's rows (``extract(epoch)::float8``) must agree
    to the bit on millisecond and microsecond times too, as the API's events may carry."""
    from freshrec.ranking.inputs import _EPOCH, read_timed

    times = ("SELECT to_timestamp(1291734000) + n * interval '1 microsecond' * 7919 + n * interval '1 millisecond' * 613 "
             "AS event_time FROM generate_series(0, 4999) n")
    with get_engine().connect() as conn:
        stamps = pd.read_sql(sa.text(times), conn)["event_time"]
        sql_float = np.array([r[0] for r in conn.execute(sa.text(
            f"SELECT extract(epoch FROM event_time)::float8 FROM ({times}) t"))])
        bulk = read_timed(conn, f"SELECT {_EPOCH} FROM ({times}) t", {}, {"event_time": "int64"})["event_time"]
    assert (stamps.dt.microsecond % 1000 != 0).sum() > 4000  # sub-millisecond parts, mostly
    np.testing.assert_array_equal(epoch_seconds(stamps), sql_float)
    np.testing.assert_array_equal(bulk.to_numpy(), sql_float)


def test_item_aggregates_refresh_incrementally_to_the_full_rebuild(loaded):
    engine = get_engine()
    read = "SELECT item_id, valid_from, events_7d, events_28d, buyers, repeat_buyers FROM item_daily_stats ORDER BY 1, 2"
    with engine.connect() as conn:
        caught_up = pd.read_sql(sa.text(read), conn)
    assert len(caught_up) > 1000 and catch_up(engine) == 0  # nothing new: nothing rebuilt
    for since in (date(2011, 1, 5), date(2010, 12, 3), full_rebuild_since()):
        with engine.begin() as conn:
            refresh_item_stats(conn, since)
        with engine.connect() as conn:
            pd.testing.assert_frame_equal(pd.read_sql(sa.text(read), conn), caught_up)


def test_offline_item_stats_equal_feasts_point_in_time_join_and_the_raw_rows(loaded):
    rows, items = _raw()
    rng = np.random.default_rng(0)
    sample = rows.sample(60, random_state=0)
    # entity times inside a day and at its very start: a row stamped at midnight counts then
    times = sample["event_time"] + pd.to_timedelta(rng.integers(0, 2, len(sample)) * 3600, unit="s")
    # The entity rows as SQL (embed_query): Feast's offline role may read, not create tables.
    values = ", ".join(f"('{item}', TIMESTAMPTZ '{t.isoformat()}')" for item, t in zip(sample["item_id"], times))
    entity_sql = f"SELECT * FROM (VALUES {values}) AS e(item_id, event_timestamp)"
    feast = loaded.get_historical_features(entity_df=entity_sql, features=ITEM_STATS).to_df()
    feast["t"] = epoch_seconds(feast["event_timestamp"])
    offline = daily_item_stats(get_engine(), items, sorted(set(day_of(feast["t"].to_numpy()).tolist())))
    row_of = {item: n for n, item in enumerate(items)}
    for r in feast.itertuples():
        day = float(day_of(np.array([r.t]))[0])
        # No row yet (an item first seen that day) is a null from Feast, and zeros offline.
        from_feast = [0.0 if pd.isna(getattr(r, c)) else float(getattr(r, c)) for c in STAT_COLUMNS]
        assert from_feast == offline[day][row_of[r.item_id]].tolist() == _recomputed_item_stats(rows, r.item_id, day)


def test_day_states_resumed_from_a_kept_pass_equal_counting_from_nothing(loaded):
    """Passes over the days in any order (training, validation, gate slices) see the counts of every
    basket strictly before the day, exactly as one fresh count up to that day."""
    from freshrec.ranking.copurchase import CoPurchase

    rows, items = _raw()
    log = EventLog.build(rows[rows.event_type == "purchase"], items)
    days = sorted(np.unique(day_of(log.time)).tolist())[1:] + [float(day_of(np.array([log.time.max()]))[0] + DAY)]
    states = OfflineDays(get_engine(), log, days)
    walk = [days[2], days[-1], days[0], days[3], days[1], days[2], days[-1], days[0], days[-1]]
    for day in walk:
        fresh = CoPurchase(log.n_items)
        fresh.advance(log, day)
        got = states(day).copurchase
        assert got.added_until == day and (got.counts != fresh.counts).nnz == 0, day
        assert got.counts.sum() == fresh.counts.sum() > 0
    assert 0 < len(states.kept) <= OfflineDays.KEEP


def test_ranker_features_see_only_events_strictly_before_each_basket(loaded):
    rows, items = _raw()
    engine = get_engine()
    log = EventLog.build(rows, items)
    entity_sql = ("SELECT DISTINCT user_id, min(item_id) AS item_id, event_time AS event_timestamp FROM interactions "
                  "WHERE event_time >= '2011-01-04' GROUP BY user_id, event_time")
    baskets = historical_features(loaded, entity_sql).sort_values(["event_timestamp", "user_id"]).reset_index(drop=True)
    baskets = baskets[baskets["user_text"].notna()].head(40)  # users with a history: what the ranker sees
    times = epoch_seconds(baskets["event_timestamp"])
    queries = Queries(log.user_rows(baskets["user_id"]), times,
                      baskets[["n_events", "n_baskets"]].to_numpy(np.float32), np.zeros((len(times), 4), np.float32))
    index = TowerIndex(np.zeros((len(items), 4), np.float32), 1.0, 0.0)
    cands = candidates_by_day(log, queries, index, CandidateConfig(tower=0), OfflineDays(engine, log, day_of(times)))
    y = labels(log, queries, cands)
    assert len(cands) > 500 and 0 < y.mean() < 0.5
    col = {name: n for n, name in enumerate(FEATURES)}
    checked = {"bought-at-t": 0, "repeat": 0, "copurchase": 0}
    for n, k in enumerate(np.random.default_rng(1).choice(len(cands), 400, replace=False)):
        user, t = baskets["user_id"].iloc[cands.query[k]], times[cands.query[k]]
        item, x = items[cands.item[k]], cands.features[k]
        before = rows[(rows.user_id == user) & (rows.t < t)]
        moments = before[before.item_id == item]["t"].unique()
        assert x[col["log_count"]] == pytest.approx(np.log1p(len(moments)), abs=1e-5)
        assert x[col["decay_7d"]] == pytest.approx(np.exp(-(t - moments) / (7 * DAY)).sum(), abs=1e-4)
        assert x[col["log_user_baskets"]] == pytest.approx(np.log1p(before["t"].nunique()), abs=1e-5)  # Feast's n_baskets
        stats = _recomputed_item_stats(rows, item, float(day_of(np.array([t]))[0]))
        assert x[col["log_events_28d"]] == pytest.approx(np.log1p(stats[1]), abs=1e-5)
        assert x[col["repurchase_rate"]] == pytest.approx((stats[3] + 0.1) / (stats[2] + 1), abs=1e-5)
        if n < 60:
            cp = _recomputed_copurchase(rows, user, t, item)
            assert x[col["copurchase_sum"]] == pytest.approx(cp, abs=1e-4)
            checked["copurchase"] += int(cp > 0)
        checked["bought-at-t"] += int(y[k] == 1 and len(moments) == 0)
        checked["repeat"] += int(len(moments) > 0)
    # The sample holds items bought for the first time at t (whose features must not show it) and repeats.
    assert checked["bought-at-t"] > 0 and checked["repeat"] > 0 and checked["copurchase"] > 0


def test_item_aggregates_grow_with_events_and_quiet_items_fall_back_to_zero(loaded):
    """Rows only on the days an item's counts change (its event days, and 7 and 28 days after): the
    table grows with events, not items x days, and an item quiet for 28 days ends on a zero row."""
    with get_engine().connect() as conn:
        rows, event_days = conn.execute(sa.text(
            "SELECT (SELECT count(*) FROM item_daily_stats), "
            "(SELECT count(DISTINCT (item_id, (event_time AT TIME ZONE 'UTC')::date)) FROM interactions)")).one()
        dense = conn.execute(sa.text(
            "SELECT sum((SELECT max(event_time)::date FROM interactions) - first + 1) FROM "
            "(SELECT min(event_time)::date AS first FROM interactions GROUP BY item_id) f")).scalar()
        quiet = conn.execute(sa.text("""
            SELECT DISTINCT ON (s.item_id) s.item_id, s.events_28d, s.buyers FROM item_daily_stats s
            WHERE s.item_id IN (SELECT item_id FROM interactions GROUP BY item_id
                                HAVING max(event_time) < (SELECT max(event_time) FROM interactions) - interval '29 days')
            ORDER BY s.item_id, s.valid_from DESC""")).all()
    assert rows <= 3 * event_days and rows < dense / 3
    assert quiet and all(q.events_28d == 0 and q.buyers >= 0 for q in quiet)


def test_co_purchase_counted_and_ranked_in_batches_equals_all_at_once(monkeypatch):
    """Pairs are counted, and partners ranked, a bounded batch at a time (an update's peak memory):
    the counts and every item's partners and strengths are those of one batch over everything."""
    from freshrec.ranking import copurchase

    rng = np.random.default_rng(3)
    baskets = [rng.choice(60, size=rng.integers(1, 9), replace=False) for _ in range(400)]
    whole = copurchase.CoPurchase(60)
    whole.add(baskets)
    expected = whole.neighbours(k=5)
    monkeypatch.setattr(copurchase, "PAIRS_PER_BATCH", 50)  # dozens of batches and blocks
    batched = copurchase.CoPurchase(60)
    batched.add(baskets)
    got = batched.neighbours(k=5)
    assert (batched.counts != whole.counts).nnz == 0 and whole.counts.nnz > 1000
    for name in ("indptr", "partners", "strengths"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))


def test_each_items_neighbours_are_its_k_strongest_partners_ties_by_partner():
    """``CoPurchase.neighbours`` against its definition, item by item from the dense counts: P(j | i)
    descending, ties by partner row ascending, the item itself never."""
    from freshrec.ranking import copurchase

    rng = np.random.default_rng(5)
    baskets = [rng.choice(40, size=rng.integers(1, 7), replace=False) for _ in range(300)]
    counts = copurchase.CoPurchase(40)
    counts.add(baskets)
    got, dense = counts.neighbours(k=6), counts.counts.toarray()
    ties = 0
    for i in range(40):
        strengths = dense[i] / max(dense[i, i], 1.0)
        ranked = sorted((j for j in range(40) if j != i and dense[i, j] > 0), key=lambda j: (-strengths[j], j))[:6]
        span = slice(got.indptr[i], got.indptr[i + 1])
        assert got.partners[span].tolist() == ranked, i
        np.testing.assert_array_equal(got.strengths[span], strengths[ranked].astype(np.float32))
        ties += len(ranked) - len(set(strengths[ranked]))
    assert ties > 10  # the tie-break was exercised
    # The same from counts whose partners are stored in reverse within each row (a CSR matrix need not
    # keep its indices sorted): the tie-break is by partner, not by storage order.
    reversed_rows = counts.counts.copy()
    for i in range(40):
        span = slice(reversed_rows.indptr[i], reversed_rows.indptr[i + 1])
        reversed_rows.indices[span], reversed_rows.data[span] = reversed_rows.indices[span][::-1], reversed_rows.data[span][::-1]
    reversed_rows.has_sorted_indices = False
    counts.counts = reversed_rows
    again = counts.neighbours(k=6)
    for name in ("indptr", "partners", "strengths"):
        np.testing.assert_array_equal(getattr(again, name), getattr(got, name))


def test_the_rankers_scores_at_serving_are_its_trained_forward_pass():
    """``Ranker.score`` (NumPy, what requests and the gate use) equals the torch module that training
    fits, on a trained-looking ranker and on a feature matrix with its columns in another order."""
    import torch

    from freshrec.models.ranker import Ranker

    torch.manual_seed(0)
    ranker = Ranker(FEATURES)
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(257, len(FEATURES))).astype(np.float32)
    ranker.fit_scaling(x)
    with torch.no_grad():
        for p in ranker.parameters():
            p.add_(torch.randn_like(p))  # away from the initialisation, as training leaves it
        expected = torch.sigmoid(ranker(torch.from_numpy(x))).numpy()
    shuffled = tuple(reversed(FEATURES))
    got = ranker.score(x[:, ::-1], shuffled)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32 and expected.std() > 0.05


def test_an_erasures_refresh_stamps_the_items_it_left_without_a_new_row(loaded):
    """Readers follow ``written_xid`` (materialize, the API's refresh of its item aggregates): an item whose
    rows an erasure's refresh deleted, with nothing rebuilt, must still show as written by it. Its newest
    earlier row is stamped; an item with no row left gets a row of zeros."""
    engine = get_engine()
    with engine.connect() as conn, conn.begin() as tx:
        quiet, newest = conn.execute(sa.text(  # an item whose counts last changed before the data's end
            "SELECT item_id, max(valid_from) FROM item_daily_stats GROUP BY item_id "
            "HAVING max(valid_from) < (SELECT max(valid_from) FROM item_daily_stats) "
            "ORDER BY 2, 1 LIMIT 1")).one()
        gone, first = conn.execute(sa.text(
            "SELECT item_id, min(event_time) FROM interactions GROUP BY item_id ORDER BY count(*), item_id LIMIT 1")).one()
        conn.execute(sa.text("DELETE FROM interactions WHERE item_id = :i"), {"i": gone})  # as an erasure would
        refresh_item_stats(conn, (newest + pd.Timedelta(days=1)).date(), [quiet])
        refresh_item_stats(conn, first.date(), [gone])
        stamped = "SELECT valid_from, events_28d, buyers, written_xid = pg_current_xact_id() FROM item_daily_stats " \
                  "WHERE item_id = :i ORDER BY valid_from DESC"
        rows = conn.execute(sa.text(stamped), {"i": quiet}).all()
        assert rows[0][0] == newest and rows[0][3] and not any(r[3] for r in rows[1:])
        assert [tuple(r[1:]) for r in conn.execute(sa.text(stamped), {"i": gone})] == [(0, 0, True)]
        tx.rollback()
