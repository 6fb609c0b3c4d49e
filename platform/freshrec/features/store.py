"""Feast, in-process: open the store, apply the repo, materialize, read point-in-time features."""
from __future__ import annotations

import contextlib
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from freshrec.config import Settings, get_settings
from freshrec.db import cursors
from freshrec.db.engine import get_engine
from freshrec.db.statistics import analyze_changed
from freshrec.faults import pause_point
from freshrec.features.environment import apply_environment
from freshrec.ingest.aggregates import catch_up

FEATURE_SERVICE = "ranking_model"
USER_TEXT = "user_text:user_text"
ITEM_TEXT = "item_text:item_text"
USER_ACTIVITY = ["user_text:n_events", "user_text:n_baskets"]
ITEM_STATS = ["item_stats:events_7d", "item_stats:events_28d", "item_stats:buyers", "item_stats:repeat_buyers"]
NEIGHBOURS = ["item_neighbours:partners", "item_neighbours:strengths"]
# What a version reads from Feast: the towers' texts, the ranker's per-user and per-item features, and
# (serving) its own co-purchase neighbours.
FEATURE_REFS = [USER_TEXT, ITEM_TEXT, *USER_ACTIVITY, *ITEM_STATS, *NEIGHBOURS]

# Feast's PostgreSQL online store keeps one connection per process (conn_type: singleton) and flips
# its autocommit per call: two threads at once fail with "can't change 'autocommit' now:
# connection in transaction status INTRANS" (concurrent event batches did). Its pool mode
# would not do either: it returns a connection to the pool only when the call succeeds. So a
# process makes its online calls one at a time; they take about a millisecond.
_ONLINE = threading.Lock()


def _online(store, call):
    """One online-store call, alone in this process, on a live connection.

    Feast's singleton connection is never replaced once broken: after a database restart every
    later call would fail. A call that finds it lost drops it (Feast opens a new one) and runs once more.
    """
    import psycopg

    with _ONLINE:
        try:
            return call()
        except psycopg.OperationalError:
            online = store._get_provider().online_store
            if getattr(online, "_conn", None) is None:
                raise
            online._conn = None
            return call()


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


ONLINE_CURSOR = "online_store"
_MATERIALIZE_LOCK = 0x6D617465  # "mate": one materialization at a time per database
# The feature rows written by transactions in [cursor, horizon): where the next window starts and ends.
# Only an entity's newest row goes online, and a load rewrites a user's whole profile history: the
# window starts at the oldest *newest* profile among changed users, not at their first event ever.
_CHANGED = """
WITH changed_users AS (
    SELECT DISTINCT user_id FROM user_profiles
    WHERE written_xid >= CAST(:a AS xid8) AND written_xid < CAST(:b AS xid8))
SELECT min(valid_from), max(valid_from) FROM (
    SELECT max(p.valid_from) AS valid_from FROM user_profiles p JOIN changed_users USING (user_id) GROUP BY p.user_id
    UNION ALL SELECT valid_from FROM item_texts WHERE written_xid >= CAST(:a AS xid8) AND written_xid < CAST(:b AS xid8)
    UNION ALL SELECT max(valid_from) FROM item_daily_stats
              WHERE written_xid >= CAST(:a AS xid8) AND written_xid < CAST(:b AS xid8) GROUP BY item_id) changed"""


_WRITTEN_SINCE = "SELECT DISTINCT user_id FROM user_profiles WHERE written_xid >= CAST(:a AS xid8)"


def materialize(store, end: datetime | None = None, engine=None) -> tuple[datetime, datetime] | None:
    """Fill the online store with every feature row written since the last run; None if there was none.

    The window is found by transaction horizon (``freshrec.db.cursors``), as the updater finds its
    rows: it starts at the oldest ``valid_from`` among rows written by transactions that ended since
    the last run, so a load that commits after a run started, or a backfill of old event times,
    is never skipped. (``feast materialize-incremental`` starts where its last run ended, in event
    time, and misses both.) Feast writes each entity's newest row in the window.
    """
    engine = engine or get_engine()
    catch_up(engine)  # the daily item aggregates, for rows that came in since the last load or run
    analyze_changed(engine)  # Feast's point-in-time reads plan on the loaded rows, not on yesterday's
    with materialize_lock(engine) as conn:
        upto, since = cursors.horizon(conn), cursors.read(conn, ONLINE_CURSOR)
        start, newest = conn.execute(sa.text(_CHANGED), {"a": since, "b": upto}).one()
        window = None
        if start is not None:
            # Rows stamped ahead of now (the end of today's aggregate) still belong in this window.
            end = max(end or datetime.now(timezone.utc), newest)
            _online(store, lambda: store.materialize(start_date=start, end_date=end))
            window = (start, end)
            pause_point("materialize-written")
            # A profile written while Feast ran may have been overwritten online by the older one
            # Feast read: push those users again (the push keeps the newer of the two).
            racing = [r[0] for r in conn.execute(sa.text(_WRITTEN_SINCE), {"a": upto})]
            with engine.connect() as push_conn:
                push_user_profiles(store, push_conn, racing)
        cursors.write(conn, ONLINE_CURSOR, upto)
        return window


