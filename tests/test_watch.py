"""`freshrec update --watch` as a process: it backs off after failures, wakes on new rows, runs alone,
shows in `freshrec status`, and stops cleanly on SIGTERM."""
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from freshrec.config import get_settings
from freshrec.db import get_engine
from freshrec.features import apply, open_store
from freshrec.ingest import online_retail_batch, write_batch

REPO = Path(__file__).resolve().parents[1]


def _env():
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def _watch(base_model, *extra, log):
    cmd = ["freshrec", "update", "--watch", "--base-model", base_model, "--epochs", "1", "--no-gate",
           "--min-rows", "20", "--max-age", "2", "--poll", "1", *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT, text=True)


def _until(predicate, seconds=180):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def _versions():
    with get_engine().connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM model_versions")).scalar()


def _status():
    out = subprocess.run(["freshrec", "status", "--json"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def rows(module_db, retail_sample):
    with get_engine().begin() as conn:
        write_batch(conn, online_retail_batch(retail_sample, until=date(2010, 12, 31)), "sample")
    apply(open_store(), get_settings().feast.repo_path)
    return retail_sample


def test_rows_not_yet_due_set_the_wait_to_when_the_oldest_comes_due(rows):
    # PostgreSQL's extract(epoch ...) is numeric; the watcher's arithmetic needs floats.
    from freshrec.updater.args import WatchArguments
    from freshrec.updater.freshness import unseen
    from freshrec.updater.watch import _due, _wait

    with get_engine().connect() as conn:
        state = unseen(conn)
    assert state["rows_unseen"] > 0 and isinstance(state["oldest_unseen_seconds"], float)
    args = WatchArguments(min_rows=10**9, max_age=state["oldest_unseen_seconds"] + 30, poll=60)
    assert not _due(state, args) and 29 <= _wait(state, args, None) <= 30


def test_after_a_deferral_the_next_try_waits_for_a_tenth_more_rows_or_min_rows_more():
    from freshrec.updater.args import WatchArguments
    from freshrec.updater.watch import _due

    args = WatchArguments(min_rows=100, max_age=0, poll=60)
    state = lambda rows: {"rows_unseen": rows, "oldest_unseen_seconds": 3600.0}  # noqa: E731 - a fixture value
    assert _due(state(50), args)  # old enough: due without a deferral
    assert not _due(state(51), args, deferred_at=50) and not _due(state(54), args, deferred_at=50)
    assert _due(state(55), args, deferred_at=50)  # a tenth more
    assert not _due(state(5_050), args, deferred_at=5_000) and _due(state(5_100), args, deferred_at=5_000)  # min_rows more
    assert _due(state(2), args, deferred_at=1)  # at least one row more, however few


def test_a_failing_update_backs_off_with_growing_delays(rows, tmp_path):
    log = (tmp_path / "watch.log").open("w+")
    watcher = _watch("/no/such/model", "--backoff", "1", log=log)
    try:
        assert _until(lambda: "2 in a row" in (tmp_path / "watch.log").read_text(), 120)
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=60)
    text = (tmp_path / "watch.log").read_text()
    assert "update failed (1 in a row); next try in 1 s" in text and "update failed (2 in a row); next try in 2 s" in text
    assert _versions() == 0
    with get_engine().connect() as conn:
        failed = conn.execute(sa.text("SELECT count(*) FROM update_runs WHERE status = 'failed' AND trigger = 'watch'")).scalar()
    assert failed >= 2


def test_it_wakes_on_new_rows_runs_alone_reports_and_stops_on_sigterm(rows, tiny_model, tmp_path):
    log = (tmp_path / "watch.log").open("w+")
    watcher = _watch(tiny_model, log=log)
    try:
        assert _until(lambda: _versions() == 1), (tmp_path / "watch.log").read_text()
        second = subprocess.run(["freshrec", "update", "--watch", "--base-model", tiny_model], cwd=REPO, env=_env(),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 3 and "another watcher is running" in second.stderr

        with get_engine().begin() as conn:  # new rows: NOTIFY wakes the watcher, and 2 s later it updates
            inserted = write_batch(conn, online_retail_batch(rows, since=date(2011, 1, 1)), "sample").interactions_inserted
        assert _until(lambda: _versions() == 2), (tmp_path / "watch.log").read_text()
        state = _status()
        assert state["watcher_running"] is True and state["version"] == 2
        assert state["rows_behind"] == 0 and state["last_update"]["status"] == "created"
        with get_engine().connect() as conn:
            assert conn.execute(sa.text("SELECT row_count FROM watermarks WHERE version = 2")).scalar() == inserted
    finally:
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(timeout=120) == 0
    assert _status()["watcher_running"] is False


def test_while_another_update_holds_the_lock_it_waits_a_poll_not_a_spin(rows, tiny_model, tmp_path):
    from freshrec.updater import UPDATE_LOCK

    with get_engine().begin() as conn:  # rows for a third version, which the watcher cannot make yet
        conn.execute(sa.text(
            "INSERT INTO interactions (event_key, user_id, item_id, event_type, quantity, event_time) "
            "SELECT event_key || '-again', user_id, item_id, event_type, quantity, event_time + interval '60 days' "
            "FROM interactions WHERE event_time >= '2011-01-01'"))
    log, before = (tmp_path / "watch.log").open("w+"), _versions()
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as holder:
        holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": UPDATE_LOCK})
        watcher = _watch(tiny_model, log=log)
        try:
            assert _until(lambda: "watching:" in (tmp_path / "watch.log").read_text(), 120)
            time.sleep(6)
        finally:
            holder.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": UPDATE_LOCK})
        try:
            assert _until(lambda: _versions() == before + 1), (tmp_path / "watch.log").read_text()
        finally:
            watcher.send_signal(signal.SIGTERM)
            watcher.wait(timeout=120)
    with get_engine().connect() as conn:
        locked = conn.execute(sa.text("SELECT count(*) FROM update_runs WHERE status = 'locked'")).scalar()
    # about one try per poll (1 s) for the 6 s the lock was held, not a busy loop
    assert 1 <= locked <= 10
    text = (tmp_path / "watch.log").read_text()
    assert "SIGTERM: finishing the update in progress, then exiting" in text and "watcher stopped after 1 updates" in text  # this watcher made one
    # standard logging: timestamp, level, logger
    assert any(line[:4].isdigit() and " INFO freshrec.watch: " in line for line in text.splitlines())


def test_it_reconnects_when_the_database_restarts_under_it(retail_sample, tiny_model, tmp_path):
    """The embedded server of its own home, stopped and started again while the watcher runs."""
    env = {k: v for k, v in _env().items() if k != "FRESHREC_DATABASE_URL"}
    env["FRESHREC_HOME"] = str(tmp_path / "home")

    def cli(*args):
        proc = subprocess.run(["freshrec", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc.stdout

    cli("db", "upgrade")
    cli("load", "online-retail", str(retail_sample), "--until", "2010-12-31")
    cli("features", "apply")
    url = cli("db", "url").strip()
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"), pool_pre_ping=True)

    def versions():
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text("SELECT count(*) FROM model_versions")).scalar()
        except sa.exc.OperationalError:
            return -1

    log_path = tmp_path / "watch.log"
    cmd = ["freshrec", "update", "--watch", "--base-model", tiny_model, "--epochs", "1", "--no-gate",
           "--min-rows", "1", "--max-age", "0", "--poll", "1", "--backoff", "1"]
    watcher = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT, text=True)
    try:
        assert _until(lambda: versions() == 1), log_path.read_text()
        cli("db", "stop")
        assert _until(lambda: "lost the database" in log_path.read_text(), 60), log_path.read_text()
        cli("db", "start")
        cli("load", "online-retail", str(retail_sample), "--since", "2011-01-01")
        assert _until(lambda: versions() == 2), log_path.read_text()
        assert "reconnected to the database" in log_path.read_text()
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=120)
        engine.dispose()
        subprocess.run(["freshrec", "db", "stop"], cwd=REPO, env=env, capture_output=True, timeout=60)
    assert watcher.returncode == 0
