"""A benchmark's own world: a fresh database, migrated, with its Feast store and artifacts folder.

``bench updates`` makes one per incremental strategy, ``bench freshness`` one for its live run.
"""
from __future__ import annotations

import os
import time

from dataclasses import dataclass
from pathlib import Path

import psycopg
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from freshrec.config import Settings
from freshrec.db import get_engine, upgrade
from freshrec.features import apply, materialize, open_store
from freshrec.ingest import write_batch
from freshrec.serving.snapshot import Snapshot, load_snapshot
from freshrec.models.base import build_tiny, resolve


@dataclass
class Platform:
    """One bench database with its settings and Feast store: one incremental strategy's world."""

    strategy: str
    settings: Settings
    store: object
    seed: int = 0

    @property
    def engine(self):
        return get_engine(self.settings)

    def load(self, batch) -> int:
        with self.engine.begin() as conn:
            inserted = write_batch(conn, batch, "bench", self.settings.feast.profile_length).interactions_inserted
        materialize(self.store, engine=self.engine)
        return inserted

    def current(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.text("SELECT version FROM current_version")).scalar()

    def snapshot(self, version: int | None = None) -> Snapshot:
        return load_snapshot(self.engine, version or self.current(), self.store)


def create_database(base_url: str, name: str) -> str:
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return url


def drop_database(base_url: str, name: str, attempts: int = 3) -> None:
    """Drop a bench database. ``WITH (FORCE)`` ends its sessions; a server that lost a backend meanwhile
    restarts them all and closes this connection too, so the drop is tried again on a new one."""
    for attempt in range(attempts):
        try:
            with psycopg.connect(base_url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            return
        except psycopg.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(2.0 * (attempt + 1))


def create_platform(base: Settings, base_url: str, name: str, strategy: str, scratch: Path, timeline,
                    until=None, seed: int = 0) -> Platform:
    """A fresh database loaded with the timeline's rows to ``until`` (default: the first 13 weeks)."""
    settings = base.model_copy(update={"database_url": SecretStr(create_database(base_url, name)),
                                       "artifacts_uri": str(scratch / "artifacts" / name)})
    store = open_store(settings)
    apply(store, settings.feast.repo_path)
    platform = Platform(strategy, settings, store, seed)
    if timeline.catalog is not None:
        with platform.engine.begin() as conn:
            write_batch(conn, timeline.catalog, "bench catalog")
    platform.load(timeline.batch(None, until or timeline.first_until))
    return platform


def base_model_path(name: str, scratch: Path) -> str:
    return str(build_tiny(scratch / "models" / "tiny")) if name == "tiny" else str(resolve(name))


@dataclass
class BenchRun:
    """What a benchmark run starts from: our settings and server, a tag and scratch folder of its own,
    and the encoder to use (``tiny`` built there)."""

    base: Settings
    base_url: str
    tag: str
    scratch: Path
    base_model: str


def bench_run(model: str) -> BenchRun:
    from freshrec.config import get_settings
    from freshrec.db import database_url

    base = get_settings()
    tag = f"{os.getpid()}_{int(time.time())}"
    scratch = base.home / "bench" / tag
    return BenchRun(base, database_url(), tag, scratch, base_model_path(model, scratch))


def dispose(platform: Platform, base_url: str) -> None:
    """Drop the platform's database (its connections first)."""
    get_engine(platform.settings).dispose()
    drop_database(base_url, make_url(platform.settings.database_url.get_secret_value()).database)
