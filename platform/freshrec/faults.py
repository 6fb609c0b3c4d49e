"""Named crash points, for the crash tests (the fail-point pattern of FoundationDB and TiKV's fail-rs).

``FRESHREC_CRASH_AT=<point>`` makes the process SIGKILL itself when it reaches that point: a real,
uncatchable kill at an exact place, which an outside ``kill -9`` could only hit by luck. Unset (the
default), a crash point costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal

CRASH_ENV = "FRESHREC_CRASH_AT"
POINTS = ("after-cut", "training", "artifact-written", "before-commit")


def crash_point(name: str) -> None:
    assert name in POINTS, name
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
