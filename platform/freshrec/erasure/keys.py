"""The tombstones' keyed hashes: HMAC-SHA256 under a secret key, so the table names nobody.

A plain hash of a customer id could be reversed by hashing every id; a keyed one cannot without
the key. The key is a setting (``FRESHREC_ERASURE__KEY``); in development, without one, a random
key is made once under ``$FRESHREC_HOME`` (mode 0600). Every process that loads data or forgets
customers must hold the same key, or a reload would not recognise the tombstones.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable

from freshrec.config import Settings

KEY_FILE = "erasure.key"


def erasure_key(settings: Settings) -> bytes:
    if settings.erasure.key is not None:
        return settings.erasure.key.get_secret_value().encode()
    path = settings.home / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes making the key at once keep the first one's.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def keyed_hashes(key: bytes, kind: str, values: Iterable[str]) -> list[bytes]:
    """One HMAC per value; ``kind`` (user, event) keeps a user id and an event key that are the same
    string apart."""
    return [hmac.new(key, f"{kind}:{v}".encode(), hashlib.sha256).digest() for v in values]
