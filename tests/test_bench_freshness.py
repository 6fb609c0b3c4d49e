"""`freshrec bench freshness` with the tiny model, through the CLI, on a fresh home: a live API and a
watcher as processes, events posted over HTTP, latencies until a version that consumed them is served."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_events_posted_to_a_live_api_are_served_by_a_version_whose_watermark_covers_them(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("FRESHREC_DATABASE_URL", None)
    env["FRESHREC_HOME"] = str(tmp_path / "home")
    out = tmp_path / "out"
    cmd = ["freshrec", "bench", "freshness", "--model", "tiny", "--rates", "4", "--seconds", "30", "--min-rows", "40",
           "--max-age", "5", "--port", "8793", "--min-gate-baskets", "1", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    finally:
        subprocess.run(["freshrec", "db", "stop"], cwd=REPO, env=env, capture_output=True, timeout=60)
    assert "4.0 events/s:" in proc.stdout and "| rate_per_s |" in proc.stdout  # the table is printed
    result = json.loads((out / "freshness.json").read_text())
    (row,) = result["rows"]
    assert row["events"] == row["accepted"] + row["rejected_422"] + row["errors"] and row["errors"] == 0
    assert row["accepted"] > 50 and row["updates"] >= 1
    events = [e for e in result["events"] if e["status"] == 200]
    served = [e for e in events if e["latency_s"] == e["latency_s"]]  # not NaN
    assert len(served) == row["served"] >= 1
    assert all(e["latency_s"] >= 0 and e["served"] >= e["posted"] for e in served)
    if row["served"] == row["accepted"]:
        assert row["max_s"] == max(e["latency_s"] for e in served)
    else:  # an accepted event never served is infinitely late: no max
        assert row["max_s"] is None
    assert (out / "freshness.md").exists() and (out / "freshness.png").stat().st_size > 0
