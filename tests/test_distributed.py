"""torchrun with two CPU ranks on gloo: DistributedDataParallel training, one version, published by rank 0.

The version is a LoRA delta on top of a head-only first version; loading its chain must give
back the very item vectors it published to pgvector.
"""
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from safetensors.torch import load_file

from freshrec.config import get_settings
from freshrec.db import get_engine
from freshrec.features import apply, open_store
from freshrec.ingest import online_retail_batch, write_batch
from freshrec.registry import chain, load_version
from freshrec.updater import run_update
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.training.dataset import catalog
from freshrec.models.encoder import Encoder

REPO = Path(__file__).resolve().parents[1]


def test_torchrun_two_ranks_make_one_lora_version(module_db, retail_sample, tiny_model):
    tiny = tiny_model
    with get_engine().begin() as conn:
        write_batch(conn, online_retail_batch(retail_sample, until=date(2010, 12, 31)), "sample")
    apply(open_store(), get_settings().feast.repo_path)
    assert run_update(TrainingArguments(epochs=1, device="cpu"), GateArguments(enabled=False),
                      base_model=tiny).version == 1
    with get_engine().begin() as conn:
        second = write_batch(conn, online_retail_batch(retail_sample, since=date(2011, 1, 1)), "sample")

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "freshrec", "update", "--strategy", "lora",
           "--base-model", tiny, "--no-gate", "--epochs", "2", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr  # the outcome on stdout, the updater's log on stderr
    assert proc.stdout.count("version 2: promoted") == 1 and "rank 1: trained its shards" in proc.stdout
    assert "x 2 ranks" in out
    # DDP keeps the ranks in step: both end with bit-identical trainable weights.
    import re

    digests = re.findall(r"trainable weights sha256 ([0-9a-f]{16})", out)
    assert len(digests) == 2 and digests[0] == digests[1], out

    with get_engine().connect() as conn:
        versions = conn.execute(sa.text("SELECT version, device, strategy FROM model_versions ORDER BY version")).all()
        row_count = conn.execute(sa.text("SELECT row_count FROM watermarks WHERE version = 2")).scalar()
        stored = dict(conn.execute(sa.text("SELECT item_id, embedding::text FROM item_embeddings WHERE version = 2")).all())
        lineage = chain(conn, 2)
    assert [tuple(v) for v in versions] == [(1, "cpu", "head"), (2, "cpu x 2", "lora")]
    assert row_count == second.interactions_inserted

    weights = load_file(f"{lineage[-1]['artifact_uri']}/model.safetensors")
    encoder_keys = [k for k in weights if k.startswith("encoder.")]
    assert encoder_keys and all("lora_" in k for k in encoder_keys)  # the delta only, not the encoder

    loaded = load_version([(r["artifact_uri"], r["artifact_sha256"]) for r in lineage], 128)
    items = catalog(get_engine())
    vecs = Encoder(loaded.model, loaded.tokenizer, loaded.model.bias.device).items(items["item_text"].tolist(), 32)
    published = np.array([np.fromstring(stored[i].strip("[]"), sep=",") for i in items["item_id"]])
    assert np.allclose(vecs, published, atol=1e-4)
