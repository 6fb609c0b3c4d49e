"""The updater on real data with a tiny BERT: versions, watermarks, lineage SQL, gate, tampering."""
from datetime import date

import pytest
import sqlalchemy as sa

from freshrec.config import get_settings
from freshrec.db import get_engine
from freshrec.features import apply, open_store
from freshrec.ingest import online_retail_batch, write_batch
from freshrec.registry import TamperedArtifact, chain, load_version, rollback
from freshrec.updater import run_update
from freshrec.training.args import GateArguments, TrainingArguments


def _load(path, **kw):
    with get_engine().begin() as conn:
        return write_batch(conn, online_retail_batch(path, **kw), str(path))


def _update(tiny_model, **kw):
    # The sample holds few baskets per day: any held-out basket is evidence here.
    gate = GateArguments(enabled=kw.pop("gate", True), min_baskets=1)
    args = TrainingArguments(epochs=kw.pop("epochs", 2), learning_rate=kw.pop("lr", 1e-2), **kw)
    return run_update(args, gate, base_model=tiny_model)


@pytest.fixture(scope="module")
def two_versions(module_db, retail_sample, tiny_model):
    _load(retail_sample, until=date(2010, 12, 31))
    apply(open_store(), get_settings().feast.repo_path)
    first = _update(tiny_model, gate=False)
    second_load = _load(retail_sample, since=date(2011, 1, 1))
    second = _update(tiny_model, gate=False)
    return first, second, second_load


def test_incremental_version_consumes_exactly_the_new_rows(two_versions, tiny_model):
    first, second, second_load = two_versions
    assert (first.status, first.version, second.version) == ("created", 1, 2)
    with get_engine().connect() as conn:
        wm = {r.version: r for r in conn.execute(sa.text("SELECT * FROM watermarks"))}
        audit = conn.execute(sa.text("SELECT bool_and(consistent) FROM watermark_audit")).scalar()
        total = conn.execute(sa.text("SELECT count(*) FROM interactions")).scalar()
        consumed = conn.execute(sa.text("SELECT count(*), count(DISTINCT interaction_id) FROM version_consumed_rows WHERE version = 2")).one()
        parent = conn.execute(sa.text("SELECT parent_version FROM model_versions WHERE version = 2")).scalar()
        embeddings = conn.execute(sa.text("SELECT count(*) FROM item_embeddings WHERE version = 2")).scalar()
        items = conn.execute(sa.text("SELECT count(*) FROM items")).scalar()
        timings = conn.execute(sa.text("SELECT timings FROM model_versions WHERE version = 2")).scalar()
    assert "statistics_s" in timings  # the planner's statistics were refreshed first (test_statistics)
    assert wm[2].row_count == second_load.interactions_inserted
    assert wm[1].row_count + wm[2].row_count == total
    assert audit is True
    assert tuple(consumed) == (total, total)  # version 2 saw every row once: directly or through version 1
    assert parent == 1 and embeddings == items
    assert _update(tiny_model).status == "no-new-rows"


def test_lineage_chain_and_loading_verify_checksums(two_versions):
    with get_engine().connect() as conn:
        lineage = chain(conn, 2)
    assert [r["version"] for r in lineage] == [1, 2]
    loaded = load_version([(r["artifact_uri"], r["artifact_sha256"]) for r in lineage], 128)
    assert loaded.manifest["parent"] == 1
    weights = lineage[-1]["artifact_uri"] + "/metrics.json"
    with open(weights, "a") as f:
        f.write(" ")
    with pytest.raises(TamperedArtifact):
        load_version([(r["artifact_uri"], r["artifact_sha256"]) for r in lineage], 128)
    with open(weights, "rb+") as f:  # restore, so later tests load it
        f.seek(-1, 2)
        f.truncate()


