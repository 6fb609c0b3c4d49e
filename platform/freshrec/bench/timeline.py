"""A data set as a timeline: the first 13 weeks, then one batch per week (Monday to Sunday).

Either a UCI Online Retail file (either column naming; the bundled copy by default) or an
items file plus an interactions file in the formats of ``freshrec load items|interactions``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from freshrec.ingest import BUNDLED_ONLINE_RETAIL, Batch, interactions_batch, items_batch, online_retail_batch
from freshrec.ingest.online_retail import day_start, read_purchases

FIRST_WEEKS = 13


def _weeks(first: date, last: date) -> tuple[date, list[tuple[date, date]]]:
    """The Sunday that ends week 13 (week 1 being the one holding ``first``), and every later Monday-Sunday."""
    first_until = first + timedelta(days=6 - first.weekday()) + timedelta(weeks=FIRST_WEEKS - 1)
    weeks, monday = [], first_until + timedelta(days=1)
    while monday <= last:
        weeks.append((monday, monday + timedelta(days=6)))
        monday += timedelta(weeks=1)
    return first_until, weeks


@dataclass
class Timeline:
    first_until: date
    weeks: list[tuple[date, date]]
    source: str
    catalog: Batch | None = None  # an items file, written once before the first batch
    _events: pd.DataFrame | None = field(default=None, repr=False)
    queries: float = 0.0  # share of Online Retail purchases given a synthetic search query

    def batch(self, since: date | None, until: date) -> Batch:
        """The rows with ``since <= day <= until`` (``since=None``: from the start)."""
        if self._events is None:
            return online_retail_batch(Path(self.source), since=since, until=until, queries=self.queries)
        times = self._events["event_time"]
        keep = times < day_start(until + timedelta(days=1))
        if since is not None:
            keep &= times >= day_start(since)
        rows = self._events[keep]
        empty = self.catalog.items.iloc[:0]
        return Batch(users=self.catalog.users, items=empty, interactions=rows, rows_read=len(rows), rows_kept=len(rows))


def open_timeline(dataset: str | None, queries: float = 0.0) -> Timeline:
    """``None``: the bundled Online Retail; ``PATH``: an Online Retail file; ``ITEMS,INTERACTIONS``: your own pair.

    ``queries``: the share of Online Retail purchases given a synthetic search query (your own
    interactions file carries its own ``query`` column)."""
    if dataset and "," in dataset:
        items_path, events_path = (Path(p) for p in dataset.split(",", 1))
        catalog, events = items_batch(items_path), interactions_batch(events_path).interactions
        days = events["event_time"].dt.date
        first_until, weeks = _weeks(days.min(), days.max())
        return Timeline(first_until, weeks, dataset, catalog, events)
    path = Path(dataset) if dataset else BUNDLED_ONLINE_RETAIL
    purchases, _ = read_purchases(path)
    days = purchases["InvoiceDate"].dt.date
    first_until, weeks = _weeks(days.min(), days.max())
    return Timeline(first_until, weeks, str(path), queries=queries)
