"""One row must never stop the updater (the defect: purchases dated before their item's text existed
made every later update fail, for good).

Over HTTP, concurrent writers' events dated before an item's text exists are refused with a 422
that names ``event_time``. Rows that got in anyway (a writer that bypasses the API, data from older
code) are quarantined by the updater: consumed, counted, shown in lineage, and the update goes on,
under every strategy.
"""
import random
import threading
from datetime import date

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from freshrec.config import get_settings
from freshrec.db import get_engine
from freshrec.features import apply, open_store
from freshrec.ingest import items_batch, online_retail_batch, write_batch
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.updater import run_update

TOKEN = {"Authorization": "Bearer freshrec-dev-token"}
LATE = [f"late-{n}" for n in range(5)]  # items whose text is valid only from June


@pytest.fixture(scope="module")
def shop(module_db, retail_sample, tiny_model, tmp_path_factory):
    with get_engine().begin() as conn:
        write_batch(conn, online_retail_batch(retail_sample, until=date(2010, 12, 31)), "sample")
    catalog = tmp_path_factory.mktemp("late") / "late.csv"
    pd.DataFrame({"item_id": LATE, "title": [f"LATE THING {n}" for n in range(5)],
                  "valid_from": "2011-06-01T00:00:00Z"}).to_csv(catalog, index=False)
    with get_engine().begin() as conn:
        write_batch(conn, items_batch(catalog), str(catalog))
    apply(open_store(), get_settings().feast.repo_path)
    assert _update(tiny_model, "head").version == 1
    return module_db


def _update(tiny_model, strategy):
    return run_update(TrainingArguments(strategy=strategy, epochs=1, learning_rate=1e-2, device="cpu"),
                      GateArguments(enabled=False), base_model=tiny_model)


def test_events_before_their_items_text_are_refused_over_http_by_concurrent_writers(shop):
    from conftest import api_server

    with get_engine().connect() as conn:
        known = [r[0] for r in conn.execute(sa.text("SELECT item_id FROM items WHERE item_id NOT LIKE 'late-%' LIMIT 50"))]
    results: list[tuple[str, int, dict]] = []

    def writer(seed: int, url: str) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=60) as client:
            for n in range(8):
                item = rng.choice(known + LATE)
                event = {"event_key": f"http-{seed}-{n}", "user_id": f"writer-{seed}", "item_id": item,
                         "event_type": "purchase", "event_time": "2011-03-01T10:00:00Z"}
                r = client.post("/v1/events", json={"events": [event]}, headers=TOKEN)
                results.append((item, r.status_code, r.json()))

    with api_server() as url:
        threads = [threading.Thread(target=writer, args=(seed, url)) for seed in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    late = [(code, body) for item, code, body in results if item in LATE]
    fine = [code for item, code, _ in results if item not in LATE]
    assert late and fine and set(fine) == {200}
    for code, body in late:
        assert code == 422 and body["detail"][0]["loc"] == ["body", "events", 0, "event_time"]
        assert "before item" in body["detail"][0]["msg"] and "2011-06-01" in body["detail"][0]["msg"]
    with get_engine().connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM interactions WHERE item_id LIKE 'late-%'")).scalar() == 0


def _poison(round_no: int) -> int:
    """Rows the API would refuse, written straight into the table, beside ordinary purchases."""
    with get_engine().begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO interactions (event_key, user_id, item_id, event_type, event_time) "
            "SELECT 'poison-' || :r || '-' || n, (SELECT min(user_id) FROM interactions), 'late-' || (n % 5), 'purchase', "
            "       TIMESTAMPTZ '2011-03-01 10:00+00' + make_interval(days => :r) FROM generate_series(1, 7) n"),
            {"r": round_no})
        conn.execute(sa.text(
            "INSERT INTO interactions (event_key, user_id, item_id, event_type, event_time) "
            "SELECT 'good-' || :r || '-' || x.id, x.user_id, x.item_id, 'purchase', "
            "       x.event_time + make_interval(days => 90 + :r) FROM interactions x "
            "WHERE x.event_time >= '2010-12-02' AND x.event_time < '2010-12-03' AND x.event_key LIKE 'uci:%'"),
            {"r": round_no})
    return 7


@pytest.mark.parametrize("strategy", ["head", "lora", "full"])
def test_the_updater_quarantines_rows_that_cannot_train_and_goes_on(shop, tiny_model, strategy):
    round_no = ["head", "lora", "full"].index(strategy)
    poisoned = _poison(round_no)
    outcome = _update(tiny_model, strategy)
    assert outcome.status == "created" and outcome.promoted, outcome.message
    assert outcome.metrics["rows_quarantined"] == poisoned
    with get_engine().connect() as conn:
        reasons = conn.execute(sa.text(
            "SELECT q.reason, count(*) FROM quarantined_rows q JOIN interactions i ON i.id = q.interaction_id "
            "WHERE q.version = :v AND i.event_key LIKE 'poison-%' GROUP BY q.reason"), {"v": outcome.version}).all()
        skipped = conn.execute(sa.text(
            "SELECT count(*) FILTER (WHERE skipped_reason IS NOT NULL), count(*) FROM version_consumed_rows "
            "WHERE version = :v AND consumed_by = :v"), {"v": outcome.version}).one()
        watermark = conn.execute(sa.text("SELECT row_count FROM watermarks WHERE version = :v"),
                                 {"v": outcome.version}).scalar()
    assert reasons == [("the item had no text at the event's time", poisoned)]
    # Consumed (inside the watermark) but skipped: the lineage says which and why.
    assert skipped[0] == poisoned and skipped[1] == watermark == outcome.metrics["rows_new"]
