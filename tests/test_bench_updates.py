"""`freshrec bench updates` for 2 weeks with the tiny model, through the CLI, on the bundled data."""
import json

import pandas as pd

from conftest import run_bench

ARMS = {"pipeline-incremental-head", "pipeline-full-retrain-head", "stale", "tower-incremental-head",
        "tower-full-retrain-head", "tifu-knn", "p-topfreq", "popularity", "tower-explore", "copurchase-explore",
        "popularity-explore", "candidates-small", "candidates-large"}
METRICS = ("recall", "ndcg", "recall_repeat", "ndcg_repeat", "recall_explore", "ndcg_explore")


def test_two_week_run_has_every_arm_split_metrics_intervals_and_exact_watermarks(tmp_path):
    out, _ = run_bench(tmp_path, "updates", "--weeks", "2", "--model", "tiny", "--max-eval-users", "200", "--device", "cpu",
                       timeout=1200)
    result = json.loads((out / "updates.json").read_text())
    weeks = {("2011-03-07"), ("2011-03-14")}
    assert {(r["arm"], r["test_week"]) for r in result["rows"]} == {(a, w) for a in ARMS for w in weeks}
    users = pd.read_parquet(out / "updates-users.parquet")
    assert set(users["arm"]) == ARMS and users.groupby(["arm", "test_week"]).size().min() > 50
    for m in METRICS:
        values = users[m].dropna()
        assert len(values) and values.between(0, 1).all()
    # Explore sources never propose an item the user had: their repeat recall is exactly zero.
    explore = users[users["arm"].str.endswith("-explore")]
    assert (explore["recall_repeat"].dropna() == 0).all()
    # The pipelines ranked in full report their candidate pools: more candidates, more coverage.
    pools = {a: result["summary"]["arms"][a] for a in ("candidates-small", "pipeline-incremental-head", "candidates-large")}
    assert [p["candidates"] for p in pools.values()] == sorted(p["candidates"] for p in pools.values())
    assert all(0 < p["coverage"]["mean"] <= 1 for p in pools.values())
    for arm, summary in result["summary"]["arms"].items():
        for m in METRICS:
            x = summary[m]  # a percentile interval need not hold the mean when skewed; it is ordered and in range
            assert 0 <= x["lo"] <= x["hi"] <= 1 and 0 <= x["mean"] <= 1, (arm, m, x)
    ratio = result["summary"]["targets"]["head"]["recall_vs_p_topfreq"]
    assert 0 < ratio["lo"] <= ratio["hi"] and ratio["mean"] > 0
    costs = {c["arm"] for c in result["costs"]}
    assert costs == {"pipeline-incremental-head", "pipeline-full-retrain-head"}
    assert all(c["train_s"] > 0 and c["peak_rss_mib"] > 0 and 0 <= c["other_cpu"] for c in result["costs"])
    coverage = result["watermark_coverage"]["pipeline-incremental-head"]
    # Every loaded row lies in exactly one watermark along the incremental arm's chain.
    assert coverage["loaded"] == coverage["consumed"] == coverage["distinct_consumed"] and coverage["audit_consistent"]
    # Search is scored for every update week's version, by the pipeline and the references.
    search = pd.DataFrame(result["search"])
    assert search["week"].nunique() == 2 and {"pipeline", "pre-trained encoder"} <= set(search["arm"])
    assert (search["queries"] > 0).all() and search["hit"].between(0, 1).all()
    assert (out / "updates.md").read_text().startswith("| arm | Recall@20 |")
    assert (out / "updates.png").read_bytes()[:4] == b"\x89PNG"
