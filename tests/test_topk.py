"""``top_columns``: each row's k highest scores, highest first, as a full sort would give them."""
from __future__ import annotations

import numpy as np
import pytest

from freshrec.topk import top_columns


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_each_rows_k_highest_columns_highest_first(dtype):
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((300, 5_000)).astype(dtype)
    scores[rng.random(scores.shape) < 0.01] = -np.inf  # masked items (a user's own) sink
    top = top_columns(scores, 30)
    assert top.shape == (300, 30)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :30]  # no ties in continuous scores
    assert np.array_equal(top, expected)


def test_nan_scores_rank_last_as_with_a_sort():
    """A NaN (a broken weight, say) is never among the best: torch's top-k alone would rank it first."""
    scores = np.array([[np.nan, 0.2, 0.9, np.nan, -np.inf, 0.5]], np.float32)
    assert top_columns(scores, 3).tolist() == [[2, 5, 1]]
    assert set(top_columns(scores, 6)[0, 3:].tolist()) == {0, 3, 4}  # NaN and -inf: below every number


def test_k_is_capped_at_the_columns_and_may_be_zero():
    scores = np.array([[0.1, 0.3, 0.2], [3.0, -np.inf, 1.0]], np.float32)
    assert top_columns(scores, 10).tolist() == [[1, 2, 0], [0, 2, 1]]
    assert top_columns(scores, 0).shape == (2, 0)
    assert top_columns(scores[:, ::2], 1).tolist() == [[1], [0]]  # a strided view
