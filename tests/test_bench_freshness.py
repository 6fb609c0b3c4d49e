"""`freshrec bench freshness` with the tiny model, through the CLI, on a fresh home: a live API and a
watcher as processes, events posted over HTTP, latencies until a version that consumed them is served."""
import json

from conftest import run_bench


def test_events_posted_to_a_live_api_are_served_by_a_version_whose_watermark_covers_them(tmp_path):
    out, printed = run_bench(tmp_path, "freshness", "--model", "tiny", "--rates", "4", "--seconds", "30", "--min-rows",
                             "40", "--max-age", "5", "--port", "8793", "--min-gate-baskets", "1", timeout=1500)
    assert "4.0 events/s:" in printed and "| rate_per_s |" in printed  # the table is printed
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