def test_cli_versions_lineage_and_readme_sql_recipes(two_versions, tiny_model):
    import json
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def cli(*args):
        return subprocess.run(["freshrec", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300)

    lineage = json.loads(cli("lineage", "2", "--json").stdout)
    assert lineage["parent"] == 1 and [r["version"] for r in lineage["chain"]] == [1, 2]
    assert all(r["artifact_sha256"] and r["row_count"] for r in lineage["chain"])
    assert "another" not in cli("update", "--base-model", tiny_model).stdout
    assert "no new rows" in cli("update", "--base-model", tiny_model).stdout
    assert "ranker   " in cli("lineage", "2").stdout  # both stages of the version, one watermark
    wrong = cli("update", "--candidates", "100,30")
    assert wrong.returncode == 2 and "--candidates: '100,30' is not four counts" in wrong.stderr
    bad = cli("lineage", "99")
    assert bad.returncode == 2 and "version 99 does not exist" in bad.stderr

    readme = (repo / "README.md").read_text()
    recipes = re.findall(r"```sql\n(.*?)```", readme.split("## SQL audit recipes")[1].split("\n## ")[0], re.S)
    assert len(recipes) >= 4
    for sql in recipes:
        out = subprocess.run(["psql", os.environ["FRESHREC_DATABASE_URL"], "-v", "ON_ERROR_STOP=1", "-Atc", sql],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip(), (sql, out.stderr)


def test_gate_rejects_a_broken_candidate_and_current_stays(two_versions, retail_sample, tiny_model):
    # New rows: the same January purchases under new keys (a fresh cut to train on).
    with get_engine().begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO interactions (event_key, user_id, item_id, event_type, quantity, event_time) "
            "SELECT event_key || '-again', user_id, item_id, event_type, quantity, event_time + interval '30 days' "
            "FROM interactions WHERE event_time >= '2011-01-01'"))
    broken = _update(tiny_model, lr=50.0, epochs=1, l2_to_parent=0.0, strategy="full")
    assert broken.status == "created" and not broken.promoted
    with get_engine().connect() as conn:
        current = conn.execute(sa.text("SELECT version FROM current_version")).scalar()
        status, metrics = conn.execute(sa.text("SELECT status, metrics FROM model_versions WHERE version = :v"), {"v": broken.version}).one()
    assert current == 2 and status == "rejected"
    print(metrics["gate_reason"], metrics["candidate"], metrics["parent"])
    assert metrics["candidate"]["gate"]["recall"] is not None and metrics["parent"]["gate"]["recall"] is not None
    assert metrics["gate"] == "failed" and metrics["gate_reason"].startswith("failed:")
    assert rollback(get_engine()) == 1


def test_each_version_holds_its_ranker_with_digests_and_loads_strictly(two_versions, tmp_path):
    import hashlib
    import json
    from pathlib import Path

    from safetensors.torch import load as load_st
    from safetensors.torch import save as save_st

    from freshrec.registry.artifacts import IncompatibleArtifact, digest

    with get_engine().connect() as conn:
        lineage = chain(conn, 2)
    uri = lineage[-1]["artifact_uri"]
    manifest = json.loads(Path(uri, "manifest.json").read_text())
    for name, sha in manifest["ranker"]["files"].items():  # the ranker's files, each with its sha256
        assert hashlib.sha256(Path(uri, name).read_bytes()).hexdigest() == sha
    spec = json.loads(Path(uri, "ranker.json").read_text())
    assert spec["features"] == manifest["ranker"]["features"] and "tower_logit" in spec["features"]
    assert lineage[-1]["metrics"]["ranker"]["examples"] > 0 and "ranker" in lineage[-1]["params"]
    loaded = load_version([(r["artifact_uri"], r["artifact_sha256"]) for r in lineage], 128)
    assert loaded.ranker is not None and loaded.candidates.repeat > 0

    # A re-hashed artifact that lacks a head tensor is refused, not served with a random projection.
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(uri, broken)
    weights = load_st(Path(broken, "model.safetensors").read_bytes())
    del weights["head.user_proj.weight"]
    Path(broken, "model.safetensors").write_bytes(save_st(weights))
    chain_broken = [(r["artifact_uri"], r["artifact_sha256"]) for r in lineage[:-1]] + [(str(broken), digest(str(broken)))]
    with pytest.raises(IncompatibleArtifact, match="user_proj"):
        load_version(chain_broken, 128)


