"""POST /v1/events under concurrent writers over real HTTP, while an update runs: no errors, every
accepted event stored once and no other, every user's newest profile online; and a retried batch
repairs an online store that missed a push."""
import random
import threading
import time
import uuid

import httpx
import pytest
import sqlalchemy as sa
from conftest import api_server

from freshrec.config import get_settings
from freshrec.db import get_engine
from freshrec.features import apply, online_user_texts, open_store
from freshrec.ingest import online_retail_batch, write_batch
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.updater import run_update

TOKEN = {"Authorization": "Bearer freshrec-dev-token"}
CLIENTS, SECONDS = 6, 12.0


@pytest.fixture(scope="module")
def api(module_db, retail_sample):
    with get_engine().begin() as conn:
        write_batch(conn, online_retail_batch(retail_sample), "sample")
        items = [r[0] for r in conn.execute(sa.text("SELECT item_id FROM items ORDER BY item_id LIMIT 50"))]
    apply(open_store(), get_settings().feast.repo_path)
    with api_server() as url:
        yield url, items


def _client(url, items, stop, results, seed):
    rng = random.Random(seed)
    with httpx.Client(base_url=url, headers=TOKEN, timeout=60) as http:
        while not stop.is_set():
            events = [{"event_key": f"load-{uuid.uuid4().hex}", "user_id": f"load-{rng.randint(0, 30)}",
                       "item_id": rng.choice(items), "event_type": "purchase",
                       "event_time": f"2011-02-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"}
                      for _ in range(rng.randint(1, 20))]
            try:
                r = http.post("/v1/events", json={"events": events})
                results.append((r.status_code, r.json() if r.status_code == 200 else r.text, len(events)))
            except httpx.HTTPError as err:  # a reset connection is an error too
                results.append((None, repr(err), len(events)))


def test_concurrent_writers_get_the_truth_and_every_profile_goes_online(api, tiny_model):
    url, items = api
    stop, results = threading.Event(), []
    clients = [threading.Thread(target=_client, args=(url, items, stop, results, i)) for i in range(CLIENTS)]
    for t in clients:
        t.start()
    started = time.monotonic()
    # An update runs meanwhile: its cut, Feast reads and publish share the database with the writers.
    outcome = run_update(TrainingArguments(epochs=1, device="cpu"), GateArguments(enabled=False),
                         base_model=tiny_model)
    time.sleep(max(0.0, SECONDS - (time.monotonic() - started)))
    stop.set()
    for t in clients:
        t.join()

    errors = [r for r in results if r[0] != 200]
    accepted = sum(r[1]["accepted"] for r in results if r[0] == 200)
    with get_engine().connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM interactions WHERE event_key LIKE 'load-%'")).scalar()
        newest = dict(conn.execute(sa.text(
            "SELECT DISTINCT ON (user_id) user_id, profile_text FROM user_profiles WHERE user_id LIKE 'load-%' "
            "ORDER BY user_id, valid_from DESC")).all())
    online = {u: text for u, (text, _) in online_user_texts(open_store(), sorted(newest)).items()}
    assert outcome.status == "created" and len(results) > 100
    assert errors == []
    assert accepted == stored  # what the API said it took is exactly what is stored
    assert {u for u in newest if online[u] != newest[u]} == set()
    print(f"\n{len(results)} batches, {stored} events, 0 errors, {len(newest)} profiles online")


def test_a_retried_batch_repairs_a_missed_online_push(api):
    url, items = api
    batch = {"events": [{"event_key": "repair-1", "user_id": "repair-user", "item_id": items[0],
                         "event_type": "purchase", "event_time": "2011-02-02T10:00:00Z"}]}
    assert httpx.post(f"{url}/v1/events", json=batch, headers=TOKEN).json()["accepted"] == 1
    store = open_store()
    assert online_user_texts(store, ["repair-user"])["repair-user"][0]
    # The push that should have followed the commit is lost (the online row is gone) ...
    with get_engine().begin() as conn:
        conn.execute(sa.text("DELETE FROM feast_online.freshrec_user_text"))
    assert online_user_texts(store, ["repair-user"])["repair-user"][0] is None
    # ... and the client's retry of the same batch, all duplicates now, pushes it again.
    again = httpx.post(f"{url}/v1/events", json=batch, headers=TOKEN).json()
    assert again == {"accepted": 0, "duplicates": 1, "tombstoned": 0, "profiles_pushed": 1}
    assert online_user_texts(store, ["repair-user"])["repair-user"][0]
