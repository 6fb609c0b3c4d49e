"""The per-request event logs (``EventLog``, ``BrowseLog``) built with NumPy equal the pandas
construction they replaced, row for row, on messy input: duplicates, unknown items, shared moments,
sub-second times, rows in any order."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from freshrec.ranking.events import BrowseLog, EventLog, epoch_seconds


def _pandas_event_log(frame: pd.DataFrame, item_ids: np.ndarray) -> dict:
    """The construction before NumPy: drop_duplicates, a stable sort, np.unique, duplicated."""
    item = pd.Index(item_ids).get_indexer(frame["item_id"])
    keep = item >= 0
    rows = pd.DataFrame({"user_id": frame["user_id"].to_numpy()[keep], "item": item[keep],
                         "time": epoch_seconds(frame["event_time"])[keep]})
    rows = rows.drop_duplicates(["user_id", "item", "time"]).sort_values(["user_id", "time", "item"], kind="stable")
    users, user = np.unique(rows["user_id"].to_numpy(dtype=object), return_inverse=True)
    time = rows["time"].to_numpy()
    new_basket = np.ones(len(rows), bool)
    new_basket[1:] = (user[1:] != user[:-1]) | (time[1:] != time[:-1])
    return {"users": users, "user": user, "item": rows["item"].to_numpy(), "time": time,
            "basket": np.cumsum(new_basket) - 1, "repeat": pd.DataFrame({"u": user, "i": rows["item"]}).duplicated().to_numpy(),
            "start": np.searchsorted(user, np.arange(len(users) + 1))}


def _pandas_browse_log(frame: pd.DataFrame, item_ids: np.ndarray) -> dict:
    rows = pd.DataFrame({"user_id": frame["user_id"].to_numpy(), "item": pd.Index(item_ids).get_indexer(frame["item_id"]),
                         "time": epoch_seconds(frame["event_time"])})
    rows = rows[rows["item"] >= 0].sort_values(["user_id", "time"], kind="stable")
    users, user = np.unique(rows["user_id"].to_numpy(dtype=object), return_inverse=True)
    return {"users": {u: n for n, u in enumerate(users)}, "start": np.searchsorted(user, np.arange(len(users) + 1)),
            "item": rows["item"].to_numpy(), "time": rows["time"].to_numpy()}


def _messy(seed: int, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    items = np.array([f"i{k}" for k in range(40)], dtype=object)
    seconds = pd.Timestamp("2011-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 20, n) * 3600, unit="s")
    frame = pd.DataFrame({"user_id": rng.choice([f"u{k}" for k in range(12)], n),
                          "item_id": rng.choice([*items[:30], "gone-1", "gone-2"], n),  # items 30+ never bought
                          "event_time": seconds + pd.to_timedelta(rng.choice([0, 250_000, 999_999], n), unit="us")})
    frame = pd.concat([frame, frame.sample(n // 4, random_state=seed)], ignore_index=True)  # exact duplicates
    return frame.sample(frac=1.0, random_state=seed + 1).reset_index(drop=True), items


@pytest.mark.parametrize("seed", range(5))
def test_an_event_log_is_the_pandas_construction_row_for_row(seed):
    frame, items = _messy(seed, 300)
    log, want = EventLog.build(frame, items), _pandas_event_log(frame, items)
    assert log.users.tolist() == want["users"].tolist()
    for name in ("user", "item", "time", "basket", "repeat", "start"):
        assert np.array_equal(getattr(log, name), want[name]), name
    assert log.repeat.any() and (np.diff(log.basket) >= 0).all()


@pytest.mark.parametrize("seed", range(5))
def test_a_browse_log_is_the_pandas_construction_row_for_row(seed):
    frame, items = _messy(seed, 200)
    log, want = BrowseLog.build(frame, pd.Index(items)), _pandas_browse_log(frame, items)
    assert log.users == want["users"]
    for name in ("start", "item", "time"):
        assert np.array_equal(getattr(log, name), want[name]), name


def test_empty_and_all_unknown_rows_give_empty_logs():
    items = np.array(["a", "b"], dtype=object)
    empty = pd.DataFrame({"user_id": [], "item_id": [], "event_time": []})
    unknown = pd.DataFrame({"user_id": ["u"], "item_id": ["zz"], "event_time": [pd.Timestamp("2011-01-01", tz="UTC")]})
    for frame in (empty, unknown):
        log = EventLog.build(frame, items)
        assert len(log.users) == 0 and len(log.item) == 0 and log.start.tolist() == [0]
        assert log.user_rows(["u"]).tolist() == [-1]
        browse = BrowseLog.build(frame, pd.Index(items))
        assert browse.users == {} and browse.recent(["u"], np.array([2e9]))[0].tolist() == []
