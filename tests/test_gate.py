"""The gate judges on evidence, against its parent, P-TopFreq and the best promoted version."""
from datetime import date
from importlib import metadata

import pytest
import sqlalchemy as sa

from freshrec.config import get_settings
from freshrec.db import get_engine
from freshrec.features import apply, open_store
from freshrec.ingest import online_retail_batch, write_batch
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.updater import run_update
from freshrec.updater.gate import decide


def _slices(recall, ndcg=None, baskets=50):
    ndcg = recall if ndcg is None else ndcg
    return {s: {"recall": recall, "ndcg": ndcg, "baskets": baskets} for s in ("gate", "guard")}


def test_a_parent_that_scores_zero_no_longer_lets_anything_through():
    # Before: the parent's 0 made the floor 0. Now P-TopFreq on the same baskets is the floor.
    scores = {"candidate": _slices(0.05), "parent": _slices(0.0), "p_topfreq": _slices(0.30)}
    verdict = decide(scores, GateArguments())
    assert verdict.status == "failed" and "P-TopFreq" in verdict.reason
    scores["candidate"] = _slices(0.31)
    assert decide(scores, GateArguments()).status == "passed"
    # The floor has the tolerance, as the parent's has: ten baskets measure P-TopFreq noisily too.
    scores["candidate"] = _slices(0.28)
    assert decide(scores, GateArguments(tolerance=0.1)).status == "passed"
    assert decide(scores, GateArguments(tolerance=0.05)).status == "failed"


def test_one_basket_is_not_evidence_the_verdict_waits():
    scores = {"candidate": {**_slices(0.5), "gate": {"recall": 0.5, "ndcg": 0.5, "baskets": 1}},
              "parent": _slices(0.4), "p_topfreq": _slices(0.3)}
    verdict = decide(scores, GateArguments(min_baskets=20))
    assert verdict.status == "deferred" and not verdict.promote and "gate 1 baskets" in verdict.reason


def test_drift_within_tolerance_of_each_parent_cannot_compound_past_the_best_version():
    # Each step trails its parent by 9% (inside the 10% tolerance), but the second step is 17% below
    # the best promoted version, scored on the same baskets: rejected.
    gate = GateArguments(tolerance=0.1)
    first = {"candidate": _slices(0.91), "parent": _slices(1.0), "p_topfreq": _slices(0.5)}
    assert decide(first, gate).status == "passed"
    second = {"candidate": _slices(0.828), "parent": _slices(0.91), "p_topfreq": _slices(0.5),
              "best": {**_slices(1.0), "version": 1}}
    verdict = decide(second, gate)
    assert verdict.status == "failed" and "best" in verdict.reason
    del second["best"]
    assert decide(second, gate).status == "passed"  # what the parent-only gate let through


def _update(tiny_model, gate: GateArguments):
    return run_update(TrainingArguments(epochs=1, learning_rate=1e-2), gate, base_model=tiny_model)


def test_too_little_evidence_makes_no_version_and_the_rows_wait(module_db, retail_sample, tiny_model):
    with get_engine().begin() as conn:
        write_batch(conn, online_retail_batch(retail_sample, until=date(2010, 12, 31)), "sample")
    apply(open_store(), get_settings().feast.repo_path)
    assert _update(tiny_model, GateArguments(enabled=False)).version == 1
    # One new basket only: nothing is left to judge it on.
    with get_engine().begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO interactions (event_key, user_id, item_id, event_type, quantity, event_time) "
            "SELECT event_key || '-lone', user_id, item_id, event_type, quantity, event_time + interval '90 days' "
            "FROM interactions WHERE (user_id, event_time) = (SELECT user_id, max(event_time) FROM interactions "
            "GROUP BY user_id ORDER BY max(event_time) DESC, user_id LIMIT 1)"))
    outcome = _update(tiny_model, GateArguments())
    assert outcome.status == "deferred" and outcome.version is None and "too little evidence" in outcome.message
    with get_engine().connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM model_versions")).scalar() == 1
        assert conn.execute(sa.text("SELECT version FROM current_version")).scalar() == 1
        run = conn.execute(sa.text("SELECT status, rows FROM update_runs ORDER BY id DESC LIMIT 1")).one()
    assert run.status == "deferred" and run.rows > 0
    # The rows were not consumed: with the gate off they make version 2, and it records its seed.
    forced = _update(tiny_model, GateArguments(enabled=False))
    assert forced.version == 2 and forced.metrics["rows_new"] == run.rows
    with get_engine().connect() as conn:
        code, seeds = conn.execute(sa.text(
            "SELECT code_version, array_agg(params->>'sample_seed' ORDER BY version) FROM model_versions "
            "GROUP BY code_version")).one()
    assert code == metadata.version("freshrec")  # from the package, not from a .git the image lacks
    assert len(set(seeds)) == 2  # a seed per version, in lineage: not the same replay every week