def test_a_head_update_on_texts_already_seen_runs_no_encoder_forward(two_versions, tiny_model):
    """Back on version 1, an update trains on version 2's rows again: every text it needs (profiles,
    items, the newest profiles it warms) was encoded by version 2's update, so none is encoded again."""
    from freshrec.registry import promote

    with get_engine().connect() as conn:
        current = conn.execute(sa.text("SELECT version FROM current_version")).scalar()
    if current != 1:
        promote(get_engine(), 1, reason="test: replay version 2's rows")
    again = _update(tiny_model, gate=False)
    cache = again.metrics["encoder_cache"]
    assert again.status == "created" and again.metrics["rows_new"] > 0
    assert cache["encoded"] == 0 and cache["evaluation"]["encoded"] == 0
    assert cache["hits"] > 0 and cache["evaluation"]["hits"] > 0
    if again.version != current:
        promote(get_engine(), current, reason="test: back")


def test_held_out_baskets_are_split_whole_into_disjoint_validation_and_gate_slices(two_versions):
    """The epoch is chosen on one half of the newest rows and the gate decides on the other: no basket
    in both, none cut in two, the gate's half the newest."""
    import pandas as pd

    from freshrec.training.dataset import split_by_basket

    with get_engine().connect() as conn:
        rows = pd.read_sql(sa.text("SELECT id AS interaction_id, user_id, event_time AS event_timestamp "
                                   "FROM interactions ORDER BY id"), conn)
    train, held = split_by_basket(rows, 0.2)
    valid, gate = split_by_basket(held, 0.5)
    keys = [set(zip(f.user_id, f.event_timestamp)) for f in (train, valid, gate)]
    assert all(len(k) for k in keys) and not (keys[0] & keys[1]) and not (keys[1] & keys[2]) and not (keys[0] & keys[2])
    assert len(train) + len(valid) + len(gate) == len(rows)
    assert valid.event_timestamp.max() <= gate.event_timestamp.min()
    assert abs(len(held) / len(rows) - 0.2) < 0.05


def test_a_cache_lookup_returns_the_states_and_touches_only_hits_unused_for_an_hour(two_versions):
    """One statement reads the states and moves the LRU clock of stale hits (the API's per-user lookup)."""
    import numpy as np

    from freshrec.models.state_cache import StateCache

    engine = get_engine()
    key = "encoder = :e AND max_tokens = :m AND text_sha256 = :h"
    with engine.begin() as conn:
        encoder, max_tokens = conn.execute(sa.text(
            "SELECT encoder, max_tokens FROM encoder_states GROUP BY 1, 2 HAVING count(*) >= 2 LIMIT 1")).one()
        stale, recent = conn.execute(sa.text("SELECT text_sha256, state FROM encoder_states WHERE encoder = :e AND "
                                             "max_tokens = :m ORDER BY text_sha256 LIMIT 2"),
                                     {"e": encoder, "m": max_tokens}).all()

    def age_them() -> None:
        with engine.begin() as conn:
            for row, age in ((stale, "2 hours"), (recent, "10 minutes")):
                conn.execute(sa.text(f"UPDATE encoder_states SET last_used_at = now() - interval '{age}' WHERE {key}"),
                             {"e": encoder, "m": max_tokens, "h": row.text_sha256})

    def minutes_unused() -> list[float]:
        with engine.connect() as conn:
            return [conn.execute(sa.text(f"SELECT extract(epoch FROM now() - last_used_at) / 60 FROM encoder_states "
                                         f"WHERE {key}"), {"e": encoder, "m": max_tokens, "h": r.text_sha256}).scalar()
                    for r in (stale, recent)]

    hashes = [bytes(stale.text_sha256), bytes(recent.text_sha256), b"\0" * 32]  # the last one is not cached
    for write, after in ((False, (120, 10)), (True, (0, 10))):
        age_them()
        found = StateCache(engine, encoder, write=write).get(max_tokens, hashes)
        assert set(found) == set(hashes[:2])
        for row in (stale, recent):
            assert np.array_equal(found[bytes(row.text_sha256)], np.frombuffer(row.state, dtype="<f4"))
        assert [round(m) for m in minutes_unused()] == list(after), write


def test_cache_size_shows_and_prunes(two_versions):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def cli(*args):
        return subprocess.run(["freshrec", *args], cwd=Path(__file__).resolve().parents[1], env=env,
                              capture_output=True, text=True, timeout=120)

    with get_engine().connect() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM encoder_states")).scalar()
    assert before > 10 and "encoder states" in cli("cache", "status").stdout
    assert f"evicted {before - 10:,} states" in cli("cache", "prune", "--keep", "10").stdout
    with get_engine().connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM encoder_states")).scalar() == 10
    assert cli("cache", "prune", "--keep", "-1").returncode == 2


