"""Where the files that are not Python modules live: the Alembic migrations and the Feast repository.

A wheel carries them inside the package (``freshrec/_bundled/``, see setup.py); an editable
install (``pip install -e .``) reads them from the checkout's top level, where they are edited.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parents[1]


def bundled(name: str) -> Path:
    """``migrations`` or ``feature_repo``: the wheel's copy, else the checkout's."""
    inside = _PACKAGE / "_bundled" / name
    return inside if inside.is_dir() else _CHECKOUT / name