def test_the_replay_sample_changes_from_version_to_version(module_db):
    """The same data, two cuts: different seeds draw different older rows (a constant seed replayed the
    same 90% of old rows every week)."""
    from freshrec.training.dataset import older_ids, sample_seed
    from freshrec.training.watermark import Cut

    with get_engine().connect() as conn:
        horizon = conn.execute(sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")).scalar()
    cuts = [Cut(horizon, str(int(horizon) + n), ids, None, None) for n, ids in ((1, (7, 8)), (2, (9,)))]
    seeds = [sample_seed(0, c) for c in cuts]
    # The seed follows the rows the cut holds, not its transaction ids (which other work moves).
    assert sample_seed(0, Cut("5", "9", (7, 8), None, None)) == seeds[0]
    draws = [older_ids(get_engine(), horizon, 200, s) for s in seeds]
    assert seeds[0] != seeds[1] and all(len(d) == 200 and len(set(d)) == 200 for d in draws)
    assert len(set(draws[0]) & set(draws[1])) < 150
    assert older_ids(get_engine(), horizon, 200, seeds[0]) == draws[0]  # repeatable for one cut


@pytest.mark.parametrize("bad", [{"min_baskets": 0}, {"tolerance": 1.0}])
def test_gate_arguments_are_checked(bad):
    with pytest.raises(ValueError, match="invalid gate argument"):
        GateArguments(**bad)



def test_baskets_are_never_split_and_a_guard_moment_seen_in_training_is_dropped_whatever_the_time_unit():
    """Basket boundaries and the guard's check compare moments as numbers: the same moment in another
    time unit is the same moment; one a microsecond later is another basket."""
    import pandas as pd

    from freshrec.training.dataset import split_by_basket
    from freshrec.updater.gate import slice_baskets

    base = pd.Timestamp("2011-03-01 10:00", tz="UTC")
    later = [pd.Timedelta(0), pd.Timedelta(0), pd.Timedelta(microseconds=1), pd.Timedelta(hours=1),
             pd.Timedelta(hours=1), pd.Timedelta(hours=2)]
    rows = pd.DataFrame({"user_id": ["a", "a", "a", "b", "b", "a"], "event_timestamp": [base + d for d in later],
                         "interaction_id": range(6), "user_text": "t", "n_events": 1, "n_baskets": 1})
    for fraction in (0.5, 0.4):  # 0.4 asks for a cut inside b's basket (row 4): it moves to the basket's first row
        older, newer = split_by_basket(rows, fraction)
        assert list(older["interaction_id"]) == [0, 1, 2] and list(newer["interaction_id"]) == [3, 4, 5]
    older, newer = split_by_basket(rows, 0.7)  # a's two moments a microsecond apart are two baskets
    assert list(older["interaction_id"]) == [0, 1] and list(newer["interaction_id"]) == [2, 3, 4, 5]

    # Trained rows in microseconds, the guard's in nanoseconds: a's first moment and b's are trained on.
    trained = pd.DataFrame({"user_id": ["a", "b"], "event_timestamp": [base, base + pd.Timedelta(hours=1)]})
    trained["event_timestamp"] = trained["event_timestamp"].astype("datetime64[us, UTC]")
    guard = slice_baskets(rows.iloc[:0], rows, trained, limit=100)["guard"]
    assert list(zip(guard["user_id"], guard["event_timestamp"] - base)) == [
        ("a", pd.Timedelta(microseconds=1)), ("a", pd.Timedelta(hours=2))]
