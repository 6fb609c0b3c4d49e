"""Erasure: a customer's rows leave the data, Feast's online store and every live version, provably.

A chain of two versions (tiny model) on the real sample: version 1 on December, version 2 on January.
A customer first seen in January is in version 2 only; one seen in December is in every version.
The tests run in order on one database: each erasure builds on the chain the previous one left.
"""
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from freshrec.config import get_settings
from freshrec.db import get_engine
from freshrec.erasure import forget, proof_rows, run_due
from freshrec.erasure.replay import _plan, choose_serving
from freshrec.faults import CRASH_ENV
from freshrec.features import online_user_texts
from freshrec.ingest import interactions_frame_batch, write_batch
from freshrec.models.state_cache import text_hash
from freshrec.registry import VersionError, promote, rollback

from conftest import api_server, two_versions, wait_for_killed_sessions

FRESHREC = str(Path(sys.executable).parent / "freshrec")
ADMIN = {"Authorization": f"Bearer {get_settings().api_token.get_secret_value()}"}


@pytest.fixture(scope="module")
def chain(make_database, retail_sample, tiny_model):
    url, store = two_versions(make_database, "erase", retail_sample, tiny_model)
    with get_engine().connect() as conn:
        first_seen = dict(conn.execute(sa.text(
            "SELECT user_id, min(event_time) FROM interactions GROUP BY user_id ORDER BY count(*) DESC, user_id")).all())
    january = [u for u, t in first_seen.items() if t >= datetime(2011, 1, 1, tzinfo=timezone.utc)]
    december = [u for u, t in first_seen.items() if t < datetime(2011, 1, 1, tzinfo=timezone.utc)]
    return {"url": url, "store": store, "sample": retail_sample, "new": january[0], "old": december[0],
            "another": january[1], "tiny_model": tiny_model}