@contextlib.contextmanager
def materialize_lock(engine):
    """One materialization at a time per database; an erasure's online delete waits for a running one
    (which may have read the customer's profile before the erasure and would write it back after).

    A session lock on an autocommit connection: no transaction stays open (it would hold back the
    horizon) while Feast writes."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _MATERIALIZE_LOCK})
        try:
            yield conn
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _MATERIALIZE_LOCK})


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
    rows = _online(store, lambda: store.get_online_features(
        features=[USER_TEXT, *USER_ACTIVITY], entity_rows=[{"user_id": u} for u in user_ids]).to_dict(include_event_timestamps=True))
    return {u: {"user_text": rows["user_text"][i], "ts": rows["user_text__ts"][i],
                "n_events": rows["n_events"][i] or 0, "n_baskets": rows["n_baskets"][i] or 0}
            for i, u in enumerate(rows["user_id"])}


def online_item_stats(store, item_ids: list[str]) -> pd.DataFrame:
    """The newest daily aggregates of these items, from the online store (zeros for unknown items)."""
    rows = _online(store, lambda: store.get_online_features(
        features=ITEM_STATS, entity_rows=[{"item_id": i} for i in item_ids]).to_dict())
    frame = pd.DataFrame({name.split(":")[1]: rows[name.split(":")[1]] for name in ITEM_STATS}, index=rows["item_id"])
    return frame.fillna(0).astype("int64")


_NEWEST_PROFILES = """
SELECT DISTINCT ON (user_id) user_id, profile_text AS user_text, n_events, n_baskets, valid_from
FROM user_profiles WHERE user_id = ANY(:ids) ORDER BY user_id, valid_from DESC"""
_PROFILE_LOCKS = 0x70726F66  # "prof": the class of the per-user profile locks
PROFILE_LOCK_BUCKETS = 64
_BUCKETS = "SELECT DISTINCT hashtext(u) & :m AS b FROM unnest(CAST(:u AS text[])) u ORDER BY b"


def lock_profiles(conn, user_ids: list[str]) -> None:
    """Transaction locks on these users' online profiles: a push, and an erasure, hold them from reading
    SQL to writing (or deleting) online. Users share one of 64 locks by a hash of their id: a push of a
    thousand users takes 64 locks at most (each held lock is a slot in the server's shared lock table),
    always in one order, so two pushers never deadlock."""
    buckets = [r[0] for r in conn.execute(sa.text(_BUCKETS), {"u": sorted(set(user_ids)), "m": PROFILE_LOCK_BUCKETS - 1})]
    for bucket in buckets:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:c, :b)"), {"c": _PROFILE_LOCKS, "b": bucket})


def push_user_profiles(store, conn, user_ids: list[str]) -> int:
    """Write these users' newest profile rows to the online store now (live events), not at the next
    materialize; returns how many were pushed.

    Feast's PostgreSQL online write is last-writer-wins, so two processes pushing one user could
    leave the older profile online. Each push holds the users' profile locks from reading the newest
    profile to writing it, and writes only what is not older than the online row. A materialization
    takes no such lock (it can run for minutes); it pushes again, through here, every user whose profile
    changed while it ran (``materialize``). ``conn`` must not be in a transaction: the push runs in one
    of its own.
    """
    users = sorted(set(user_ids))
    if not users:
        return 0
    with conn.begin():
        conn.execute(sa.text("SET LOCAL lock_timeout = '10s'"))
        lock_profiles(conn, users)
        frame = pd.read_sql(sa.text(_NEWEST_PROFILES), conn, params={"ids": users})
        pause_point("profile-push")
        online = online_users(store, users)
        stamps = pd.to_datetime(frame["valid_from"], utc=True)
        # Inside the lock the SQL row is the newest there is: write it unless the online one is newer
        # (a profile can change at the same timestamp: a basket's lines in two requests). Feast hands
        # back whole seconds.
        newer = [online[u]["ts"] is None or stamp.timestamp() >= float(online[u]["ts"])
                 for u, stamp in zip(frame["user_id"], stamps)]
        frame = frame[newer]
        if len(frame):
            _online(store, lambda: store.write_to_online_store("user_text", frame))
    return len(frame)


def push_item_neighbours(store, version: int, frame: pd.DataFrame) -> int:
    """Write a version's neighbours (item_id, partners, strengths, valid_from) to the online store now,
    not at the next materialize: the API reads them from there as soon as the version serves.

    The rows go to Feast's online store as ``write_to_online_store`` would send them (the provider's
    ``online_write_batch``, the same entity keys and value protos), built here: Feast converts a
    list column element by element through Python (2.3 s of a 4.3 s push of 28k items' 100 partners
    at 10x the bundled shop); a protobuf list takes the whole list at once."""
    if not len(frame):
        return 0
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import FloatList, StringList, Value

    view = store.get_feature_view("item_neighbours")
    model_version = Value(int64_val=int(version))
    rows = [(EntityKey(join_keys=["model_version", "item_id"], entity_values=[model_version, Value(string_val=item)]),
             {"partners": Value(string_list_val=StringList(val=partners)),
              "strengths": Value(float_list_val=FloatList(val=strengths))},
             stamp.to_pydatetime(), None)
            for item, partners, strengths, stamp in zip(frame["item_id"], frame["partners"], frame["strengths"],
                                                        pd.to_datetime(frame["valid_from"], utc=True))]
    provider = store._get_provider()
    _online(store, lambda: provider.online_write_batch(store.config, view, rows, progress=None))
    return len(rows)


def online_neighbours(store, version: int, item_ids: list[str],
                      owners: dict[str, int] | None = None) -> dict[str, tuple[list[str], list[float]]]:
    """This version's neighbours of these items, from the online store (items without any: absent).

    A list is online under the version that ranked it (``item_neighbours.computed_by``): ``owners``
    maps the items a version carried over from an ancestor to that ancestor."""
    owners = owners or {}
    rows = _online(store, lambda: store.get_online_features(
        features=NEIGHBOURS, entity_rows=[{"model_version": int(owners.get(i, version)), "item_id": i}
                                          for i in item_ids]).to_dict())
    return {i: (p, s) for i, p, s in zip(rows["item_id"], rows["partners"], rows["strengths"]) if p}