def test_a_version_from_older_code_with_fewer_features_serves_and_its_child_starts_a_fresh_ranker(two_versions, tiny_model):
    """An upgrade that adds ranker features strands no version: one made with a shorter feature list keeps
    serving with its own list, and the next update starts a fresh ranker and says why."""
    import json
    import shutil
    from pathlib import Path

    import numpy as np
    from safetensors.torch import save as save_st

    from freshrec.db.vectors import from_literal, read_vectors
    from freshrec.features import online_users
    from freshrec.models.ranker import Ranker
    from freshrec.ranking.candidates import FEATURES
    from freshrec.registry.artifacts import digest, new_uri
    from freshrec.registry.versions import NewVersion, publish
    from freshrec.serving.snapshot import load_snapshot
    from freshrec.training.watermark import Cut

    engine = get_engine()
    with engine.connect() as conn:
        current = conn.execute(sa.text("SELECT version FROM current_version")).scalar()
        row = chain(conn, current)[-1]
        items = conn.execute(sa.text("SELECT item_id, embedding::text FROM item_embeddings WHERE version = :v "
                                     "ORDER BY item_id"), {"v": current}).all()
    # The version older code would have made: the same towers, a ranker over three features fewer.
    uri = new_uri(row["artifact_uri"].rsplit("/", 1)[0])
    shutil.copytree(row["artifact_uri"], uri)
    older = Ranker(FEATURES[:-3])
    files = {"ranker.safetensors": save_st({k: v.contiguous() for k, v in older.state_dict().items()}),
             "ranker.json": json.dumps({"features": list(FEATURES[:-3]), "hidden": older.hidden,
                                        "candidates": {"repeat": 100, "tower": 30, "copurchase": 30, "popular": 20}}).encode()}
    manifest = json.loads(Path(uri, "manifest.json").read_text())
    manifest["ranker"] = {"files": {n: __import__("hashlib").sha256(b).hexdigest() for n, b in files.items()},
                          "features": list(FEATURES[:-3])}
    for name, data in {**files, "manifest.json": json.dumps(manifest).encode()}.items():
        Path(uri, name).write_bytes(data)
    fields = {k: row[k] for k in ("strategy", "base_model", "params", "metrics", "feast_project", "feature_refs",
                                  "code_version")}
    old_version, status = publish(engine, NewVersion(
        parent_version=current, status="promoted", artifact_uri=uri, artifact_sha256=digest(uri), device="cpu",
        timings={}, **fields), Cut(row["xid_to"], row["xid_to"], (), None, None),
        [r[0] for r in items], np.stack([from_literal(r[1]) for r in items]))
    assert status == "promoted"
    with engine.connect() as conn:  # binary COPY: the float32 vectors published are the ones handed over, bit for bit
        ids, vecs = read_vectors(conn, "SELECT item_id, embedding FROM item_embeddings WHERE version = %(v)s "
                                       "ORDER BY item_id", {"v": old_version})
    assert [i for (i,) in ids] == [r[0] for r in items]
    assert np.array_equal(vecs, np.stack([from_literal(r[1]) for r in items]))

    from freshrec.features import materialize

    store = open_store()
    materialize(store)
    snap = load_snapshot(engine, old_version, store)
    assert snap.ranking.ranker.feature_names == FEATURES[:-3]
    with engine.connect() as conn:
        user = conn.execute(sa.text("SELECT user_id FROM user_profiles ORDER BY n_events DESC LIMIT 1")).scalar()
        ranked = snap.recommend(conn, online_users(store, [user]), 5)[user]
    assert len(ranked) == 5

    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO interactions (event_key, user_id, item_id, event_type, quantity, event_time) "
            "SELECT event_key || '-upgrade', user_id, item_id, event_type, quantity, event_time + interval '60 days' "
            "FROM interactions WHERE event_time >= '2011-01-01' AND event_key LIKE 'uci:%'"))
    child = _update(tiny_model, gate=False)
    ranker = child.metrics["ranker"]
    assert child.status == "created" and ranker["warm_start"] is False and ranker["features"] == len(FEATURES)
    assert "fresh ranker" in ranker["fresh"] and str(list(FEATURES[-3:])) in ranker["fresh"]