def _scalar(sql: str, **params):
    with get_engine().connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([FRESHREC, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def test_lineage_by_user_names_the_versions_that_learned_from_them(chain):
    import json

    for user, versions in ((chain["new"], [2]), (chain["old"], [1, 2])):
        out = _cli("lineage", "--user", user, "--json")
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)["versions"]
        assert [r["version"] for r in rows] == versions
        assert rows[0]["rows_direct"] > 0 and all(r["rows"] > 0 for r in rows)


def test_a_crash_in_the_data_transaction_leaves_the_customer_as_they_were(chain):
    user = chain["old"]
    before = _scalar("SELECT count(*) FROM interactions WHERE user_id = :u", u=user)
    stats = _scalar("SELECT (count(*), sum(events_28d), sum(buyers))::text FROM item_daily_stats")
    with get_engine().connect() as conn:
        texts = [r[0] for r in conn.execute(sa.text("SELECT profile_text FROM user_profiles WHERE user_id = :u"), {"u": user})]
    states = _scalar("SELECT count(*) FROM encoder_states WHERE text_sha256 = ANY(:h)", h=[text_hash(t) for t in texts])
    out = _cli("forget", user, "--defer", env={CRASH_ENV: "erasure-rows-deleted"})
    assert out.returncode == -9, out.stderr  # killed after the deletes, before the commit
    wait_for_killed_sessions(get_engine())
    assert _scalar("SELECT count(*) FROM interactions WHERE user_id = :u", u=user) == before > 0
    assert _scalar("SELECT count(*) FROM user_profiles WHERE user_id = :u", u=user) > 0
    assert _scalar("SELECT count(*) FROM erasures") == _scalar("SELECT count(*) FROM tombstones") == 0
    assert _scalar("SELECT (count(*), sum(events_28d), sum(buyers))::text FROM item_daily_stats") == stats
    assert _scalar("SELECT count(*) FROM encoder_states WHERE text_sha256 = ANY(:h)",
                   h=[text_hash(t) for t in texts]) == states > 0  # the updater warmed their profiles


def test_forget_then_replay_leaves_no_live_version_holding_their_rows(chain):
    engine, store, user = get_engine(), chain["store"], chain["new"]
    rows = _scalar("SELECT count(*) FROM interactions WHERE user_id = :u", u=user)
    assert online_user_texts(store, [user])[user][0] is not None
    request = forget(engine, get_settings(), [user], store=store)
    assert request.versions == [2] and request.rows == rows and request.serving == 2
    # The data is gone at once, tombstoned, and offline.
    for table in ("interactions", "user_profiles", "users"):
        assert _scalar(f"SELECT count(*) FROM {table} WHERE user_id = :u", u=user) == 0
    assert _scalar("SELECT count(*) FROM tombstones WHERE erasure_id = :e", e=request.erasure_id) == rows + 1
    assert online_user_texts(store, [user])[user][0] is None
    # Before the replay the proof finds the serving version: it cannot pass by construction.
    with engine.connect() as conn:
        assert {r["version"] for r in proof_rows(conn)} == {2}

    outcome = run_due(force=True, store=store)
    assert outcome.status == "done" and outcome.replaced == {2: 3} and outcome.serving == 3
    with engine.connect() as conn:
        assert proof_rows(conn) == []
        replayed, erased = (conn.execute(sa.text(
            "SELECT v.parent_version, v.status, v.replaced_by, w.xid_from::text, w.xid_to::text, w.row_count, "
            "w.excludes_erasures, v.artifact_uri FROM model_versions v JOIN watermarks w USING (version) "
            "WHERE version = :v"), {"v": v}).one() for v in (3, 2))
        assert conn.execute(sa.text("SELECT version FROM current_version")).scalar() == 3
        for partition in ("item_embeddings_v2", "copurchase_counts_v2"):  # the erased version's own tables
            assert conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": partition}).scalar() is None
        assert conn.execute(sa.text("SELECT to_regclass('copurchase_counts_v3')")).scalar() is not None
        assert conn.execute(sa.text("SELECT count(*) FROM item_neighbours WHERE version = 2")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM copurchase_counts WHERE version = 2")).scalar() == 0
        state = conn.execute(sa.text("SELECT state, replay FROM erasures WHERE id = :e"), {"e": request.erasure_id}).one()
    # The same range as the version it replaced, less the erased rows; from the same parent.
    assert replayed.parent_version == 1 and replayed.status == "promoted"
    assert (replayed.xid_from, replayed.xid_to) == (erased.xid_from, erased.xid_to)
    assert replayed.row_count == erased.row_count - rows and replayed.excludes_erasures == [request.erasure_id]
    assert erased.status == "erased" and erased.replaced_by == 3 and not Path(erased.artifact_uri).exists()
    assert state.state == "done" and state.replay["choice"] == "chain" and state.replay["replaced"] == {"2": 3}
    with pytest.raises(VersionError, match="erased"):
        promote(engine, 2)


def test_a_reload_skips_the_erased_rows_and_new_activity_is_kept(chain):
    user = chain["new"]
    erased = _scalar("SELECT rows FROM erasures ORDER BY id DESC LIMIT 1")
    out = _cli("load", "online-retail", str(chain["sample"]), "--since", "2011-01-01")
    assert out.returncode == 0, out.stderr
    assert f"rows_tombstoned: {erased:,}" in " ".join(out.stdout.split())
    assert _scalar("SELECT count(*) FROM interactions WHERE user_id = :u", u=user) == 0
    assert _scalar("SELECT count(*) FROM users WHERE user_id = :u", u=user) == 0
    item = _scalar("SELECT min(item_id) FROM items")
    frame = pd.DataFrame([{"event_key": "after-the-erasure", "user_id": user, "item_id": item, "event_type": "purchase",
                           "event_time": datetime(2011, 1, 6, tzinfo=timezone.utc), "quantity": 1, "query": None}])
    with get_engine().begin() as conn:
        summary = write_batch(conn, interactions_frame_batch(frame, "test"), "test")
    assert summary.interactions_inserted == 1 and summary.rows_tombstoned == 0
    assert _scalar("SELECT count(*) FROM users WHERE user_id = :u", u=user) == 1


def test_forget_over_http_and_the_running_api_swaps_to_the_replay(chain):
    user, store = chain["old"], chain["store"]
    with api_server({"FRESHREC_DATABASE_URL": chain["url"]}, ready="/readyz") as url:
        assert httpx.delete(f"{url}/v1/users/{user}").status_code == 401
        before = httpx.get(f"{url}/v1/users/{user}/recommendations").json()
        assert before["strategy"] == "personal" and before["version"] == 3
        answer = httpx.delete(f"{url}/v1/users/{user}", headers=ADMIN, timeout=60)
        assert answer.status_code == 202, answer.text
        request = answer.json()
        assert request["versions"] == [1, 3] and request["state"] == "pending" and request["serving"] == 3
        pending = httpx.get(f"{url}/v1/erasures/{request['erasure_id']}", headers=ADMIN).json()
        assert pending["state"] == "pending" and {r["version"] for r in pending["proof"]} == {1, 3}

        # The customer was in the first version: nothing clean to start from; chain or fresh root.
        outcome = run_due(force=True, store=store)
        assert outcome.status == "done" and set(outcome.replaced) == {1, 3} and outcome.serving not in (1, 3)
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/readyz").json()["version"] != outcome.serving:
            assert time.monotonic() < deadline, "the API never swapped to the replayed version"
            time.sleep(0.5)
        after = httpx.get(f"{url}/v1/users/{user}/recommendations").json()
        assert after["strategy"] == "popular" and after["version"] == outcome.serving  # cold start
        done = httpx.get(f"{url}/v1/erasures/{request['erasure_id']}", headers=ADMIN).json()
        assert done["state"] == "done" and done["proof"] == [] and done["serving_version"] == outcome.serving
        again = httpx.delete(f"{url}/v1/users/{user}", headers=ADMIN)
        assert again.status_code == 404 and "already erased" in again.json()["detail"]
    with pytest.raises(VersionError):  # every earlier version learned from an erased customer
        rollback(get_engine())
    out = _cli("erasures", "--proof")
    assert out.returncode == 0 and "proof holds" in out.stdout


def test_a_replay_killed_before_it_retires_anything_is_taken_up_again(chain):
    user = chain["another"]
    head = _scalar("SELECT version FROM current_version")
    assert _cli("forget", user, "--now", "--defer").returncode == 0  # a clean version (if any) serves at once
    erasure = _scalar("SELECT max(id) FROM erasures")
    assert _scalar("SELECT tainted_head FROM erasures WHERE id = :e", e=erasure) == head
    pointer = _scalar("SELECT version FROM current_version")
    erased = _scalar("SELECT count(*) FROM model_versions WHERE status = 'erased'")
    out = _cli("erasures", "--run", "--all", env={CRASH_ENV: "erasure-retire"})
    assert out.returncode == -9, out.stderr  # killed in the retiring transaction, after the replay published
    wait_for_killed_sessions(get_engine())
    assert _scalar("SELECT state FROM erasures WHERE id = :e", e=erasure) == "replaying"
    assert _scalar("SELECT version FROM current_version") == pointer  # the pointer did not move
    assert _scalar("SELECT count(*) FROM model_versions WHERE status = 'erased'") == erased
    with get_engine().connect() as conn:
        assert head in {r["version"] for r in proof_rows(conn, [erasure])}

    out = _cli("erasures", "--run")  # no --all: an abandoned replay is due at once, deadline or not
    assert out.returncode == 0, out.stderr
    replay = _scalar("SELECT replay FROM erasures WHERE id = :e AND state = 'done'", e=erasure)
    # Even though `--now` had moved the pointer off it, the chain that served is trained again.
    assert replay["versions_trained"] >= 1
    serving = _scalar("SELECT version FROM current_version")
    assert _scalar("SELECT replaced_by FROM model_versions WHERE version = :v AND status = 'erased'", v=head) == serving
    with get_engine().connect() as conn:
        assert proof_rows(conn) == []
        assert conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f"item_embeddings_v{head}"}).scalar() is None


