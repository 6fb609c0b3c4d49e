"""`freshrec bench erasure` with the tiny model, through the CLI, on a fresh home: three customers forgotten
at three depths, each replay measured, quality paired before and after, and the proof empty at the end."""
import json

from conftest import run_bench


def test_forgetting_three_customers_is_measured_against_weekly_updates_and_a_full_retrain(tmp_path):
    out, printed = run_bench(tmp_path, "erasure", "--weeks", "3", "--max-users", "100", timeout=1800)
    assert "| customer first seen |" in printed  # the table is printed
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
