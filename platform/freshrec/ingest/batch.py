"""What every loader produces: users, items and interactions as typed frames, ready to write."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from freshrec.db.models import EVENT_TYPES
from freshrec.ingest.validate import Column

ITEM_COLUMNS = [
    Column("item_id"),
    Column("title"),
    Column("category", required=False),
    Column("description", required=False),
    Column("price", "float", required=False),
    Column("valid_from", "timestamp", required=False),
]
INTERACTION_COLUMNS = [
    Column("event_key"),
    Column("user_id"),
    Column("item_id"),
    Column("event_type", allowed=EVENT_TYPES),
    Column("event_time", "timestamp"),
    Column("quantity", "int", required=False, positive=True),
    Column("query", required=False),
]
USER_COLUMNS = [Column("user_id"), Column("country", required=False)]


@dataclass
class Batch:
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame
    rows_read: int = 0
    rows_kept: int = 0
