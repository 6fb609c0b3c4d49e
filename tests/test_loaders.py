"""Loaders: idempotency, date ranges, both UCI column namings, own files, and bad files that write nothing."""
from datetime import date

import pandas as pd
import pytest
import sqlalchemy as sa

from freshrec.ingest import InputError, interactions_batch, items_batch, online_retail_batch, write_batch

COUNT = "SELECT (SELECT count(*) FROM interactions), (SELECT count(*) FROM users), (SELECT count(*) FROM items), (SELECT count(*) FROM user_profiles)"


def counts(conn):
    return tuple(conn.execute(sa.text(COUNT)).one())


def load(conn, path, since=None, until=None):
    return write_batch(conn, online_retail_batch(path, since, until), str(path))


def test_purchases_only(retail_sample, conn):
    raw = pd.read_parquet(retail_sample)
    purchases = raw[raw.CustomerID.notna() & (raw.Quantity > 0) & ~raw.InvoiceNo.str.startswith("C")]
    summary = load(conn, retail_sample)
    assert summary.interactions_inserted == len(purchases)
    assert counts(conn)[:3] == (len(purchases), purchases.CustomerID.nunique(), purchases.StockCode.nunique())


def test_same_range_twice_adds_nothing(retail_sample, conn):
    first = load(conn, retail_sample)
    before = counts(conn)
    again = load(conn, retail_sample)
    assert again.interactions_inserted == 0 and again.users_new == 0 and again.items_new == 0
    assert again.interactions_duplicate == first.interactions_inserted
    assert counts(conn) == before


def test_later_range_adds_only_new_rows(retail_sample, conn):
    early = load(conn, retail_sample, until=date(2010, 12, 31))
    late = load(conn, retail_sample, since=date(2011, 1, 1))
    both = online_retail_batch(retail_sample)
    assert early.interactions_inserted + late.interactions_inserted == len(both.interactions)
    assert late.interactions_duplicate == 0
    overlap = load(conn, retail_sample, since=date(2010, 12, 3))  # straddles both loads
    assert overlap.interactions_inserted == 0


def test_until_is_inclusive_and_since_after_until_is_refused(retail_sample, conn):
    batch = online_retail_batch(retail_sample, date(2010, 12, 2), date(2010, 12, 2))
    assert set(batch.interactions.event_time.dt.date) == {date(2010, 12, 2)}
    with pytest.raises(InputError, match="--since"):
        online_retail_batch(retail_sample, date(2011, 1, 2), date(2011, 1, 1))


def test_online_retail_ii_column_names(retail_sample, conn, tmp_path):
    ii = pd.read_parquet(retail_sample).rename(columns={"InvoiceNo": "Invoice", "UnitPrice": "Price", "CustomerID": "Customer ID"})
    csv = tmp_path / "online_retail_ii.csv"
    ii.to_csv(csv, index=False)
    from_ii = load(conn, csv)
    from_uci = online_retail_batch(retail_sample)
    assert from_ii.interactions_inserted == len(from_uci.interactions)
    assert load(conn, retail_sample).interactions_inserted == 0  # same event keys from either naming


def test_item_text_is_the_most_frequent_description(conn, tmp_path):
    rows = [
        ("1", "A", "RED MUG", "2010-12-01 10:00"), ("2", "A", "RED MUG", "2010-12-02 10:00"),
        ("3", "A", "MUG RED", "2010-12-03 10:00"), ("4", "B", None, "2010-12-03 11:00"),
    ]
    frame = pd.DataFrame(rows, columns=["InvoiceNo", "StockCode", "Description", "InvoiceDate"])
    frame = frame.assign(Quantity=1, UnitPrice=1.0, CustomerID=12345.0, Country="UK")
    path = tmp_path / "mini.csv"
    frame.to_csv(path, index=False)
    load(conn, path)
    titles = dict(conn.execute(sa.text("SELECT item_id, title FROM items WHERE item_id IN ('A','B')")).all())
    assert titles == {"A": "RED MUG", "B": "B"}
    assert conn.execute(sa.text("SELECT user_id FROM users WHERE user_id='12345'")).scalar() == "12345"


