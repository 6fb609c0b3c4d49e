"""`freshrec bench updates` for 2 weeks with the tiny model, through the CLI, on the bundled data."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARMS = {"stale", "incremental-head", "full-retrain", "popularity", "personal-frequency"}


def test_two_week_run_has_every_arm_sane_metrics_and_exact_watermarks(module_db, tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = ["freshrec", "bench", "updates", "--weeks", "2", "--model", "tiny", "--max-eval-users", "200",
           "--device", "cpu", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    result = json.loads((tmp_path / "updates.json").read_text())
    scored = [r for r in result["rows"] if r["test_week"]]
    assert {(r["arm"], r["test_week"]) for r in scored} == {(a, w) for a in ARMS for w in ("2011-03-07", "2011-03-14")}
    for r in scored:
        assert 0 <= r["recall@20"] <= 1 and 0 <= r["ndcg@20"] <= 1 and r["users"] > 50
    for r in scored:
        if r["arm"] in ("incremental-head", "full-retrain"):
            assert r["train_s"] > 0 and r["rows"] > 0 and r["peak_rss_mib"] > 0
    coverage = result["watermark_coverage"]["head"]
    # Every loaded row lies in exactly one watermark along the incremental arm's chain.
    assert coverage["loaded"] == coverage["consumed"] == coverage["distinct_consumed"] and coverage["audit_consistent"]
    assert (tmp_path / "updates.md").read_text().startswith("| week |")
    assert (tmp_path / "updates.png").read_bytes()[:4] == b"\x89PNG"
