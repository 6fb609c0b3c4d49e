"""A version's base encoder is checked like its artifacts: a changed base model directory is refused,
not silently loaded under a user tower that no longer matches the published item vectors."""
import shutil
from datetime import date

import pytest
import sqlalchemy as sa

from freshrec.config import get_settings
from freshrec.db import get_engine
from freshrec.features import apply, open_store
from freshrec.ingest import online_retail_batch, write_batch
from freshrec.registry import IncompatibleArtifact, chain
from freshrec.registry.artifacts import load_chain
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.updater import run_update


def test_a_changed_base_model_is_refused(module_db, retail_sample, tiny_model, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    with get_engine().begin() as conn:
        write_batch(conn, online_retail_batch(retail_sample, until=date(2010, 12, 31)), "sample")
    apply(open_store(), get_settings().feast.repo_path)
    first = run_update(TrainingArguments(epochs=1, device="cpu"), GateArguments(enabled=False), base_model=str(base))
    with get_engine().connect() as conn:
        lineage = chain(conn, first.version)
    assert len(lineage[-1]["artifact_sha256"]) == 64 and load_chain(lineage, 128).model is not None

    # Someone replaces the weights in the base model's folder (a re-download, another checkpoint).
    from freshrec.models.base import build_tiny

    shutil.rmtree(base)
    build_tiny(base, seed=1)
    with pytest.raises(IncompatibleArtifact, match="base model .* has changed"):
        load_chain(lineage, 128)
    with get_engine().begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO interactions (event_key, user_id, item_id, event_type, quantity, event_time) "
            "SELECT event_key || '-b', user_id, item_id, event_type, quantity, event_time + interval '40 days' "
            "FROM interactions"))
    with pytest.raises(IncompatibleArtifact):  # nor does an update build on it
        run_update(TrainingArguments(epochs=1, device="cpu"), GateArguments(enabled=False), base_model=str(base))
    with get_engine().connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM model_versions")).scalar() == 1
