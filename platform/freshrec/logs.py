"""Logging for the long-running parts (updater, watcher, server): standard ``logging``, to stderr,
with timestamps and levels, so cron and Kubernetes logs read like any other service's."""
from __future__ import annotations

import logging
import sys

TIMESTAMPED = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(fmt: str = TIMESTAMPED, level: int = logging.INFO) -> None:
    """Send freshrec's loggers to stderr in ``fmt`` (idempotent: a second call replaces the handler)."""
    root = logging.getLogger("freshrec")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt, datefmt="%Y-%m-%dT%H:%M:%S%z"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
