"""Every endpoint against the real database, Feast online store and a tiny model: happy path, bad input, auth."""
import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from freshrec.config import Settings, get_settings
from freshrec.db import get_engine
from freshrec.serving import create_app

TOKEN = {"Authorization": "Bearer freshrec-dev-token"}


@pytest.fixture(scope="module")
def client(served_url):
    from conftest import use_database

    use_database(served_url)
    with TestClient(create_app(watch=False)) as c:
        yield c


def _known_user() -> str:
    with get_engine().connect() as conn:
        return conn.execute(sa.text("SELECT user_id FROM user_profiles ORDER BY n_events DESC, user_id LIMIT 1")).scalar()


def _loc(response) -> list:
    return [tuple(d["loc"]) for d in response.json()["detail"]]


def test_recommendations_known_unknown_and_bad_k(client, served_db):
    user = _known_user()
    r = client.get(f"/v1/users/{user}/recommendations", params={"k": 5})
    body = r.json()
    assert r.status_code == 200 and body["version"] == 2 and body["strategy"] == "personal"
    scores = [i["score"] for i in body["items"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert all(i["title"] for i in body["items"])

    cold = client.get("/v1/users/never-seen/recommendations", params={"k": 3}).json()
    assert cold["strategy"] == "popular" and len(cold["items"]) == 3

    for k in (0, get_settings().serving.max_k + 1, "x"):
        bad = client.get(f"/v1/users/{user}/recommendations", params={"k": k})
        assert bad.status_code == 422 and ("query", "k") in _loc(bad)


def test_recommendations_name_their_sources_and_equal_the_offline_pipeline(client, served_db):
    """The API's list for a user, rebuilt from the offline inputs the updater and its gate rank with:
    Feast's point-in-time (offline) profile, the consumed rows from SQL, the daily aggregates from
    their table, the version's own artifacts and published vectors. None of it goes through the
    API's snapshot, so a difference between the online and offline paths shows here."""
    import numpy as np

    from freshrec.bench import evaluation
    from freshrec.db.vectors import from_literal
    from freshrec.features import historical_features, open_store
    from freshrec.models.encoder import Encoder
    from freshrec.ranking import SOURCES
    from freshrec.ranking.candidates import DayState
    from freshrec.ranking.copurchase import from_log
    from freshrec.ranking.inputs import consumed_browsing, consumed_log, daily_item_stats, serving_clock
    from freshrec.ranking.pipeline import Queries, TowerIndex, day_of, rank
    from freshrec.registry import chain
    from freshrec.registry.artifacts import load_chain

    with get_engine().connect() as conn:  # a customer with a short history: room for items new to them
        user = conn.execute(sa.text("SELECT user_id FROM user_profiles GROUP BY user_id HAVING max(n_events) "
                                    "BETWEEN 3 AND 8 ORDER BY user_id LIMIT 1")).scalar()
    api = client.get(f"/v1/users/{user}/recommendations", params={"k": evaluation.K}).json()
    sources = [set(i["sources"]) for i in api["items"]]
    assert api["strategy"] == "personal" and all(s and s <= set(SOURCES) for s in sources)
    assert any("repeat" in s for s in sources) and any(s - {"repeat"} for s in sources)

    engine, version = get_engine(), api["version"]
    with engine.connect() as conn:
        lineage = chain(conn, version)
        clock = serving_clock(conn)
        rows = conn.execute(sa.text("SELECT item_id, embedding::text FROM item_embeddings WHERE version = :v "
                                    "ORDER BY item_id"), {"v": version}).all()
    loaded = load_chain(lineage, 128)
    item_ids = np.array([r[0] for r in rows], dtype=object)
    index = TowerIndex(np.stack([from_literal(r[1]) for r in rows]), float(loaded.model.log_scale.detach().exp()),
                       float(loaded.model.bias.detach()))
    profile = historical_features(open_store(), f"SELECT '{user}' AS user_id, '{item_ids[0]}' AS item_id, "
                                                f"TIMESTAMPTZ '{clock.isoformat()}' AS event_timestamp").iloc[0]
    horizon = lineage[-1]["xid_to"]
    log = consumed_log(engine, horizon, item_ids)
    browse = consumed_browsing(engine, horizon, [user], item_ids)
    day = float(day_of(np.array([clock.timestamp()]))[0])
    state = DayState(from_log(log).neighbours(), daily_item_stats(engine, item_ids, [day])[day])
    times = np.array([clock.timestamp()])
    queries = Queries(log.user_rows([user]), times, np.array([[profile.n_events, profile.n_baskets]], np.float32),
                      Encoder(loaded.model.eval(), loaded.tokenizer, __import__("torch").device("cpu"))
                      .users([profile.user_text], 128), browse.recent([user], times))
    cands, scores, tops = rank(log, queries, index, loaded.ranker, loaded.candidates, lambda _: state, evaluation.K)
    assert [str(i) for i in item_ids[cands.item[tops[0]]]] == [i["item_id"] for i in api["items"]]
    assert np.allclose(scores[tops[0]], [i["score"] for i in api["items"]], atol=1e-5)


def test_search_plain_personalised_and_bad_q(client, served_db):
    plain = client.get("/v1/search", params={"q": "red lunch bag", "k": 4}).json()
    assert plain["strategy"] == "search" and len(plain["items"]) == 4 and plain["version"] == 2
    # The versions' search weighs no purchase history (history_weight 0, the tuned value): a user_id
    # changes nothing, and their rows are not read.
    personal = client.get("/v1/search", params={"q": "red lunch bag", "k": 4, "user_id": _known_user()}).json()
    assert personal["strategy"] == "search" and personal["items"] == plain["items"]
    assert client.get("/v1/search", params={"q": "bag", "user_id": "never-seen"}).json()["strategy"] == "search"
    for params in ({}, {"q": ""}, {"q": "x" * (get_settings().serving.max_text_chars + 1)}):
        bad = client.get("/v1/search", params=params)
        assert bad.status_code == 422 and ("query", "q") in _loc(bad)


def test_similar_items_and_unknown_item(client, served_db):
    with get_engine().connect() as conn:
        item = conn.execute(sa.text("SELECT item_id FROM items ORDER BY item_id LIMIT 1")).scalar()
    body = client.get(f"/v1/items/{item}/similar", params={"k": 5}).json()
    assert len(body["items"]) == 5 and item not in [i["item_id"] for i in body["items"]]
    missing = client.get("/v1/items/no-such-item/similar")
    assert missing.status_code == 404 and "no-such-item" in missing.json()["detail"]


def _event(key, item="22629", **kw):
    return {"event_key": key, "user_id": "api-user", "item_id": item, "event_type": "purchase",
            "event_time": "2011-01-06T10:00:00Z", **kw}


def _count(sql="SELECT count(*) FROM interactions WHERE user_id = 'api-user'"):
    with get_engine().connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


def test_events_auth_validation_all_or_nothing_and_duplicates(client, served_db):
    with get_engine().connect() as conn:
        items = [r[0] for r in conn.execute(sa.text("SELECT item_id FROM items ORDER BY item_id LIMIT 2"))]
    good = {"events": [_event("api-1", items[0]), _event("api-2", items[1])]}
    assert client.post("/v1/events", json=good).status_code == 401
    assert client.post("/v1/events", json=good, headers={"Authorization": "Bearer wrong"}).status_code == 401

    one_bad_row = {"events": [_event("api-3", items[0]), _event("api-4", "not-in-catalog")]}
    r = client.post("/v1/events", json=one_bad_row, headers=TOKEN)
    assert r.status_code == 422 and _loc(r) == [("body", "events", 1, "item_id")]
    assert _count() == 0  # the good row of that batch was not written either

    bad_type = client.post("/v1/events", json={"events": [_event("api-5", event_type="like")]}, headers=TOKEN)
    assert bad_type.status_code == 422 and ("body", "events", 0, "event_type") in _loc(bad_type)
    extra = client.post("/v1/events", json={"events": [_event("api-6", colour="red")]}, headers=TOKEN)
    assert extra.status_code == 422 and ("body", "events", 0, "colour") in _loc(extra)
    dup_in_batch = client.post("/v1/events", json={"events": [_event("api-7"), _event("api-7")]}, headers=TOKEN)
    assert dup_in_batch.status_code == 422 and ("body", "events", 1, "event_key") in _loc(dup_in_batch)
    assert client.post("/v1/events", json={"events": []}, headers=TOKEN).status_code == 422

    first = client.post("/v1/events", json=good, headers=TOKEN).json()
    assert first == {"accepted": 2, "duplicates": 0, "tombstoned": 0, "profiles_pushed": 1}
    again = client.post("/v1/events", json=good, headers=TOKEN).json()
    assert again["accepted"] == 0 and again["duplicates"] == 2
    assert _count() == 2
    # The new user's profile reached the online store at once: personal, not popular.
    assert client.get("/v1/users/api-user/recommendations").json()["strategy"] == "personal"
    metrics = client.get("/metrics").text
    assert "freshrec_rows_behind_watermark 2.0" in metrics


def test_models_list_detail_lineage_and_unknown(client, served_db):
    versions = client.get("/v1/models").json()
    assert [v["version"] for v in versions] == [1, 2] and [v["current"] for v in versions] == [False, True]
    detail = client.get("/v1/models/2").json()
    assert detail["parent"] == 1 and len(detail["artifact_sha256"]) == 64 and detail["row_count"] > 0
    # Where the weights live is for admins: anonymous readers see neither the artifact URI nor local paths.
    assert "artifact_uri" not in detail and "/" not in detail["base_model"]
    assert all("artifact_uri" not in c for c in client.get("/v1/models/2/lineage").json()["chain"])
    admin = client.get("/v1/models/2", headers=TOKEN).json()
    from freshrec.registry import chain

    with get_engine().connect() as conn:
        stored = chain(conn, 2)[-1]
    assert admin["artifact_uri"] == stored["artifact_uri"] and admin["base_model"] == stored["base_model"]
    lineage = client.get("/v1/models/2/lineage").json()
    assert lineage["parent"] == 1 and [c["version"] for c in lineage["chain"]] == [1, 2]
    assert client.get("/v1/models/99").status_code == 404
    assert client.get("/v1/models/99/lineage").status_code == 404
    assert client.get("/v1/models/abc").status_code == 422


def test_promote_and_rollback_need_the_token_and_swap_the_serving_version(client, served_db):
    user = _known_user()
    assert client.post("/v1/models/1/promote").status_code == 401
    assert client.post("/v1/models/rollback").status_code == 401
    assert client.post("/v1/models/99/promote", headers=TOKEN).status_code == 404
    assert client.post("/v1/models/2/promote", headers=TOKEN).status_code == 409  # already current

    moved = client.post("/v1/models/1/promote", headers=TOKEN, json={"reason": "test"}).json()
    assert moved == {"current": 1, "serving": 1}
    assert client.get(f"/v1/users/{user}/recommendations").json()["version"] == 1
    back = client.post("/v1/models/rollback", headers=TOKEN).json()
    assert back == {"current": 2, "serving": 2}
    with get_engine().connect() as conn:
        reasons = [r[0] for r in conn.execute(sa.text("SELECT reason FROM deployments ORDER BY id"))]
    assert reasons[-2:] == ["test", "api"]


def test_tampered_version_is_refused_and_the_old_one_keeps_serving(client, served_db):
    with get_engine().connect() as conn:
        uri = conn.execute(sa.text("SELECT artifact_uri FROM model_versions WHERE version = 1")).scalar()
    path = f"{uri}/manifest.json"
    original = open(path, "rb").read()
    try:
        open(path, "ab").write(b" ")
        assert client.post("/v1/models/1/promote", headers=TOKEN).json() == {"current": 1, "serving": 2}
        ready = client.get("/readyz").json()
        assert ready["version"] == 2 and "TamperedArtifact" in ready["refused"]["1"]
        assert client.get(f"/v1/users/{_known_user()}/recommendations").json()["version"] == 2
        assert 'freshrec_version_refusals_total{reason="TamperedArtifact"} 1.0' in client.get("/metrics").text
    finally:
        open(path, "wb").write(original)
        client.post("/v1/models/rollback", headers=TOKEN)
    assert client.get("/readyz").json() == {"ready": True, "database": True, "version": 2, "search": "version 2",
                                             "refused": {}, "partners_held": 1.0}


def test_health_and_metrics(client, served_db):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/v1/items/no-such-item/similar").status_code == 404
    metrics = client.get("/metrics").text
    # Each request is counted under its route's template and its status, errors included.
    assert 'route="/v1/items/{item_id}/similar",status="404"' in metrics
    assert 'freshrec_request_seconds_count{method="GET",route="/healthz",status="200"}' in metrics
    for name in ("freshrec_request_seconds_bucket", "freshrec_serving_version 2.0", "freshrec_serving_version_age_seconds",
                 "freshrec_rows_behind_watermark", "freshrec_oldest_untrained_row_age_seconds",
                 'freshrec_last_update_result{result="created"} 1.0', "freshrec_last_update_duration_seconds",
                 "freshrec_watcher_running 0.0", "freshrec_encoder_cache_states", "freshrec_encoder_cache_bytes"):
        assert name in metrics, name
    # A transaction left open holds the watermark's horizon back: /metrics shows how long.
    import re
    import time

    with get_engine().connect() as idle:
        tx = idle.begin()
        idle.execute(sa.text("SELECT pg_current_xact_id()"))  # it holds a transaction id now
        time.sleep(1.2)
        held = client.get("/metrics").text
        tx.rollback()
    age = float(re.search(r"^freshrec_horizon_oldest_transaction_seconds (\S+)$", held, re.M).group(1))
    assert age >= 1.0
    assert client.get("/openapi.json").json()["info"]["title"] == "freshrec"
    assert client.get("/docs").status_code == 200


def test_weak_tokens_are_refused_outside_development():
    read = {"api_read_token": "r" * 16, "erasure": {"key": "k" * 16}}
    with pytest.raises(ValueError, match="at least 16 characters"):
        Settings(environment="production", api_token=" ", **read)
    with pytest.raises(ValueError, match="at least 16 characters"):
        Settings(environment="production", api_token="short-token", **read)
    with pytest.raises(ValueError, match="secret value"):
        Settings(environment="production", **read)
    with pytest.raises(ValueError, match="FRESHREC_API_READ_TOKEN must have at least 16"):
        Settings(environment="production", api_token="x" * 16, api_read_token="short")
    assert Settings(environment="production", api_token="x" * 16, **read).api_token.get_secret_value() == "x" * 16


def test_event_times_must_be_plausible(client, served_db):
    from datetime import datetime, timedelta, timezone

    future = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    for when, reason in ((future, "in the future"), ("1970-01-01T00:00:00Z", "before 2000-01-01")):
        r = client.post("/v1/events", json={"events": [_event("odd-time", event_time=when)]}, headers=TOKEN)
        assert r.status_code == 422 and _loc(r) == [("body", "events", 0, "event_time")]
        assert reason in r.json()["detail"][0]["msg"]
    assert _count("SELECT count(*) FROM interactions WHERE event_key = 'odd-time'") == 0


def test_reads_can_require_the_token(served_db):
    settings = Settings(serving={"require_token_for_reads": True})
    with TestClient(create_app(settings, watch=False)) as c:
        assert c.get("/v1/search", params={"q": "bag"}).status_code == 401
        assert c.get("/v1/search", params={"q": "bag"}, headers=TOKEN).status_code == 200
        assert c.get("/healthz").status_code == 200


def test_out_of_range_version_is_a_422_not_a_database_error(client, served_db):
    # Found by the fuzzer: a version beyond PostgreSQL's integer reached the database as a DataError.
    for path in ("/v1/models/99999999999", "/v1/models/99999999999/lineage", "/v1/models/0"):
        r = client.get(path)
        assert r.status_code == 422 and ("path", "version") in _loc(r)
    assert client.post("/v1/models/99999999999/promote", headers=TOKEN).status_code == 422


def test_events_with_and_without_quantity_in_one_batch(client, served_db):
    # Found by the fuzzer: one event with a quantity and one without made the column float ("1.0").
    with get_engine().connect() as conn:
        item = conn.execute(sa.text("SELECT item_id FROM items ORDER BY item_id LIMIT 1")).scalar()
    body = {"events": [_event("mixed-1", item), _event("mixed-2", item, quantity=3)]}
    assert client.post("/v1/events", json=body, headers=TOKEN).json()["accepted"] == 2
    with get_engine().connect() as conn:
        quantities = [r[0] for r in conn.execute(sa.text(
            "SELECT quantity FROM interactions WHERE event_key IN ('mixed-1', 'mixed-2') ORDER BY event_key"))]
    assert quantities == [1, 3]


def test_a_customer_who_only_browsed_gets_personal_items_not_an_empty_list(client, served_db):
    """Views and carts, no purchase: the towers, the browsed items and their co-purchase partners propose."""
    with get_engine().connect() as conn:
        carted, viewed = [r[0] for r in conn.execute(sa.text(
            "SELECT item_id FROM interactions GROUP BY item_id ORDER BY count(*) DESC, item_id LIMIT 2"))]
    events = [{**_event("browse-1", viewed, event_type="view"), "user_id": "browser"},
              {**_event("browse-2", carted, event_type="cart"), "user_id": "browser"}]
    assert client.post("/v1/events", json={"events": events}, headers=TOKEN).json()["profiles_pushed"] == 1
    body = client.get("/v1/users/browser/recommendations", params={"k": 20}).json()
    assert body["strategy"] == "personal" and len(body["items"]) == 20
    sources = {i["item_id"]: set(i["sources"]) for i in body["items"]}
    assert "browsed" in sources.get(carted, set()) | sources.get(viewed, set())
    assert any("copurchase" in s for s in sources.values()) and any("tower" in s for s in sources.values())


def test_nothing_to_propose_falls_back_to_popular_items(client, served_db):
    from freshrec.features import online_users
    from freshrec.ranking.candidates import CandidateConfig

    snap = client.app.state.api.holder.current
    silent = snap.with_candidates(CandidateConfig(0, 0, 0, 0, 0))
    with get_engine().connect() as conn:
        assert silent.recommend(conn, online_users(client.app.state.api.store, [_known_user()]), 5)[_known_user()] is None


def test_a_profile_that_changes_at_the_same_timestamp_gets_a_new_user_vector(client, served_db):
    """A basket's lines in two requests: the profile text changes, its feature timestamp does not."""
    import numpy as np

    from freshrec.features import online_users
    from freshrec.models.state_cache import text_hash

    with get_engine().connect() as conn:
        first, second = [r[0] for r in conn.execute(sa.text(
            "SELECT item_id FROM items WHERE valid_from < '2011-01-07' ORDER BY item_id LIMIT 2"))]
    store, snap = client.app.state.api.store, client.app.state.api.holder.current
    texts = []
    for key, item in (("basket-a", first), ("basket-b", second)):
        event = {**_event(key, item, event_time="2011-01-07T09:00:00Z"), "user_id": "two-requests"}
        assert client.post("/v1/events", json={"events": [event]}, headers=TOKEN).status_code == 200
        row = online_users(store, ["two-requests"])["two-requests"]
        texts.append((row["user_text"], row["ts"]))
        assert client.get("/v1/users/two-requests/recommendations").json()["strategy"] == "personal"
    (text_a, ts_a), (text_b, ts_b) = texts
    assert ts_a == ts_b and text_a != text_b  # the defect's condition: same timestamp, new text
    cached = snap._user_cache[text_hash(text_b)]
    assert np.allclose(cached, snap._encode([text_b])[0], atol=1e-5)
    assert not np.allclose(cached, snap._user_cache[text_hash(text_a)], atol=1e-5)


def test_per_user_reads_need_the_read_token_outside_development(served_db):
    """A customer's recommendations are their purchase history: outside development only the read (or
    admin) token reads them; catalog search stays open; /readyz names no artifact location."""
    admin, reader = "a" * 16 + "-admin", "r" * 16 + "-read"
    erasure = {"key": "k" * 16}
    settings = Settings(environment="production", api_token=admin, api_read_token=reader, erasure=erasure)
    user = _known_user()
    with TestClient(create_app(settings, watch=False)) as c:
        for path, params in ((f"/v1/users/{user}/recommendations", {}), ("/v1/search", {"q": "bag", "user_id": user})):
            assert c.get(path, params=params).status_code == 401
            assert c.get(path, params=params, headers={"Authorization": "Bearer wrong"}).status_code == 401
            for token in (reader, admin):
                assert c.get(path, params=params, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert c.get("/v1/search", params={"q": "bag"}).status_code == 200  # the catalog, nobody's history
        # The read token reads; it does not write.
        event = {"events": [_event("read-token-write")]}
        assert c.post("/v1/events", json=event, headers={"Authorization": f"Bearer {reader}"}).status_code == 401
        c.app.state.api.holder.refused[1] = "TamperedArtifact: /secret/path/artifacts/abc: sha256 does not match"
        assert c.get("/readyz").json()["refused"] == {"1": "TamperedArtifact"}
        assert "/secret/path" in c.get("/readyz", headers={"Authorization": f"Bearer {admin}"}).json()["refused"]["1"]
    closed = Settings(environment="production", api_token=admin, api_read_token=reader, erasure=erasure,
                      serving={"open_catalog_search": False})
    with TestClient(create_app(closed, watch=False)) as c:
        assert c.get("/v1/search", params={"q": "bag"}).status_code == 401
        assert c.get("/v1/search", params={"q": "bag"}, headers={"Authorization": f"Bearer {reader}"}).status_code == 200
    with pytest.raises(ValueError, match="FRESHREC_API_READ_TOKEN must be set"):
        Settings(environment="production", api_token=admin)
    with pytest.raises(ValueError, match="must differ"):
        Settings(environment="production", api_token=admin, api_read_token=admin)
    with pytest.raises(ValueError, match="FRESHREC_ERASURE__KEY must be set"):
        Settings(environment="production", api_token=admin, api_read_token=reader)


def test_a_version_load_reads_no_interaction_rows(served_db):
    """Loading a version reads its artifacts, its item vectors and Feast: as a role that may not read
    `interactions`, it loads and recommends (the per-request read of one customer's rows aside)."""
    import sqlalchemy as sa

    from freshrec.features import open_store
    from freshrec.serving.snapshot import load_snapshot

    with get_engine().begin() as conn:
        conn.execute(sa.text("DROP ROLE IF EXISTS no_history"))
        conn.execute(sa.text("CREATE ROLE no_history LOGIN"))
        conn.execute(sa.text("GRANT SELECT ON ALL TABLES IN SCHEMA public TO no_history"))
        conn.execute(sa.text("REVOKE SELECT ON interactions FROM no_history"))
    probe = sa.create_engine(get_engine().url.set(username="no_history"))
    try:
        with probe.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text("SELECT 1 FROM interactions LIMIT 1"))  # the probe can fail
        snap = load_snapshot(probe, 2, open_store())
        assert snap.version == 2 and len(snap.item_ids) > 0
        assert type(snap.copurchase).__name__ == "FetchedNeighbours"  # the version's own, from Feast
    finally:
        probe.dispose()
        with get_engine().begin() as conn:
            conn.execute(sa.text("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM no_history"))
            conn.execute(sa.text("DROP ROLE no_history"))


def test_a_version_is_primed_before_it_swaps_in(served_db):
    """The API's holder reads a version's day state and its most popular items' co-purchase partners
    before the swap: the first requests read neither."""
    from freshrec.features import open_store
    from freshrec.ranking.inputs import serving_clock
    from freshrec.serving.watcher import SnapshotHolder

    holder = SnapshotHolder(get_engine())
    holder.store = open_store()
    assert holder.sync()
    snap = holder.current
    held = snap._day
    with get_engine().connect() as conn:
        day = snap.day_state(serving_clock(conn))
    assert snap._day is held  # the clock's day was read before the swap: no read now
    reads, fetch = [], snap.copurchase.fetch
    snap.copurchase.fetch = lambda ids: reads.append(ids) or fetch(ids)
    popular = day.popular[: snap.primed_items]
    owner, _, _ = snap.copurchase.gather(popular)
    assert reads == [] and len(set(owner)) > 10  # held, and they have partners
    snap.copurchase.gather(day.popular[-3:])  # the tail is read when a request needs it
    assert len(reads) == (1 if len(day.popular) > snap.primed_items else 0)


def test_neighbours_missing_online_are_read_from_the_versions_rows(served_db):
    """A version's neighbours the online store lacks (a push that failed) still serve: from item_neighbours."""
    import pandas as pd
    import sqlalchemy as sa

    from freshrec.features import delete_online_neighbours, neighbour_keys, open_store, push_item_neighbours
    from freshrec.serving.snapshot import load_snapshot

    store = open_store()
    with get_engine().connect() as conn:
        stored = pd.read_sql(sa.text("SELECT item_id, partners, strengths, valid_from FROM item_neighbours "
                                     "WHERE version = 2 AND computed_by = 2 ORDER BY cardinality(partners) DESC, item_id"), conn)
    assert len(stored) and delete_online_neighbours(get_engine(), store, neighbour_keys(get_engine(), [2])) > 0
    try:
        snap = load_snapshot(get_engine(), 2, store)
        rows = snap.item_index.get_indexer(stored["item_id"].head(5))
        owner, partners, _ = snap.copurchase.gather(rows)
        assert len(partners) and set(owner) == set(range(len(rows)))
    finally:
        push_item_neighbours(store, 2, stored)  # put back what the other tests read


def test_pushed_neighbours_overwrite_feasts_own_rows_and_read_back_exactly(served_db):
    """``push_item_neighbours`` builds Feast's rows itself: the same entity keys as Feast's own
    ``write_to_online_store`` (its row is overwritten, not left beside) and the lists read back as stored."""
    import pandas as pd
    import sqlalchemy as sa

    from freshrec.features import online_neighbours, open_store, push_item_neighbours

    store = open_store()
    with get_engine().connect() as conn:
        stored = pd.read_sql(sa.text("SELECT item_id, partners, strengths, valid_from FROM item_neighbours "
                                     "WHERE version = 2 AND computed_by = 2 ORDER BY cardinality(partners) DESC, item_id "
                                     "LIMIT 20"), conn)
    items = stored["item_id"].tolist()
    wrong = stored.head(1).assign(partners=[["not-an-item"]], strengths=[[0.5]], model_version=2)
    store.write_to_online_store("item_neighbours", wrong)
    assert online_neighbours(store, 2, items[:1])[items[0]] == (["not-an-item"], [0.5])
    assert push_item_neighbours(store, 2, stored) == len(stored)
    found = online_neighbours(store, 2, items)
    assert set(found) == set(items)
    for row in stored.itertuples():
        partners, strengths = found[row.item_id]
        assert partners == list(row.partners)
        assert np.array_equal(np.float32(strengths), np.float32(row.strengths))


def test_a_refresh_reads_only_the_items_whose_aggregates_changed_and_a_swap_carries_the_rest(served_db, monkeypatch):
    """The API holds every item's aggregates. A refresh reads from Feast only the items whose
    ``item_daily_stats`` rows were written since the online store's cursor as it last read it; a swap
    takes the replaced version's array by item id. Both end equal to a full read of the online store."""
    from dataclasses import replace
    from datetime import timedelta

    import pandas as pd

    from freshrec.features import materialize, open_store
    from freshrec.ingest import interactions_frame_batch, write_batch
    from freshrec.ranking import inputs
    from freshrec.registry.versions import promote
    from freshrec.serving import item_stats
    from freshrec.serving.snapshot import STATS_TTL_SECONDS
    from freshrec.serving.watcher import SnapshotHolder

    store, engine = open_store(), get_engine()
    reads = []
    read = inputs.online_stats_array
    monkeypatch.setattr(item_stats.inputs, "online_stats_array", lambda s, ids: reads.append(set(ids)) or read(s, ids))

    def age(snap):  # as if a minute had passed since the last read
        held, day = snap._day
        snap._day = (replace(held, read_at=held.read_at - STATS_TTL_SECONDS - 1), day)

    def full_read(snap):
        return read(store, snap.item_ids)

    holder = SnapshotHolder(engine)
    holder.store = store
    holder.sync()
    snap = holder.current
    assert len(reads) == 1 and len(reads[0]) == len(snap.item_ids)  # the load: every item
    day = snap._day[1]
    age(snap)
    snap.refresh()
    assert reads[1:] == [] and snap._day[1] is day  # nothing written since: nothing read

    with engine.connect() as conn:
        newest = conn.execute(sa.text("SELECT max(event_time) FROM interactions")).scalar()
        changed = conn.execute(sa.text("SELECT item_id FROM items WHERE item_id = ANY(:i) ORDER BY item_id"),
                               {"i": list(snap.item_ids[day.popular[-2:]])}).scalars().all()
    events = pd.DataFrame([{"event_key": f"stats-{n}", "user_id": "stats-user", "item_id": item, "event_type": "purchase",
                            "event_time": newest - timedelta(minutes=1), "quantity": 1, "query": None}
                           for n, item in enumerate(changed)])
    with engine.begin() as conn:
        write_batch(conn, interactions_frame_batch(events, "test"), "test")
    materialize(store)
    before, since = snap._day[0].stats, snap._day[0].since
    with engine.connect() as conn:  # the rows the aggregates' catch-up rebuilt: those days' items
        written = set(conn.execute(sa.text("SELECT item_id FROM item_daily_stats WHERE written_xid >= CAST(:s AS xid8)"),
                                   {"s": since}).scalars()) & set(snap.item_ids)
    age(snap)
    snap.refresh()
    assert reads[1:] == [written] and set(changed) <= written and len(written) < len(snap.item_ids)
    after = snap._day[0].stats
    assert np.array_equal(after, full_read(snap)) and not np.array_equal(after, before)
    assert snap._day[1] is not day  # a new day state: popularity ranked on the new aggregates

    # A swap to version 1: its items' aggregates come from version 2's array, none from Feast.
    promote(engine, 1, reason="carry-over test")
    try:
        del reads[:]
        assert holder.sync() and holder.current.version == 1
        lacked = set(holder.current.item_ids) - set(snap.item_ids)
        assert reads == ([lacked] if lacked else [])
        assert np.array_equal(holder.current._day[0].stats, full_read(holder.current))
    finally:
        promote(engine, 2, reason="carry-over test")


def test_between_requests_the_api_reads_every_items_partners_most_popular_first(client, served_db):
    """``Snapshot.warm`` (the watcher calls it every second) reads the partners of the next items not
    held, most popular first, until it holds every item's: each list equal to the version's stored one."""
    import numpy as np

    from freshrec.features import open_store
    from freshrec.ranking.inputs import serving_clock
    from freshrec.ranking.pair_counts import read_neighbours
    from freshrec.serving.snapshot import load_snapshot

    engine = get_engine()
    snap = load_snapshot(engine, 2, open_store())
    with engine.connect() as conn:
        popular = snap.day_state(serving_clock(conn)).popular
    assert snap.partners_held == 0
    assert snap.warm(items=50) == 50 and set(snap.copurchase._known) == set(popular[:50].tolist())
    while snap.warm(items=400):
        pass
    assert snap.partners_held == 1.0 and snap.warm() == 0
    with engine.connect() as conn:
        stored = read_neighbours(conn, 2, list(snap.item_ids))
    assert sum(len(p) for p, _ in stored.values()) > 0
    for item_id, (partners, strengths) in stored.items():
        rows, held_strengths = snap.copurchase._known[snap.row_of[item_id]]
        known = [p in snap.row_of for p in partners]
        assert [snap.item_ids[r] for r in rows] == [p for p, k in zip(partners, known) if k]
        assert np.array_equal(held_strengths, np.float32([s for s, k in zip(strengths, known) if k]))
    assert client.get("/readyz").json()["partners_held"] == 1.0  # primed: the sample's items are fewer than 2,000


def test_publishing_builds_no_vector_index_and_the_retrieval_comparison_leaves_none_behind(served_db):
    from freshrec.bench.serving import retrieval_comparison
    from freshrec.features import open_store

    def indexes(version) -> list[str]:
        with get_engine().connect() as conn:
            return [r[0] for r in conn.execute(sa.text("SELECT indexname FROM pg_indexes WHERE tablename = :t "
                                                       "ORDER BY indexname"), {"t": f"item_embeddings_v{version}"})]

    with get_engine().connect() as conn:
        version = conn.execute(sa.text("SELECT version FROM current_version")).scalar()
    assert indexes(version) == [f"pk_item_embeddings_v{version}"]  # the primary key only
    exact, hnsw = retrieval_comparison(get_engine(), open_store(), version, k=5, n=20)
    assert indexes(version) == [f"pk_item_embeddings_v{version}"]  # the bench's own index is dropped again
    assert exact["recall@5_vs_exact"] == 1.0 and exact["queries"] == hnsw["queries"] == 20
    assert exact["index_build_s"] is None and hnsw["recall@5_vs_exact"] >= 0.5
