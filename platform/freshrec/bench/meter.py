"""What a measured block cost: wall seconds, this process's peak memory, and what else used the CPUs.

A cost is worth quoting only from a run with the CPUs to itself. ``other_cpu`` is the share of
the machine's CPU capacity that *other* processes used while the block ran: every process but
this one, its children and the PostgreSQL server (which works for the benchmark), counted from
the processes alive at the block's end. So a report can tell clean weeks from shared ones.
"""
from __future__ import annotations

import os
import threading
import time

import psutil

CLEAN_OTHER_CPU = 0.05  # at most 5% of the CPUs busy elsewhere: a clean measurement


def _others() -> dict[tuple[int, float], float]:
    """CPU seconds so far of every process that is not this one, a child of it, or PostgreSQL."""
    me = psutil.Process()
    ours = {me.pid, *(c.pid for c in me.children(recursive=True))}
    out = {}
    for proc in psutil.process_iter(["pid", "name", "create_time", "cpu_times"]):
        info = proc.info
        if info["pid"] in ours or (info["name"] or "").startswith("postgres") or info["cpu_times"] is None:
            continue
        out[(info["pid"], info["create_time"])] = info["cpu_times"].user + info["cpu_times"].system
    return out


class Meter:
    def __enter__(self) -> Meter:
        self.peak, self._stop = psutil.Process().memory_info().rss, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._started, self._before = time.perf_counter(), _others()
        self._thread.start()
        return self

    def _sample(self) -> None:
        proc = psutil.Process()
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.seconds = time.perf_counter() - self._started
        after = _others()
        others = sum(seconds - self._before.get(key, 0.0) for key, seconds in after.items())
        self.other_cpu = max(0.0, others) / max(self.seconds * (os.cpu_count() or 1), 1e-9)

    @property
    def mib(self) -> float:
        return self.peak / 2**20

    def as_dict(self) -> dict:
        return {"wall_s": self.seconds, "peak_rss_mib": self.mib, "other_cpu": self.other_cpu}
