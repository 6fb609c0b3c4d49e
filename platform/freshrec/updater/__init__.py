"""The updater: the job freshrec exists for (cut -> features -> towers -> ranker -> gate -> publish).

Names are imported on first use: the CLI reads the watcher's defaults without importing torch.
"""
from __future__ import annotations

import importlib

_HOMES = {"UPDATE_LOCK": "freshness", "UpdateOutcome": "job", "code_version": "job", "run_update": "job"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'freshrec.updater' has no attribute {name!r}")
    return getattr(importlib.import_module(f"freshrec.updater.{_HOMES[name]}"), name)
