"""``freshrec serve`` computes on ``serving.compute_threads`` threads, and says which field is wrong."""
import os
import threading

import pydantic
import pytest
import torch
from threadpoolctl import threadpool_info

from freshrec.config import Settings
from freshrec.serving.threads import limit_compute_threads


def _blas_threads() -> set[int]:
    return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}


def _torch_threads() -> int:
    """torch's count as a thread started now sees it: the API's request threads start after the limit."""
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


def test_the_limit_holds_for_new_threads_and_worker_processes_and_is_given_back():
    blas, threads, variable = _blas_threads(), _torch_threads(), os.environ.get("OMP_NUM_THREADS")
    assert blas, "numpy's BLAS was not found: the limit would reach nothing"
    restore = limit_compute_threads(1)
    try:
        assert _blas_threads() == {1} and _torch_threads() == 1
        assert os.environ["OPENBLAS_NUM_THREADS"] == os.environ["OMP_NUM_THREADS"] == "1"  # uvicorn's workers
    finally:
        restore()
    assert _blas_threads() == blas and _torch_threads() == threads
    assert os.environ.get("OMP_NUM_THREADS") == variable


def test_a_bad_thread_count_names_the_field():
    with pytest.raises(pydantic.ValidationError, match="compute_threads"):
        Settings(serving={"compute_threads": 0})
