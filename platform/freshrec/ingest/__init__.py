"""Loaders: real data sets and your own files into users, items and interactions."""
from freshrec.ingest.batch import Batch
from freshrec.ingest.files import interactions_batch, interactions_frame_batch, items_batch
from freshrec.ingest.online_retail import BUNDLED as BUNDLED_ONLINE_RETAIL
from freshrec.ingest.online_retail import load_batch as online_retail_batch
from freshrec.ingest.validate import InputError
from freshrec.ingest.writer import LoadSummary, write_batch

__all__ = [
    "BUNDLED_ONLINE_RETAIL",
    "Batch",
    "InputError",
    "LoadSummary",
    "interactions_batch",
    "interactions_frame_batch",
    "items_batch",
    "online_retail_batch",
    "write_batch",
]
