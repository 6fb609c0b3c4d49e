"""UCI Online Retail (and Online Retail II) invoice lines as freshrec users, items and purchases.

The bundled copy is ``freshrec/datasets/online_retail.parquet`` (CC BY 4.0; see SOURCE.md there).
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from pathlib import Path

import pandas as pd

from freshrec.ingest.batch import Batch
from freshrec.ingest.synthetic_queries import add_queries
from freshrec.ingest.validate import Column, InputError, parse_frame, read_table

BUNDLED = Path(__file__).resolve().parents[1] / "datasets" / "online_retail.parquet"
# Online Retail II renamed three columns; both namings are accepted.
II_NAMES = {"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"}
COLUMNS = [
    Column("InvoiceNo"),
    Column("StockCode"),
    Column("Description", required=False),
    Column("Quantity", "int"),
    Column("InvoiceDate", "timestamp"),
    Column("UnitPrice", "float", required=False),
    Column("CustomerID", required=False),
    Column("Country", required=False),
]


def day_start(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time.min, tzinfo=timezone.utc)


def _customer_ids(raw: pd.Series) -> pd.Series:
    # Pandas reads the customer column as float (12347.0); ids are the integer text.
    numeric = pd.to_numeric(raw, errors="coerce")
    as_int = numeric.dropna().astype("int64").astype(str)
    return raw.astype(object).where(numeric.isna(), as_int.reindex(raw.index))


def read_purchases(path: Path) -> tuple[pd.DataFrame, int]:
    """All purchase lines of the file (cancellations, anonymous and non-positive rows dropped)."""
    path = Path(path)
    frame, rows_read = _read_purchases(path.resolve(), path.stat().st_mtime_ns if path.exists() else 0)
    return frame.copy(), rows_read


@lru_cache(maxsize=2)
def _read_purchases(path: Path, mtime_ns: int) -> tuple[pd.DataFrame, int]:
    # Cached per file version: a week-by-week replay reads the same file dozens of times.
    raw = read_table(path).rename(columns=II_NAMES)
    frame = parse_frame(raw, COLUMNS, str(path))
    frame["CustomerID"] = _customer_ids(frame["CustomerID"])
    keep = (
        frame["CustomerID"].notna()
        & (frame["Quantity"] > 0)
        & ~frame["InvoiceNo"].str.upper().str.startswith("C")
    )
    return frame[keep].reset_index(drop=True), len(frame)


def _items(purchases: pd.DataFrame) -> pd.DataFrame:
    described = purchases.dropna(subset=["Description"])
    # A StockCode can carry several Descriptions; its most frequent one is its title.
    title = (
        described.groupby(["StockCode", "Description"]).size().rename("n").reset_index()
        .sort_values(["StockCode", "n", "Description"], ascending=[True, False, True])
        .drop_duplicates("StockCode").set_index("StockCode")["Description"]
    )
    grouped = purchases.groupby("StockCode")
    items = pd.DataFrame({"valid_from": grouped["InvoiceDate"].min(), "price": grouped["UnitPrice"].median()})
    items["title"] = title.reindex(items.index)
    items["title"] = items["title"].fillna(pd.Series(items.index, index=items.index))
    items["category"] = None
    items["description"] = None
    return items.rename_axis("item_id").reset_index()


def load_batch(path: Path = BUNDLED, since: date | None = None, until: date | None = None,
               queries: float = 0.0, query_seed: int = 0) -> Batch:
    """The purchases with ``since <= day <= until``, and the users and items they touch.

    ``queries``: the share of purchase rows given a synthetic search query (made from the bought
    item's title, ``ingest.synthetic_queries``): the data set has no query log of its own.
    """
    if not 0 <= queries <= 1:
        raise InputError(str(path), "--queries", f"{queries} is not a share between 0 and 1")
    if since and until and since > until:
        raise InputError(str(path), "--since", f"{since} is after --until {until}")
    purchases, rows_read = read_purchases(path)
    # Event keys are fixed by the whole file, so loading date ranges in any order gives the same keys.
    occurrence = purchases.groupby(["InvoiceNo", "StockCode"]).cumcount()
    purchases["event_key"] = (
        "uci:" + purchases["InvoiceNo"] + ":" + purchases["StockCode"] + ":" + occurrence.astype(str)
    )
    items = _items(purchases)
    in_range = pd.Series(True, index=purchases.index)
    if since:
        in_range &= purchases["InvoiceDate"] >= day_start(since)
    if until:
        in_range &= purchases["InvoiceDate"] < day_start(until + timedelta(days=1))
    rows = purchases[in_range]
    interactions = pd.DataFrame(
        {
            "event_key": rows["event_key"],
            "user_id": rows["CustomerID"],
            "item_id": rows["StockCode"],
            "event_type": "purchase",
            "event_time": rows["InvoiceDate"],
            "quantity": rows["Quantity"].astype("int64"),
            "query": None,
        }
    )
    if queries:
        interactions = add_queries(interactions, dict(zip(items["item_id"], items["title"])), queries, query_seed)
    users = rows.groupby("CustomerID")["Country"].last().rename_axis("user_id").reset_index()
    users = users.rename(columns={"Country": "country"})
    return Batch(
        users=users,
        items=items[items["item_id"].isin(rows["StockCode"])],
        interactions=interactions,
        rows_read=rows_read,
        rows_kept=len(rows),
    )
