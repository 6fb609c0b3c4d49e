"""`freshrec bench scale --factor 1,3` with the tiny model, through the CLI, on a fresh home: every measure of
every factor, and the growth table beside the new rows' growth."""
import json

from conftest import run_bench


def test_a_three_times_shop_is_measured_beside_the_bundled_one(tmp_path):
    out, _ = run_bench(tmp_path, "scale", "--factor", "1,3", "--seconds", "2", "--concurrency", "1", "--port", "8805",
                       timeout=2400)
    result = json.loads((out / "scale.json").read_text())
    one, three = result["rows"]
    assert (one["factor"], three["factor"]) == (1, 3)
    assert three["rows_interactions"] == 3 * one["rows_interactions"]  # three independent copies
    assert three["v2_new_rows"] == 3 * one["v2_new_rows"]
    # The same customers' requests are timed at both factors (copies of them, with the same histories).
    assert one["api_customers"] == three["api_customers"] > 100
    assert one["api_customers_rows"] == three["api_customers_rows"] > 0
    for row in (one, three):
        assert row["v1_s"] > 0 and row["v2_s"] > 0 and 0 < row["v2_over_v1"]
        # The wall splits into process start (imports alone take seconds), the steps, and publishing.
        for v in ("v1", "v2"):
            assert 1.0 < row[f"{v}_start_s"] < row[f"{v}_s"] and 0 < row[f"{v}_publish_s"] < row[f"{v}_s"]
        assert row["v2_peak_rss_mib"] > 100 and row["api_rss_mib"] > 100 and row["api_ready_s"] > 0
        assert row["api_rss_held_mib"] > 100 and row["api_partners_held_s"] > 0
        assert row["api_hot_swap_s"] > 0 and row["api_p99_ms_c1"] >= row["api_p50_ms_c1"] > 0 and row["api_errors_c1"] == 0
    # Feast's own server is the yardstick here, not the system under test: its rare failed request (one in a
    # 10-second run at 1x, once) is recorded in the JSON; more than two fail this.
    assert one["api_feast_serve_p99_ms_c1"] >= one["api_feast_serve_p50_ms_c1"] > 0 and one["api_feast_serve_errors_c1"] <= 2
    assert one["api_p99_over_feast_serve_c1"] > 0 and one["api_p50_over_feast_serve_c1"] > 0
    # The ratio to feast serve is taken in turns; the API's own figures, as at every factor, in one stretch.
    assert one["api_p99_over_feast_serve_c1"] == one["api_in_turns_p99_ms_c1"] / one["api_feast_serve_p99_ms_c1"]
    assert one["api_in_turns_errors_c1"] == 0 and "api_in_turns_p99_ms_c1" not in three
    assert "api_p99_over_feast_serve_c1" in (out / "scale.md").read_text()
    assert "api_feast_serve_p99_ms_c1" not in three  # the yardstick is measured at 1x only
    (grown,) = result["growth"]
    assert grown["factor"] == 3 and grown["new rows x"] == 3 and "train_s" in grown and "publish_s" in grown
    assert (out / "scale.png").read_bytes()[:4] == b"\x89PNG"