def _bad_retail(tmp_path, mutate):
    frame = pd.DataFrame(
        {"InvoiceNo": ["1", "2", "3"], "StockCode": ["A", "B", "C"], "Description": ["x", "y", "z"],
         "Quantity": ["1", "2", "3"], "InvoiceDate": ["2010-12-01 10:00"] * 3, "UnitPrice": ["1"] * 3,
         "CustomerID": ["1", "2", "3"], "Country": ["UK"] * 3}
    )
    mutate(frame)
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("mutate", "column", "row", "reason"),
    [
        (lambda f: f.drop(columns=["InvoiceDate"], inplace=True), "InvoiceDate", None, "missing"),
        (lambda f: f.loc.__setitem__((1, "Quantity"), "two"), "Quantity", 2, "not an integer"),
        (lambda f: f.loc.__setitem__((2, "InvoiceDate"), "yesterday"), "InvoiceDate", 3, "not a timestamp"),
        (lambda f: f.loc.__setitem__((0, "StockCode"), ""), "StockCode", 1, "empty"),
    ],
)
def test_bad_retail_file_names_the_problem_and_writes_nothing(retail_sample, conn, tmp_path, mutate, column, row, reason):
    load(conn, retail_sample)
    before = counts(conn)
    with pytest.raises(InputError) as err:
        load(conn, _bad_retail(tmp_path, mutate))
    assert (err.value.column, err.value.row) == (column, row)
    assert reason in str(err.value) and column in str(err.value)
    assert counts(conn) == before


def test_own_catalog_and_event_log(conn, tmp_path):
    items = tmp_path / "items.csv"
    items.write_text("item_id,title,category,price\nsku1,Blue kettle,kitchen,20\nsku2,Green mug,kitchen,5\n")
    events = tmp_path / "events.parquet"
    pd.DataFrame(
        {"event_key": ["e1", "e2", "e3"], "user_id": ["ann", "ann", "bob"], "item_id": ["sku1", "sku2", "sku2"],
         "event_type": ["view", "purchase", "click"], "event_time": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-02"], utc=True),
         "query": [None, None, "mug"]}
    ).to_parquet(events)
    write_batch(conn, items_batch(items), str(items))
    summary = write_batch(conn, interactions_batch(events), str(events))
    assert summary.interactions_inserted == 3 and summary.users_new == 2
    assert write_batch(conn, interactions_batch(events), str(events)).interactions_duplicate == 3
    profile = conn.execute(sa.text("SELECT profile_text FROM user_profiles WHERE user_id='bob'")).scalar()
    assert profile == "searched mug: Green mug"


@pytest.mark.parametrize(
    ("csv", "column", "row"),
    [
        ("event_key,user_id,item_id,event_type,event_time\ne1,ann,sku1,buy,2024-01-01\n", "event_type", 1),
        ("event_key,user_id,item_id,event_type,event_time\ne1,ann,nope,view,2024-01-01\n", "item_id", 1),
        ("event_key,user_id,item_id,event_type,event_time\ne1,ann,sku1,view,2024-01-01\ne1,ann,sku1,view,2024-01-02\n", "event_key", 2),
        ("event_key,user_id,item_id,event_type,event_time,quantity\ne1,ann,sku1,view,2024-01-01,0\n", "quantity", 1),
        ("event_key,user_id,event_type,event_time\ne1,ann,view,2024-01-01\n", "item_id", None),
    ],
)
def test_bad_event_log_names_the_problem_and_writes_nothing(conn, tmp_path, csv, column, row):
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\nsku1,Blue kettle\n")
    write_batch(conn, items_batch(items), str(items))
    before = counts(conn)
    path = tmp_path / "events.csv"
    path.write_text(csv)
    with pytest.raises(InputError) as err:
        write_batch(conn, interactions_batch(path), str(path))
    assert (err.value.column, err.value.row) == (column, row)
    assert counts(conn) == before
