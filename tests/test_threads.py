"""``freshrec serve`` computes on ``serving.compute_threads`` threads, and says which field is wrong."""
import os
import subprocess
import sys
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


_CHILD = ("import numpy, torch; from threadpoolctl import threadpool_info; "
          "print(sorted({p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'}), torch.get_num_threads())")


def test_the_limit_holds_for_new_threads_and_worker_processes_and_is_given_back():
    blas, threads, variable = _blas_threads(), _torch_threads(), os.environ.get("OMP_NUM_THREADS")
    assert blas, "numpy's BLAS was not found: the limit would reach nothing"
    if blas == {1} or threads == 1:
        pytest.skip("this host computes on one thread already: a limit of one would change nothing")
    restore = limit_compute_threads(1)
    try:
        assert _blas_threads() == {1} and _torch_threads() == 1
        # uvicorn's worker processes (``--workers``) start with this environment
        child = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True)
        assert child.stdout.split() == ["[1]", "1"]
    finally:
        restore()
    assert _blas_threads() == blas and _torch_threads() == threads
    assert os.environ.get("OMP_NUM_THREADS") == variable


def test_a_bad_thread_count_names_the_field():
    with pytest.raises(pydantic.ValidationError, match="compute_threads"):
        Settings(serving={"compute_threads": 0})
