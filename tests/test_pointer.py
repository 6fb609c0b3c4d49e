"""The serving pointer: compare-and-set at publish, rollbacks that walk the history, and `freshrec history`."""
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from freshrec import faults
from freshrec.db import get_engine
from freshrec.features import apply, materialize, open_store
from freshrec.config import get_settings
from freshrec.ingest import online_retail_batch, write_batch
from freshrec.registry import VersionError, promote, rollback
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.updater import run_update

REPO = Path(__file__).resolve().parents[1]


def _current():
    with get_engine().connect() as conn:
        return conn.execute(sa.text("SELECT version FROM current_version")).scalar()


def _load(path, **kw):
    with get_engine().begin() as conn:
        write_batch(conn, online_retail_batch(path, **kw), str(path))
    materialize(open_store())


def _update(tiny_model):
    return run_update(TrainingArguments(epochs=1, learning_rate=1e-2), GateArguments(enabled=False),
                      base_model=tiny_model)


@pytest.fixture(scope="module")
def scenario(module_db, retail_sample, tiny_model):
    """Versions 1 and 2 promoted; version 3 trained while an operator rolled back; then promotions
    to 2 and 3 and rollbacks until there is nothing earlier. Each test checks one part of it."""
    apply(open_store(), get_settings().feast.repo_path)
    _load(retail_sample, until=date(2010, 12, 2))
    assert _update(tiny_model).version == 1
    _load(retail_sample, since=date(2010, 12, 3), until=date(2010, 12, 31))
    assert _update(tiny_model).version == 2
    _load(retail_sample, since=date(2011, 1, 1))
    # The operator rolls back while version 3 trains from version 2 (a fail-point hook: exactly then).
    faults.hooks["training"] = lambda: rollback(get_engine(), actor="operator", reason="bad week")
    third = _update(tiny_model)
    after_third = _current()
    with get_engine().connect() as conn:  # as published, before the promotions below change it
        third_row = conn.execute(sa.text("SELECT status, metrics FROM model_versions WHERE version = 3")).one()
    promote(get_engine(), 2, reason="re-promote")
    promote(get_engine(), 3, reason="serve the candidate")
    # promotions in effect now: 1, 2, 3 (the first 2 was rolled back)
    walked = [rollback(get_engine()) for _ in range(2)]
    with pytest.raises(VersionError, match="no earlier version"):
        rollback(get_engine())
    return {"third": third, "third_row": third_row, "after_third": after_third, "walked": walked}


def test_a_rollback_while_an_update_trains_is_not_undone_by_its_publish(scenario):
    third = scenario["third"]
    assert third.version == 3 and not third.promoted and "candidate" in third.message
    assert scenario["after_third"] == 1  # the rollback stands
    status, metrics = scenario["third_row"]
    assert status == "candidate"
    assert metrics["pointer"] == {"moved_since_cut": True, "started_from": 2, "found": 1}


def test_rollbacks_walk_back_the_history_one_step_each(scenario):
    assert scenario["walked"] == [2, 1] and _current() == 1  # never 3, 2, 3, ...


def test_history_cli_shows_every_move(scenario):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = subprocess.run(["freshrec", "history", "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    moves = json.loads(out.stdout)
    assert [(m["action"], m["version"]) for m in moves] == [
        ("promote", 1), ("promote", 2), ("rollback", 1), ("promote", 2), ("promote", 3), ("rollback", 2),
        ("rollback", 1)]
    assert moves[2]["actor"] == "operator" and moves[2]["reason"] == "bad week"


def test_two_concurrent_promotions_of_one_version_move_the_pointer_once(scenario):
    """Both wait on the pointer's lock; the one that follows finds the version already current."""
    import threading
    import time

    before = _current()
    target = 3 if before != 3 else 2
    outcomes: list[str] = []

    def move():
        try:
            promote(get_engine(), target, reason="race")
            outcomes.append("moved")
        except VersionError as err:
            outcomes.append(str(err))

    with get_engine().connect() as holder:
        tx = holder.begin()
        holder.execute(sa.text("LOCK TABLE deployments IN SHARE ROW EXCLUSIVE MODE"))
        threads = [threading.Thread(target=move) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # both are waiting on the lock now
        tx.rollback()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["moved", f"version {target} is already current"]
    with get_engine().connect() as conn:
        moves = conn.execute(sa.text("SELECT count(*) FROM deployments WHERE reason = 'race'")).scalar()
    assert moves == 1
