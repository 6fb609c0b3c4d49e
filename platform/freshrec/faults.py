"""Named crash points, for the crash tests (the fail-point pattern of FoundationDB and TiKV's fail-rs).

``FRESHREC_CRASH_AT=<point>`` makes the process SIGKILL itself when it reaches that point: a real,
uncatchable kill at an exact place, which an outside ``kill -9`` could only hit by luck. Unset (the
default), a crash point costs one dictionary lookup. Tests may also hang a callback on a point
(``hooks``), to act at an exact moment from inside: an operator's rollback while an update trains.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable

CRASH_ENV = "FRESHREC_CRASH_AT"
UPDATE_POINTS = ("after-cut", "training", "artifact-written", "before-commit")
# An erasure: its data transaction, and the replay's retiring of the versions that saw the rows.
ERASURE_POINTS = ("erasure-rows-deleted", "erasure-retire")
POINTS = UPDATE_POINTS + ERASURE_POINTS
# ``FRESHREC_PAUSE_AT=<point>=<seconds>``: sleep there, to line two processes up on a race exactly.
PAUSE_ENV = "FRESHREC_PAUSE_AT"
PAUSE_POINTS = ("profile-push", "materialize-written")


hooks: dict[str, Callable[[], None]] = {}


def crash_point(name: str) -> None:
    assert name in POINTS, name
    hook = hooks.pop(name, None)  # runs once
    if hook is not None:
        hook()
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def pause_point(name: str) -> None:
    assert name in PAUSE_POINTS, name
    point, _, seconds = os.environ.get(PAUSE_ENV, "").partition("=")
    if point == name:
        print(f"paused at {name}", file=sys.stderr, flush=True)  # the test waits for this line
        time.sleep(float(seconds or 1))
