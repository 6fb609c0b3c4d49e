"""Ranking metrics against hand-computed cases."""
import math

import numpy as np
import pytest

from freshrec.training.evaluate import ranked_metrics, recall_ndcg, top_k


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
    assert top_k(scores, 2).tolist() == [[1, 3], [0, 1]]
    ids = np.array(["a", "b", "c", "d"])
    # user 1 ranks b, d, c, a and bought {d}; user 2 ranks a, b and bought {c}.
    recall, ndcg = recall_ndcg(scores, ids, [{"d"}, {"c"}], k=2)
    assert recall == 0.5 and ndcg == pytest.approx(0.5 / math.log2(3))
