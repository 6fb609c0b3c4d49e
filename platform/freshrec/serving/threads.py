"""The API's arithmetic threads: one per process by default (``serving.compute_threads``).

A request's arithmetic is small (one customer against the catalog), and a second BLAS or OpenMP
thread spins between the calls, taking a core that PostgreSQL and the other requests need (seen
by hand at 10x the bundled shop, sequential requests: most of a core for that one thread). More
cores serve more requests through more processes (``freshrec serve --workers``).
"""
from __future__ import annotations

import os

# Read by OpenBLAS, MKL and OpenMP when they load: the setting reaches uvicorn's worker processes.
_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_compute_threads(threads: int):
    """Limit this process (and the processes it starts) to ``threads`` BLAS and torch threads; returns a
    function that puts this process's limits back.

    Call it from the main thread, before the threads that compute start: torch's count applies to
    threads started later, and OpenBLAS may ignore a limit set from another thread once the main
    thread has set one."""
    import torch
    from threadpoolctl import threadpool_limits

    environment = {name: os.environ.get(name) for name in _VARIABLES}
    os.environ.update({name: str(threads) for name in _VARIABLES})
    before = torch.get_num_threads()
    limits = threadpool_limits(threads)
    torch.set_num_threads(threads)

    def restore() -> None:
        torch.set_num_threads(before)
        limits.restore_original_limits()
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    return restore
