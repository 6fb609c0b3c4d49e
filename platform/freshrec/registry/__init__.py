"""Model versions: artifacts on storage, rows in SQL, the current pointer.

Names are imported on first use: ``freshrec versions`` or ``promote`` need SQL only, not torch.
"""
from __future__ import annotations

import importlib

_HOMES = {
    "TamperedArtifact": "artifacts", "load_version": "artifacts",
    "UnknownVersion": "versions", "VersionError": "versions", "chain": "versions", "current_version": "versions",
    "list_versions": "versions", "promote": "versions", "rollback": "versions", "history": "versions",
    "IncompatibleArtifact": "artifacts",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'freshrec.registry' has no attribute {name!r}")
    return getattr(importlib.import_module(f"freshrec.registry.{_HOMES[name]}"), name)
