"""The gate judges on evidence: with no held-out baskets to compare on, a candidate is rejected."""
from datetime import date
from importlib import metadata

import sqlalchemy as sa

from freshrec.config import get_settings
from freshrec.db import get_engine
from freshrec.features import apply, open_store
from freshrec.ingest import online_retail_batch, write_batch
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.updater import run_update


def _update(tiny_model, gate: bool):
    return run_update(TrainingArguments(epochs=1, learning_rate=1e-2), GateArguments(enabled=gate), base_model=tiny_model)


def test_a_gate_without_evidence_rejects_and_the_version_records_why(module_db, retail_sample, tiny_model):
    with get_engine().begin() as conn:
        write_batch(conn, online_retail_batch(retail_sample, until=date(2010, 12, 31)), "sample")
    apply(open_store(), get_settings().feast.repo_path)
    assert _update(tiny_model, gate=False).version == 1
    # One new basket only: it all goes to training, nothing is left for the gate's slice.
    with get_engine().begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO interactions (event_key, user_id, item_id, event_type, quantity, event_time) "
            "SELECT event_key || '-lone', user_id, item_id, event_type, quantity, event_time + interval '90 days' "
            "FROM interactions WHERE (user_id, event_time) = (SELECT user_id, max(event_time) FROM interactions "
            "GROUP BY user_id ORDER BY max(event_time) DESC, user_id LIMIT 1)"))
    outcome = _update(tiny_model, gate=True)
    assert outcome.status == "created" and not outcome.promoted
    with get_engine().connect() as conn:
        status, metrics, code = conn.execute(sa.text(
            "SELECT status, metrics, code_version FROM model_versions WHERE version = 2")).one()
        assert conn.execute(sa.text("SELECT version FROM current_version")).scalar() == 1
    assert status == "rejected" and metrics["gate_reason"].startswith("failed: no evidence")
    assert metrics["gate_tolerance_relative"] == 0.1 and metrics["slices"]["gate_rows"] == 0
    assert code == metadata.version("freshrec")  # from the package, not from a .git the image lacks
