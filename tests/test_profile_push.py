"""An online profile never goes back in time: two processes push one user's profile, the older read
lined up to write last (the race that left the older profile online); a materialization that wrote
the older profile while a newer one committed pushes the newer one again; a push never overwrites a
newer online row."""
import os
import subprocess
import sys
from datetime import datetime, timezone

import pandas as pd
import sqlalchemy as sa

from freshrec.config import get_settings
from freshrec.db import get_engine
from freshrec.faults import PAUSE_ENV
from freshrec.features import apply, online_user_texts, open_store, push_user_profiles
from freshrec.ingest import interactions_frame_batch, write_batch

MATERIALIZE = "from freshrec.features import materialize, open_store; materialize(open_store())"
PUSH = ("from freshrec.db import get_engine; from freshrec.features import open_store, push_user_profiles; "
        "store = open_store(); conn = get_engine().connect(); print(push_user_profiles(store, conn, ['pushed-twice']))")


def _event(key: str, when: str) -> None:
    frame = pd.DataFrame([{"event_key": key, "user_id": "pushed-twice", "item_id": "p-item", "event_type": "purchase",
                           "event_time": datetime.fromisoformat(when).replace(tzinfo=timezone.utc), "quantity": 1,
                           "query": None}])
    with get_engine().begin() as conn:
        write_batch(conn, interactions_frame_batch(frame, "test"), "test")


def test_two_processes_pushing_one_user_leave_the_newest_profile_online(module_db):
    with get_engine().begin() as conn:
        conn.execute(sa.text("INSERT INTO items (item_id, title, valid_from) VALUES ('p-item', 'a pen', '2000-01-01')"))
        conn.execute(sa.text("INSERT INTO item_texts (item_id, title, valid_from) VALUES ('p-item', 'a pen', '2000-01-01')"))
    apply(open_store(), get_settings().feast.repo_path)
    _event("first", "2011-01-01T10:00:00")
    env = {**os.environ, "FRESHREC_DATABASE_URL": module_db}
    slow = subprocess.Popen([sys.executable, "-c", PUSH], env={**env, PAUSE_ENV: "profile-push=4"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in slow.stderr:  # it has read the newest profile (the first event's) and waits to write it
        if "paused at profile-push" in line:
            break
    _event("second", "2011-01-02T10:00:00")  # a newer profile commits meanwhile ...
    fast = subprocess.run([sys.executable, "-c", PUSH], env=env, capture_output=True, text=True, timeout=120)
    slow.wait(timeout=120)  # ... and the slow push writes last
    assert fast.returncode == 0 and slow.returncode == 0, fast.stderr
    with get_engine().connect() as conn:
        newest = conn.execute(sa.text("SELECT profile_text, n_events FROM user_profiles WHERE user_id = 'pushed-twice' "
                                      "ORDER BY valid_from DESC LIMIT 1")).one()
    assert newest.n_events == 2
    assert online_user_texts(open_store(), ["pushed-twice"])["pushed-twice"][0] == newest.profile_text


def _paused(code: str, point: str, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], env={**env, PAUSE_ENV: f"{point}=4"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if f"paused at {point}" in line:
            return proc
    raise AssertionError(f"never reached {point}: {proc.wait()}")


def test_a_materialization_pushes_again_the_profiles_that_changed_while_it_wrote(module_db):
    env = {**os.environ, "FRESHREC_DATABASE_URL": module_db}
    _event("third", "2011-01-03T10:00:00")
    slow = _paused(MATERIALIZE, "materialize-written", env)  # Feast has written the profile it read ...
    _event("fourth", "2011-01-04T10:00:00")  # ... a newer one commits, and no API process pushes it
    slow.wait(timeout=120)
    assert slow.returncode == 0
    with get_engine().connect() as conn:
        newest = conn.execute(sa.text("SELECT profile_text, n_events FROM user_profiles WHERE user_id = 'pushed-twice' "
                                      "ORDER BY valid_from DESC LIMIT 1")).one()
    assert newest.n_events == 4
    assert online_user_texts(open_store(), ["pushed-twice"])["pushed-twice"][0] == newest.profile_text


def test_a_push_never_overwrites_a_newer_online_row(module_db):
    store = open_store()
    later = pd.DataFrame([{"user_id": "pushed-twice", "user_text": "from the future", "n_events": 9, "n_baskets": 9,
                           "valid_from": datetime(2030, 1, 1, tzinfo=timezone.utc)}])
    store.write_to_online_store("user_text", later)
    with get_engine().connect() as conn:
        assert push_user_profiles(store, conn, ["pushed-twice"]) == 0
    assert online_user_texts(store, ["pushed-twice"])["pushed-twice"][0] == "from the future"