def test_the_readmes_erasure_recipes_run_in_psql(chain):
    """The SQL of the README's Erasure section, as a reader pastes it: the proof prints nothing now,
    the erasures' list one line per request."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Erasure (the right to be forgotten)")[1].split("\n## ")[0]
    recipes = re.findall(r"```sql\n(.*?)```", section, re.S)
    assert len(recipes) == 2
    printed = []
    for sql in recipes:
        out = subprocess.run(["psql", chain["url"], "-v", "ON_ERROR_STOP=1", "-Atc", sql],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (sql, out.stderr)
        printed.append(out.stdout.strip().splitlines())
    proof, erasures = printed
    assert proof == [] and len(erasures) == _scalar("SELECT count(*) FROM erasures") >= 3
    assert all("|done|" in line for line in erasures)


def _purchases(user: str, days: tuple[int, ...]) -> None:
    """A new customer's baskets in January 2011, of the first six items."""
    with get_engine().begin() as conn:
        items = [r[0] for r in conn.execute(sa.text("SELECT item_id FROM items ORDER BY item_id LIMIT 6"))]
        frame = pd.DataFrame([{"event_key": f"{user}-{day}-{item}", "user_id": user, "item_id": item,
                               "event_type": "purchase", "event_time": datetime(2011, 1, day, 12, tzinfo=timezone.utc),
                               "quantity": 1, "query": None} for day in days for item in items])
        write_batch(conn, interactions_frame_batch(frame, "test"), "test")


