"""Ranking metrics against hand-computed cases."""
import math

import numpy as np
import pytest

from freshrec.topk import top_columns
from freshrec.training.evaluate import ranked_metrics, recall_ndcg


def test_ranked_metrics_by_hand():
    # user 1: bought {a, c}; ranked a, b, c -> hits at ranks 1 and 3.
    # recall@3 = 2 / min(2, 3) = 1; DCG = 1 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3).
    recall, ndcg = ranked_metrics([["a", "b", "c"]], [{"a", "c"}], k=3)
    assert recall == 1.0 and ndcg == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    # user 2: bought {x, y, z}, k=2, ranked x, q -> 1 hit of min(3, 2) = 2 possible; DCG 1, IDCG 1 + 1/log2(3).
    recall, ndcg = ranked_metrics([["x", "q"]], [{"x", "y", "z"}], k=2)
    assert recall == 0.5 and ndcg == pytest.approx(1 / (1 + 1 / math.log2(3)))
    # no hits
    assert ranked_metrics([["q", "r"]], [{"x"}], k=2) == (0.0, 0.0)
    # means over users
    recall, _ = ranked_metrics([["a"], ["q"]], [{"a"}, {"x"}], k=1)
    assert recall == 0.5
    assert ranked_metrics([], [], k=5) == (0.0, 0.0)


def test_scores_rank_like_the_lists():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]])
    assert top_columns(scores, 2).tolist() == [[1, 3], [0, 1]]
    ids = np.array(["a", "b", "c", "d"])
    # user 1 ranks b, d, c, a and bought {d}; user 2 ranks a, b and bought {c}.
    recall, ndcg = recall_ndcg(scores, ids, [{"d"}, {"c"}], k=2)
    assert recall == 0.5 and ndcg == pytest.approx(0.5 / math.log2(3))


def test_repeat_and_explore_split_by_hand():
    from freshrec.bench.metrics import user_metrics

    # bought {a, b, x}; had {a, b, c} before: repeat {a, b}, explore {x}. Ranked a, x, c, b (k=4).
    m = user_metrics(["a", "x", "c", "b"], {"a", "b", "x"}, {"a", "b", "c"}, k=4)
    assert m["recall"] == 1.0 and m["recall_repeat"] == 1.0 and m["recall_explore"] == 1.0
    # repeat hits at ranks 1 and 4: DCG 1 + 1/log2(5); ideal 1 + 1/log2(3)
    assert m["ndcg_repeat"] == pytest.approx((1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert m["ndcg_explore"] == pytest.approx(1 / math.log2(3))  # x at rank 2 of an ideal rank 1
    # nothing new bought: explore is undefined (NaN), not zero
    only_repeat = user_metrics(["a"], {"a"}, {"a"}, k=1)
    assert math.isnan(only_repeat["recall_explore"]) and only_repeat["recall_repeat"] == 1.0


def test_bootstrap_intervals_cover_the_mean_and_resample_users():
    import pandas as pd

    from freshrec.bench.metrics import bootstrap, ratio_interval

    rng = np.random.default_rng(0)
    # 100 users, 10 weeks each; a user's weeks share that user's level (some users are easy to rank
    # for, some hard), as in the benchmark: rows of one user are not independent draws.
    users = np.repeat([f"u{i}" for i in range(100)], 10)
    level = np.repeat(rng.uniform(0.1, 0.9, 100), 10)
    frame = pd.DataFrame({"user": users, "week": np.tile([f"w{i}" for i in range(10)], 100), "arm": "a",
                          "recall": np.clip(level + rng.normal(0, 0.05, 1000), 0, 1)})
    mean, lo, hi = bootstrap(frame, "recall")
    assert lo < mean < hi and mean == pytest.approx(frame["recall"].mean())
    # Resampling rows as if independent would claim ~3x the precision the users support.
    rows = frame["recall"].to_numpy()
    row_means = [rng.choice(rows, len(rows)).mean() for _ in range(1000)]
    row_width = np.percentile(row_means, 97.5) - np.percentile(row_means, 2.5)
    assert hi - lo > 2.5 * row_width
    # about 4 standard errors of a mean over 100 user levels ~ U(0.1, 0.9) (sd 0.23): ~0.09
    assert 0.06 < hi - lo < 0.13
    # a constant value has no spread at all
    assert bootstrap(frame.assign(recall=0.5), "recall") == (0.5, 0.5, 0.5)
    # an arm exactly 1.2x another, user by user: the ratio is 1.2 with no doubt
    both = pd.concat([frame, frame.assign(arm="b", recall=frame["recall"] * 1.2)])
    ratio, lo, hi = ratio_interval(both, "b", "a", "recall")
    assert ratio == pytest.approx(1.2) and lo == pytest.approx(1.2) and hi == pytest.approx(1.2)
