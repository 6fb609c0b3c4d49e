"""Interactions as arrays, for the behavioural side of ranking: histories, baskets, co-purchase.

One row per (user, item, moment): a *basket* is a user's items at one moment (a UCI invoice, or
one live event). Rows are sorted by user, then time, so a user's history before any time t is one
contiguous range found by binary search, and "strictly before t" is exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DAY = 86_400.0


def epoch_seconds(times: pd.Series) -> np.ndarray:
    """Seconds since the epoch, as whole microseconds (PostgreSQL's precision) / 1e6: the same float,
    bit for bit, as PostgreSQL's ``extract(epoch FROM t)::float8`` and as ``inputs.read_timed`` (both
    correctly rounded from the same exact value). ``total_seconds()`` divides nanoseconds, an ulp
    off on some sub-second times, and times are compared by equality (a basket's own moment)."""
    if pd.api.types.is_numeric_dtype(times):  # already epoch seconds
        return times.to_numpy(np.float64)
    stamps = pd.to_datetime(times, utc=True)
    micros = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
    return micros.to_numpy(np.int64) / 1e6


def _coded(user_ids, item_ids, times: np.ndarray, item_index: pd.Index) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user ids sorted, each row's user code, item row, epoch seconds) of the rows whose item is in
    ``item_index``, from a row's columns: user id, item id, epoch seconds."""
    if not len(times):
        return np.zeros(0, object), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    item = item_index.get_indexer(item_ids)
    known = item >= 0
    user, users = pd.factorize(np.asarray(user_ids, dtype=object)[known], sort=True)
    return np.asarray(users, dtype=object), user.astype(np.int64), item[known].astype(np.int64), times[known]


def _columns(frame: pd.DataFrame) -> tuple[np.ndarray, pd.Series, np.ndarray]:
    """A frame of (user_id, item_id, event_time) as ``_coded``'s columns."""
    return frame["user_id"].to_numpy(dtype=object), frame["item_id"], epoch_seconds(frame["event_time"])


@dataclass
class EventLog:
    item_ids: np.ndarray  # the catalog, in item-row order (the version's index order)
    users: np.ndarray  # user ids, in user-row order
    user: np.ndarray  # per row: user row
    item: np.ndarray  # per row: item row
    time: np.ndarray  # per row: epoch seconds
    basket: np.ndarray  # per row: basket number, increasing with (user, time)
    repeat: np.ndarray  # per row: the user had this item in an earlier basket
    start: np.ndarray  # rows of user u are start[u]:start[u+1]

    @classmethod
    def build(cls, frame: pd.DataFrame, item_ids: np.ndarray, item_index: pd.Index | None = None) -> EventLog:
        """From rows of (user_id, item_id, event_time); items outside ``item_ids`` are dropped."""
        return cls.from_columns(*_columns(frame), item_ids, item_index)

    @classmethod
    def from_columns(cls, user_ids, row_item_ids, times: np.ndarray, item_ids: np.ndarray,
                     item_index: pd.Index | None = None) -> EventLog:
        """From each row's user id, item id and epoch seconds: the API's per-request path, with no
        DataFrame (a one-user log's pandas costs were most of its build).

        ``item_index`` (``pd.Index(item_ids)``, built once by the caller) spares a per-request index
        over the whole catalog.
        """
        row_of = item_index if item_index is not None else pd.Index(item_ids)
        users, user, item, time = _coded(user_ids, row_item_ids, times, row_of)
        # One row per (user, item, moment), ordered by user, then time, then item. NumPy on codes, not
        # a DataFrame's drop_duplicates and sort_values: the API builds one per request, where pandas'
        # fixed costs were 2 ms of a one-user log.
        order = np.lexsort((item, time, user))
        user, item, time = user[order], item[order].astype(np.int32), time[order]
        same = (user[1:] == user[:-1]) & (time[1:] == time[:-1])
        unique = np.ones(len(user), bool)
        unique[1:] = ~(same & (item[1:] == item[:-1]))
        user, item, time = user[unique], item[unique], time[unique]
        new_basket = np.ones(len(user), bool)
        new_basket[1:] = (user[1:] != user[:-1]) | (time[1:] != time[:-1])
        basket = np.cumsum(new_basket) - 1
        repeat = np.ones(len(user), bool)  # the user had the item in an earlier basket: all but its first row
        repeat[np.unique(user.astype(np.int64) * max(len(item_ids), 1) + item, return_index=True)[1]] = False
        start = np.searchsorted(user, np.arange(len(users) + 1))
        return cls(np.asarray(item_ids, dtype=object), users, user.astype(np.int32), item, time, basket, repeat, start)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def at(self, name: str, rows: np.ndarray, default: float = 0) -> np.ndarray:
        """``self.<name>[rows]``, with ``default`` where the log is empty or a row is past its end
        (callers mask those rows out; an empty log has no row to point at)."""
        values = getattr(self, name)
        rows = np.asarray(rows, np.int64)
        if len(values) == 0:
            return np.full(len(rows), default, dtype=np.float64)
        inside = rows < len(values)
        return np.where(inside, values[np.minimum(rows, len(values) - 1)], default)

    def user_rows(self, user_ids) -> np.ndarray:
        """Each id's user row, -1 for a user without history here."""
        return pd.Index(self.users).get_indexer(list(user_ids))

    def before(self, user_rows: np.ndarray, times: np.ndarray, inclusive: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Row ranges [lo, hi) of each user's events strictly before each time (up to it, if inclusive)."""
        lo = np.zeros(len(user_rows), np.int64)
        hi = np.zeros(len(user_rows), np.int64)
        side = "right" if inclusive else "left"
        for q, (u, t) in enumerate(zip(user_rows, times)):
            if u < 0:
                continue
            a, b = self.start[u], self.start[u + 1]
            lo[q] = a
            hi[q] = a + np.searchsorted(self.time[a:b], t, side=side)
        return lo, hi


def split_baskets(basket: np.ndarray, item: np.ndarray) -> list[np.ndarray]:
    """Item rows per basket, for rows ordered by basket."""
    if len(basket) == 0:
        return []
    return np.split(item, np.flatnonzero(np.diff(basket)) + 1)


@dataclass
class BrowseLog:
    """Each user's views, clicks and carts (not purchases), by time: what they looked at, not yet bought.

    Candidate context for a user without purchases (or between them): those items and their
    co-purchase partners are proposed. Ranker features stay purchase-based until a benchmark on
    data with browsing shows these help.
    """

    users: dict[str, int]
    start: np.ndarray
    item: np.ndarray
    time: np.ndarray

    @classmethod
    def build(cls, frame: pd.DataFrame, item_index: pd.Index) -> BrowseLog:
        return cls.from_columns(*_columns(frame), item_index)

    @classmethod
    def from_columns(cls, user_ids, row_item_ids, times: np.ndarray, item_index: pd.Index) -> BrowseLog:
        users, user, item, time = _coded(user_ids, row_item_ids, times, item_index)
        order = np.lexsort((time, user))  # stable: a moment's events keep their order
        user = user[order]
        return cls({u: n for n, u in enumerate(users)}, np.searchsorted(user, np.arange(len(users) + 1)),
                   item[order].astype(np.int64), time[order])

    @classmethod
    def empty(cls) -> BrowseLog:
        return cls({}, np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0))

    def recent(self, user_ids, times: np.ndarray, limit: int = 20) -> list[np.ndarray]:
        """Per query: the distinct items its user browsed strictly before its time, newest first."""
        out = []
        for user, t in zip(user_ids, times):
            u = self.users.get(user)
            if u is None:
                out.append(np.zeros(0, np.int64))
                continue
            a, b = self.start[u], self.start[u + 1]
            seen = self.item[a : a + np.searchsorted(self.time[a:b], t)][::-1]
            out.append(pd.unique(seen)[:limit].astype(np.int64))
        return out