def test_a_version_that_learned_from_a_customer_erased_now_while_it_trained_does_not_serve(chain):
    """``forget --now`` promises that no version holding the customer serves. An update whose cut
    held their rows, erased while it trained (a fail-point hook: exactly then), publishes a
    candidate that cannot be promoted; an update cut after the erasure is promoted as usual; the
    replay retires the first."""
    from freshrec import faults
    from freshrec.training.args import GateArguments, TrainingArguments
    from freshrec.updater import run_update

    engine, store = get_engine(), chain["store"]

    def update():
        return run_update(TrainingArguments(epochs=1, learning_rate=1e-2, device="cpu"), GateArguments(enabled=False),
                          base_model=chain["tiny_model"])

    serving = _scalar("SELECT version FROM current_version")
    _purchases("late-customer", (7, 8))
    requests = []
    faults.hooks["artifact-written"] = lambda: requests.append(
        forget(engine, get_settings(), ["late-customer"], now=True, store=store))
    try:
        held = update()
    finally:
        faults.hooks.pop("artifact-written", None)
    (request,) = requests
    assert request.serving == serving and request.versions == []  # nothing live had learned from them yet
    assert held.version is not None and not held.promoted and "erased with `now`" in held.message
    assert _scalar("SELECT version FROM current_version") == serving
    assert _scalar("SELECT status FROM model_versions WHERE version = :v", v=held.version) == "candidate"
    metrics = _scalar("SELECT metrics FROM model_versions WHERE version = :v", v=held.version)
    assert metrics["erased_since_cut"] == [request.erasure_id] and "pointer" not in metrics
    with pytest.raises(VersionError, match="`now`"):
        promote(engine, held.version)

    # Cut after the erasure committed: it never held the rows, and serves as any update does.
    _purchases("later-customer", (9,))
    clean = update()
    assert clean.promoted and _scalar("SELECT version FROM current_version") == clean.version

    # The proof names both (their watermarks span the erased transactions); the replay retires the held
    # one and trains the serving one again.
    with engine.connect() as conn:
        assert {r["version"] for r in proof_rows(conn, [request.erasure_id])} == {held.version, clean.version}
    replay = run_due(force=True, store=store)
    assert replay.status == "done" and replay.replaced[held.version] is None
    assert replay.serving == replay.replaced[clean.version] == _scalar("SELECT version FROM current_version")
    with engine.connect() as conn:
        assert proof_rows(conn) == []
    with pytest.raises(VersionError, match="erased"):
        promote(engine, held.version)


def test_a_now_erasure_and_a_publish_never_interleave(chain):
    """While ``forget --now``'s transaction is open (a hook at its last step, inside it), a publish
    cannot take the deployments lock: it would wait for the commit, then see the erasure. An erasure
    without ``now`` does not hold publishes up."""
    from freshrec import faults

    engine, store = get_engine(), chain["store"]
    lock = "LOCK TABLE deployments IN SHARE ROW EXCLUSIVE MODE NOWAIT"  # what publish takes, without waiting

    def publish_would_wait() -> bool:
        with engine.connect() as other:
            try:
                other.execute(sa.text(lock))
                return False
            except sa.exc.OperationalError as err:
                assert "could not obtain lock" in str(err)
                return True

    seen = {}
    for user, now in (("waits-customer", True), ("free-customer", False)):
        _purchases(user, (10,))
        faults.hooks["erasure-rows-deleted"] = lambda now=now: seen.__setitem__(now, publish_would_wait())
        try:
            forget(engine, get_settings(), [user], now=now, store=store)
        finally:
            faults.hooks.pop("erasure-rows-deleted", None)
    assert seen == {True: True, False: False}
    assert run_due(force=True, store=store).status == "done"
    with engine.connect() as conn:
        assert proof_rows(conn) == []


def _row(version: int, rows: int, seconds: float) -> dict:
    return {"version": version, "xid_from": str(version * 10), "xid_to": str(version * 10 + 10), "row_count": rows,
            "timings": {"total_s": seconds}, "params": {}}


def test_a_customer_in_the_first_version_replays_the_chain_or_a_fresh_root_whichever_costs_less():
    cheap_root = [_row(1, 1000, 10.0), _row(2, 100, 8.0), _row(3, 100, 8.0)]  # root 12 s against 26 s
    segments, choice, estimates = _plan(cheap_root, clean=None)
    assert choice == "fresh root" and len(segments) == 1 and (segments[0].xid_from, segments[0].xid_to) == ("10", "40")
    assert estimates["fresh_root_s"] < estimates["chain_s"]
    costly_root = [_row(1, 100, 10.0), _row(2, 1000, 8.0)]  # root 110 s against 18 s
    assert _plan(costly_root, clean=None)[1] == "chain"
    assert _plan(cheap_root[1:], clean=1)[1] == "chain"  # a clean version to start from: always the chain


def test_a_replayed_head_that_fails_its_gate_does_not_serve_while_a_clean_version_can():
    assert choose_serving(7, [6, 7], 5, {})[0] == 7
    assert choose_serving(7, [6], 5, {7: "failed"})[0] == 6
    assert choose_serving(7, [], 5, {7: "failed"})[0] == 5
    head, why = choose_serving(7, [], None, {7: "failed"})
    assert head == 7 and "cannot be vetoed" in why
