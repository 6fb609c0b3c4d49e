"""Feast, in-process: open the store, apply the repo, materialize, read point-in-time features."""
from __future__ import annotations

import contextlib
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from freshrec.config import Settings, get_settings
from freshrec.db.engine import get_engine
from freshrec.features.environment import apply_environment
from freshrec.ingest.aggregates import catch_up

FEATURE_SERVICE = "ranking_model"
USER_TEXT = "user_text:user_text"
ITEM_TEXT = "item_text:item_text"
USER_ACTIVITY = ["user_text:n_events", "user_text:n_baskets"]
ITEM_STATS = ["item_stats:events_7d", "item_stats:events_28d", "item_stats:buyers", "item_stats:repeat_buyers"]
# What a version reads from Feast: the towers' texts, and the ranker's per-user and per-item features.
FEATURE_REFS = [USER_TEXT, ITEM_TEXT, *USER_ACTIVITY, *ITEM_STATS]
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def open_store(settings: Settings | None = None):
    """A FeatureStore on feature_repo/, pointed at freshrec's database."""
    settings = settings or get_settings()
    apply_environment(settings)
    from feast import FeatureStore  # importing feast costs seconds: only when it is used

    return FeatureStore(repo_path=str(settings.feast.repo_path))


def apply(store, repo_path: Path) -> list[str]:
    """What ``feast apply`` does, without its chdir: register every object defined in the repo."""
    from feast.repo_operations import parse_repo

    if str(repo_path) not in sys.path:
        sys.path.append(str(repo_path))
    # parse_repo names modules by their path relative to the working directory.
    with contextlib.chdir(repo_path):
        repo = parse_repo(repo_path)
    found = [*repo.entities, *repo.data_sources, *repo.feature_views, *repo.feature_services]
    # A module that imports another's objects makes parse_repo list them twice.
    objects = list({(type(o).__name__, o.name): o for o in found}.values())
    store.apply(objects)
    return sorted(f"{type(o).__name__}:{o.name}" for o in objects)


def _last_materialized_at(store) -> datetime | None:
    ends = [end for fv in store.list_feature_views() for _, end in fv.materialization_intervals]
    return max(ends) if ends else None


def materialize(store, end: datetime | None = None, engine=None) -> tuple[datetime, datetime]:
    """Fill the online store with every feature row written since the last run, up to ``end``.

    ``feast materialize-incremental`` starts where the last run ended, in *event* time, so rows
    loaded later with older timestamps (a backfill, or replaying a data set week by week) would
    never reach the online store. This starts instead at the oldest event time among rows
    *ingested* since the last run; Feast writes each entity's newest row in the window.
    """
    end = end or datetime.now(timezone.utc)
    last = _last_materialized_at(store)
    engine = engine or get_engine()
    catch_up(engine)  # the daily item aggregates, for rows that came in since the last load or run
    with engine.connect() as conn:
        start = conn.execute(
            sa.text(
                "SELECT least((SELECT min(valid_from) FROM user_profiles WHERE ingested_at > :since),"
                "             (SELECT min(valid_from) FROM items WHERE updated_at > :since),"
                "             (SELECT min(valid_from) FROM item_daily_stats WHERE refreshed_at > :since))"
            ),
            {"since": last or EPOCH},
        ).scalar()
    start = start or end
    store.materialize(start_date=start, end_date=end)
    return start, end


def historical_features(store, entity_sql: str) -> pd.DataFrame:
    """Point-in-time user and item texts for entity rows given as SQL (user_id, item_id, event_timestamp)."""
    service = store.get_feature_service(FEATURE_SERVICE)
    frame = store.get_historical_features(entity_df=entity_sql, features=service).to_df()
    # Feast hands back the timestamps it read as naive UTC; make that explicit.
    stamps = pd.to_datetime(frame["event_timestamp"])
    frame["event_timestamp"] = stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")
    return frame


def online_user_texts(store, user_ids: list[str]) -> dict[str, tuple[str | None, int]]:
    """Each user's newest profile text and its feature timestamp (epoch seconds), from the online store."""
    rows = online_users(store, user_ids)
    return {u: (r["user_text"], r["ts"]) for u, r in rows.items()}


def online_users(store, user_ids: list[str]) -> dict[str, dict]:
    """Each user's newest profile text, activity counts and feature timestamp, from the online store."""
    rows = store.get_online_features(features=[USER_TEXT, *USER_ACTIVITY], entity_rows=[{"user_id": u} for u in user_ids]
                                     ).to_dict(include_event_timestamps=True)
    return {u: {"user_text": rows["user_text"][i], "ts": rows["user_text__ts"][i],
                "n_events": rows["n_events"][i] or 0, "n_baskets": rows["n_baskets"][i] or 0}
            for i, u in enumerate(rows["user_id"])}


def online_item_stats(store, item_ids: list[str]) -> pd.DataFrame:
    """The newest daily aggregates of these items, from the online store (zeros for unknown items)."""
    rows = store.get_online_features(features=ITEM_STATS, entity_rows=[{"item_id": i} for i in item_ids]).to_dict()
    frame = pd.DataFrame({name.split(":")[1]: rows[name.split(":")[1]] for name in ITEM_STATS}, index=rows["item_id"])
    return frame.fillna(0).astype("int64")


def push_user_profiles(store, conn, user_ids: list[str]) -> int:
    """Write these users' newest profile rows to the online store now (live events), not at the next materialize."""
    if not user_ids:
        return 0
    frame = pd.read_sql(
        sa.text("SELECT DISTINCT ON (user_id) user_id, profile_text AS user_text, n_events, n_baskets, valid_from "
                "FROM user_profiles WHERE user_id = ANY(:ids) ORDER BY user_id, valid_from DESC"),
        conn, params={"ids": list(user_ids)})
    store.write_to_online_store("user_text", frame)
    return len(frame)
