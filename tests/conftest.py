"""Fixtures: one embedded PostgreSQL per test session, a migrated template database cloned per
module, and a per-test transaction that rolls back. No mocks: real PostgreSQL, Feast and models.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pandas as pd
import psycopg
import pytest

# Settings are read from the environment: point FRESHREC_HOME at a private place before any import.
_HOME = Path(os.environ.get("FRESHREC_TEST_HOME") or tempfile.mkdtemp(prefix="freshrec-test-"))
os.environ["FRESHREC_HOME"] = str(_HOME)
os.environ.pop("FRESHREC_DATABASE_URL", None)

from freshrec.config import get_settings  # noqa: E402
from freshrec.db import embedded, upgrade  # noqa: E402
from freshrec.ingest import BUNDLED_ONLINE_RETAIL  # noqa: E402

TEMPLATE = "freshrec_template"


def _admin_url(server: embedded.EmbeddedServer) -> str:
    return f"postgresql://postgres@/postgres?host={server.socket_dir}"


def _db_url(server: embedded.EmbeddedServer, name: str) -> str:
    return f"postgresql://postgres@/{name}?host={server.socket_dir}"


@pytest.fixture(scope="session")
def server() -> embedded.EmbeddedServer:
    """The session's embedded PostgreSQL; stopped, and its home (about 1 GB) removed, at the end,
    unless FRESHREC_TEST_HOME asked to keep them."""
    started = embedded.start(_HOME)
    yield started
    if not os.environ.get("FRESHREC_TEST_HOME"):
        embedded.stop(_HOME)
        shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def template_url(server) -> str:
    """A database migrated by `alembic upgrade head`; each module clones it."""
    with psycopg.connect(_admin_url(server), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    url = _db_url(server, TEMPLATE)
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def make_database(server, template_url):
    """Factory: a fresh migrated database, and FRESHREC_DATABASE_URL pointing at it."""

    def make(prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(_admin_url(server), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        url = _db_url(server, name)
        use_database(url)
        return url

    return make


def use_database(url: str) -> None:
    os.environ["FRESHREC_DATABASE_URL"] = url
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def module_db(make_database) -> str:
    """A database of the module's own, for tests whose writes must be committed (Feast, updater)."""
    url = make_database("m")
    yield url
    use_database(url)


@pytest.fixture(scope="session")
def unit_url(make_database) -> str:
    return make_database("unit")


@pytest.fixture
def conn(unit_url):
    """A connection inside a transaction that is rolled back after the test."""
    from freshrec.db import get_engine

    use_database(unit_url)
    engine = get_engine()
    with engine.connect() as connection:
        outer = connection.begin()
        yield connection
        outer.rollback()


@pytest.fixture(scope="session")
def retail_sample(tmp_path_factory) -> Path:
    """Real UCI rows: three early days plus two in January, as Parquet (UCI column names)."""
    frame = pd.read_parquet(BUNDLED_ONLINE_RETAIL)
    days = frame["InvoiceDate"].dt.strftime("%Y-%m-%d")
    sample = frame[days.isin(["2010-12-01", "2010-12-02", "2010-12-03", "2011-01-04", "2011-01-05"])]
    path = tmp_path_factory.mktemp("data") / "retail_sample.parquet"
    sample.to_parquet(path, index=False)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A 2-layer, 64-wide BERT with MiniLM's vocabulary, saved like any Hugging Face model."""
    from freshrec.models.base import build_tiny

    return str(build_tiny(tmp_path_factory.mktemp("models") / "tiny"))


def two_versions(make_database, name: str, retail_sample: Path, tiny_model: str):
    """A new database ``name`` with two versions (tiny model) of the real sample, December then January,
    materialized; returns its URL and the Feast store on it."""
    from datetime import date

    from freshrec.db import get_engine
    from freshrec.features import apply, materialize, open_store
    from freshrec.ingest import online_retail_batch, write_batch
    from freshrec.training.args import GateArguments, TrainingArguments
    from freshrec.updater import run_update

    url = make_database(name)
    store = open_store()
    apply(store, get_settings().feast.repo_path)
    for since, until in ((None, date(2010, 12, 31)), (date(2011, 1, 1), None)):
        with get_engine().begin() as conn:
            write_batch(conn, online_retail_batch(retail_sample, since=since, until=until), "sample")
        materialize(store)
        run_update(TrainingArguments(epochs=1, learning_rate=1e-2, device="cpu"), GateArguments(enabled=False),
                   base_model=tiny_model)
    return url, store


@pytest.fixture(scope="session")
def served_url(make_database, retail_sample, tiny_model) -> str:
    """A database with two versions (tiny model) of the real sample, materialized: what the API serves."""
    return two_versions(make_database, "api", retail_sample, tiny_model)[0]


@pytest.fixture
def served_db(served_url) -> str:
    use_database(served_url)
    return served_url


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def api_server(env: dict | None = None, ready: str = "/healthz"):
    """`freshrec serve` as its own process on a free port; yields its base URL once ``ready`` answers 200."""
    import sys

    from freshrec.bench.processes import spawn, wait_ready

    port = free_port()
    full_env = {**os.environ, **(env or {}), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    log = Path(tempfile.mkdtemp()) / "serve.log"
    proc = spawn(["freshrec", "serve", "--port", str(port)], full_env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url, ready, timeout=120, proc=proc)
        except RuntimeError as err:
            raise RuntimeError(f"{err}:\n{log.read_text()}") from None
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_bench(tmp_path: Path, *args: str, timeout: float) -> tuple[Path, str]:
    """`freshrec bench ARGS --out DIR` as its own process on a fresh home (it migrates its own
    database, and its embedded server is stopped after); returns DIR and what it printed."""
    import subprocess
    import sys

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("FRESHREC_DATABASE_URL", None)
    env["FRESHREC_HOME"] = str(tmp_path / "home")
    repo, out = Path(__file__).resolve().parents[1], tmp_path / "out"
    proc = subprocess.run(["freshrec", "bench", *args, "--out", str(out)], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=timeout)
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    finally:
        subprocess.run(["freshrec", "db", "stop"], cwd=repo, env=env, capture_output=True, timeout=60)
    return out, proc.stdout


def wait_for_killed_sessions(engine, timeout_s: float = 15.0) -> None:
    """Wait until no session holds an advisory lock on this database, after a process was SIGKILLed.

    A killed client's backend lives until the server notices the closed socket, and its advisory
    locks with it; on a loaded machine that takes a moment (CI once saw the lock still held when the
    next query ran). The locks must still be gone within the timeout, or this fails.
    """
    import time

    import sqlalchemy as sa

    query = sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
    deadline = time.monotonic() + timeout_s
    while True:
        with engine.connect() as conn:
            held = conn.execute(query).scalar()
        if not held:
            return
        assert time.monotonic() < deadline, f"{held} advisory lock(s) still held {timeout_s:.0f} s after the kill"
        time.sleep(0.2)
