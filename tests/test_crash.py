"""SIGKILL the updater at each crash point: nothing half-written is visible, and the next run completes.

The kills are real (the process SIGKILLs itself at a named point, see freshrec/faults.py): the
publish transaction dies with its connection, the advisory lock with its session, and the
artifact directory written before the commit is an orphan that the next run sweeps.
"""
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import fsspec
import sqlalchemy as sa

from freshrec.config import get_settings
from freshrec.db import get_engine
from freshrec.faults import CRASH_ENV, UPDATE_POINTS
from freshrec.registry.artifacts import database_folder
from freshrec.features import apply, open_store
from freshrec.ingest import online_retail_batch, write_batch
from freshrec.updater import run_update
from freshrec.training.args import GateArguments, TrainingArguments

from conftest import wait_for_killed_sessions

REPO = Path(__file__).resolve().parents[1]
STATE = """
SELECT (SELECT count(*) FROM model_versions) AS versions, (SELECT count(*) FROM watermarks) AS watermarks,
       (SELECT count(*) FROM item_embeddings) AS embeddings, (SELECT count(*) FROM deployments) AS deployments,
       (SELECT version FROM current_version) AS current,
       (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) AS advisory_locks,
       (SELECT coalesce(bool_and(consistent), true) FROM watermark_audit) AS audit_consistent
"""


def _load(path, **kw):
    with get_engine().begin() as conn:
        return write_batch(conn, online_retail_batch(path, **kw), str(path))


def _state() -> dict:
    with get_engine().connect() as conn:
        return dict(conn.execute(sa.text(STATE)).mappings().one())


def _own_root() -> str:
    """This database's folder under the artifacts root (each database sweeps only its own)."""
    with get_engine().connect() as conn:
        return database_folder(conn, get_settings().artifacts_root)


def _artifact_dirs() -> set[str]:
    fs, path = fsspec.core.url_to_fs(_own_root())
    return {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)} if fs.exists(path) else set()


def _uri_tail(version: int) -> str:
    with get_engine().connect() as conn:
        uri = conn.execute(sa.text("SELECT artifact_uri FROM model_versions WHERE version = :v"), {"v": version}).scalar()
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _update_process(tiny_model, crash_at=None):
    env = {**os.environ, CRASH_ENV: crash_at or ""}
    cmd = [sys.executable, "-m", "freshrec", "update", "--base-model", tiny_model, "--no-gate", "--epochs", "1",
           "--device", "cpu"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_sigkill_at_every_point_leaves_nothing_and_the_next_run_completes(module_db, retail_sample, tiny_model):
    _load(retail_sample, until=date(2010, 12, 31))
    apply(open_store(), get_settings().feast.repo_path)
    first = run_update(TrainingArguments(epochs=1, device="cpu"), GateArguments(enabled=False),
                       base_model=tiny_model)
    assert first.version == 1
    second_load = _load(retail_sample, since=date(2011, 1, 1))
    before, dirs_before = _state(), _artifact_dirs()
    # Another database's version beside ours: no sweep of this database may touch it.
    foreign = Path(get_settings().artifacts_root) / "another_database" / "0123abcd"
    foreign.mkdir(parents=True, exist_ok=True)
    (foreign / "manifest.json").write_text("{}")

    orphans: set[str] = set()
    for point in UPDATE_POINTS:
        proc = _update_process(tiny_model, crash_at=point)
        assert proc.returncode == -9, (point, proc.stdout, proc.stderr)
        wait_for_killed_sessions(get_engine())
        assert _state() == before, point  # no version, watermark, embedding or pointer move; lock released
        # Each run first sweeps the orphans of the runs before it.
        assert ("swept 1 orphaned" in proc.stderr) == bool(orphans), (point, proc.stderr)  # the updater's log
        orphans = _artifact_dirs() - dirs_before
        # The artifact is written before the commit: an orphan exactly when the kill came after it.
        assert len(orphans) == (point in ("artifact-written", "before-commit")), point

    proc = _update_process(tiny_model)
    assert proc.returncode == 0, proc.stderr
    assert "swept 1 orphaned" in proc.stderr and "version 2: promoted" in proc.stdout
    assert _artifact_dirs() - dirs_before == {_uri_tail(2)}
    assert (foreign / "manifest.json").exists()
    with get_engine().connect() as conn:
        row_count = conn.execute(sa.text("SELECT row_count FROM watermarks WHERE version = 2")).scalar()
        consumed = conn.execute(sa.text(
            "SELECT count(*), count(DISTINCT interaction_id) FROM version_consumed_rows WHERE version = 2")).one()
        total = conn.execute(sa.text("SELECT count(*) FROM interactions")).scalar()
    assert row_count == second_load.interactions_inserted
    assert tuple(consumed) == (total, total)
    assert _state()["audit_consistent"] is True
    # Each killed run left its run row "running"; the run that took the lock next marked it abandoned.
    with get_engine().connect() as conn:
        runs = [tuple(r) for r in conn.execute(sa.text("SELECT status, version FROM update_runs ORDER BY id"))]
    assert runs == [("created", 1)] + [("abandoned", None)] * len(UPDATE_POINTS) + [("created", 2)]
