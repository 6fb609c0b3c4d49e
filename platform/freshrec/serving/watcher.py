"""Follow the ``deployments`` pointer: LISTEN for the NOTIFY that every pointer move sends, and poll
as a fallback (a notification sent while the connection was down is not replayed).

On a change the new version loads in this background thread (artifact sha256 verified), then one
reference assignment swaps tower and index together. A version that fails to load (tampered, say)
is refused: the old snapshot keeps serving, and the failure shows in /metrics and the log.
"""
from __future__ import annotations

import logging
import threading

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from freshrec.ranking.inputs import serving_clock
from freshrec.serving.snapshot import Snapshot, load_snapshot

log = logging.getLogger("freshrec.serving")
CHANNEL = "freshrec_deployments"


class SnapshotHolder:
    """The serving snapshot, swapped whole; readers take ``current`` once per request."""

    def __init__(self, engine: Engine, on_swap=None, on_failure=None):
        self.engine = engine
        self.store = None  # Feast, set once opened: snapshots read the online item aggregates through it
        self.current: Snapshot | None = None
        self.refused: dict[int, str] = {}  # version -> why it was not loaded
        self._on_swap, self._on_failure = on_swap or (lambda s: None), on_failure or (lambda v, e: None)
        self._sync_lock = threading.Lock()

    def pointer(self) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.text("SELECT version FROM current_version")).scalar()

    def sync(self) -> bool:
        """Load and swap in the pointer's version if it is not the one serving; True if swapped."""
        with self._sync_lock:
            target = self.pointer()
            serving = self.current.version if self.current else None
            if target == serving:
                self.refused.clear()  # the pointer moved away from a refused version: try it afresh next time
            if target is None or target == serving or target in self.refused:
                return False
            try:
                snapshot = load_snapshot(self.engine, target, self.store)
            except Exception as err:  # noqa: BLE001 - any failure must leave the old version serving
                self.refused[target] = f"{type(err).__name__}: {err}"
                log.error("version %s refused, version %s keeps serving: %s", target, serving, err)
                self._on_failure(target, err)
                return False
            try:
                with self.engine.connect() as conn:
                    snapshot.prime(serving_clock(conn), previous=self.current)
            except Exception as err:  # noqa: BLE001 - requests read what priming would have read
                log.warning("version %s serves unprimed: %s", target, err)
            self.current = snapshot  # the swap: one assignment
            log.info("now serving version %s (was %s)", target, serving)
            self._on_swap(snapshot)
            return True


class PointerWatcher(threading.Thread):
    """Swaps versions on the pointer's moves; ``also`` runs on every wake-up too (the search side
    catching up with the catalog)."""

    def __init__(self, holder: SnapshotHolder, database_url: str, poll_seconds: float, also=None):
        super().__init__(name="freshrec-pointer-watcher", daemon=True)
        self.holder, self.url, self.poll_seconds = holder, database_url, poll_seconds
        self.also = also or (lambda: None)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.holder.sync()  # anything moved while we were not listening
                    while not self.stopping.is_set():
                        # Wakes on a NOTIFY, or after poll_seconds: either way, compare and maybe swap.
                        for _ in conn.notifies(timeout=self.poll_seconds, stop_after=1):
                            pass
                        self.holder.sync()
                        self.also()
            except Exception as err:  # noqa: BLE001 - a lost connection must not end the watcher
                log.warning("pointer watcher: %s; retrying", err)
                self.stopping.wait(self.poll_seconds)

    def stop(self) -> None:
        self.stopping.set()
