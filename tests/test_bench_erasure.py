"""`freshrec bench erasure` with the tiny model, through the CLI, on a fresh home: three customers forgotten
at three depths, each replay measured, quality paired before and after, and the proof empty at the end."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_forgetting_three_customers_is_measured_against_weekly_updates_and_a_full_retrain(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("FRESHREC_DATABASE_URL", None)
    env["FRESHREC_HOME"] = str(tmp_path / "home")
    out = tmp_path / "out"
    cmd = ["freshrec", "bench", "erasure", "--weeks", "3", "--max-users", "100", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    finally:
        subprocess.run(["freshrec", "db", "stop"], cwd=REPO, env=env, capture_output=True, timeout=60)
    assert "| customer first seen |" in proc.stdout  # the table is printed
    result = json.loads((out / "erasure.json").read_text())
    rows = {r["depth"]: r for r in result["erasures"]}
    assert list(rows) == ["last week", "middle week", "first 13 weeks"]
    assert len({r["user_id"] for r in rows.values()}) == 3
    # The deeper the customer, the more live versions learned from them.
    assert 1 <= rows["last week"]["versions_tainted"] <= rows["first 13 weeks"]["versions_tainted"]
    assert rows["first 13 weeks"]["choice"] in ("chain", "fresh root")
    for r in rows.values():
        assert r["versions_trained"] >= 1 and r["replay_s"] > 0 and r["forget_s"] > 0
        assert r["replay_over_full_retrain"] > 0 and r["replay_over_weekly_updates"] > 0
        for metric in ("recall", "ndcg"):
            diff = r["quality"][metric]["after_minus_before"]
            assert diff["lo"] <= diff["mean"] <= diff["hi"]
    assert result["proof_rows_after"] == 0 and result["full_retrain"]["update_s"] > 0
