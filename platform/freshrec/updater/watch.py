"""``freshrec update --watch``: a long-running updater that keeps the served model fresh.

    freshrec update --watch                           # defaults: 1,000 rows or 60 s, whichever first
    freshrec update --watch --min-rows 200 --max-age 30

It sleeps until PostgreSQL notifies it of new interactions (a statement-level trigger sends
``NOTIFY freshrec_interactions``), or for ``poll`` seconds at most (a notification sent while it
was disconnected is not replayed). It updates once at least ``min_rows`` rows are past the
newest watermark, or the oldest of them has waited ``max_age`` seconds: materialize (the daily
aggregates and the online store), then one update.

- A failed update backs off: 10 s, 20 s, 40 s, ... up to 10 minutes; a success resets it.
- SIGTERM (or Ctrl-C) lets the update in progress finish and publish, then exits. A second one
  abandons it at once: like a kill, which leaves no partial state (the crash tests prove it; the
  next run sweeps the artifact directory).
- Only one watcher runs per database (an advisory lock held for its life); a second says so and
  exits with status 3. Updates themselves still take the update lock, so a manual
  ``freshrec update`` or the GPU CronJob never runs beside it.
"""
from __future__ import annotations

import logging
import os
import signal
import time

import psycopg
import sqlalchemy as sa

from freshrec.config import Settings, get_settings
from freshrec.db import database_url, get_engine
from freshrec.erasure import due_erasures, run_due
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.updater.args import WatchArguments
from freshrec.updater.freshness import WATCH_LOCK, unseen
from freshrec.updater.job import UpdateOutcome, run_update

log = logging.getLogger("freshrec.watch")
CHANNEL = "freshrec_interactions"
ANOTHER_WATCHER = 3  # exit status: a watcher already runs on this database


class _Signals:
    """First SIGTERM/SIGINT: stop after the current update. Second: abandon it now."""

    def __init__(self):
        self.stopping = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.stopping:
            log.warning("second %s: abandoning the update in progress", signal.Signals(signum).name)
            os._exit(128 + signum)
        self.stopping = True
        log.info("%s: finishing the update in progress, then exiting", signal.Signals(signum).name)


def _due(state: dict, args: WatchArguments, deferred_at: int = 0) -> bool:
    """Enough rows, or old enough ones; after a deferral (too little evidence), only once enough more came."""
    rows, age = state["rows_unseen"], state["oldest_unseen_seconds"] or 0.0
    # Growth that can change the verdict: a tenth more rows, or min_rows more, whichever comes first
    # (one row more is one update more, deferred again).
    if deferred_at and rows < deferred_at + max(1, min(deferred_at // 10, args.min_rows)):
        return False
    return rows >= args.min_rows or (rows > 0 and age >= args.max_age)


def _wait(state: dict, args: WatchArguments, not_before: float | None, deferred: bool = False) -> float:
    """Sleep until rows arrive, the oldest row comes due, a back-off ends, or the poll interval does."""
    if not_before is not None:
        wait = not_before - time.monotonic()
    elif state["rows_unseen"] and not deferred:
        wait = args.max_age - (state["oldest_unseen_seconds"] or 0.0)
    else:
        wait = args.poll
    return min(max(wait, 0.05), args.poll)


def _update(store, train: TrainingArguments, gate: GateArguments, base_model, settings, candidates) -> UpdateOutcome:
    from freshrec.features import materialize

    started = time.perf_counter()
    materialize(store, engine=get_engine(settings))
    outcome = run_update(train, gate, base_model=base_model, settings=settings, trigger="watch", candidates=candidates)
    log.info("%s (%.1f s)", outcome.message, time.perf_counter() - started)
    return outcome


def watch(train: TrainingArguments, gate: GateArguments, args: WatchArguments, base_model: str | None = None,
          settings: Settings | None = None, candidates=None) -> int:
    """Run until stopped; returns the process exit status."""
    from freshrec.features import open_store

    settings = settings or get_settings()
    # Resolved once: after a restart the watcher waits for the server, it does not start one itself.
    url, engine = database_url(settings), get_engine(settings)
    store, signals = open_store(settings), _Signals()
    progress = _Progress()
    lost = 0  # connections lost in a row
    while True:
        try:
            with psycopg.connect(url, autocommit=True) as listener:
                # The lock lives in this session: after a reconnect it is taken again, and another
                # watcher that took it meanwhile keeps it.
                if not listener.execute("SELECT pg_try_advisory_lock(%s)", (WATCH_LOCK,)).fetchone()[0]:
                    log.error("another watcher is running on this database; exiting")
                    return ANOTHER_WATCHER
                listener.execute(f"LISTEN {CHANNEL}")
                if lost:
                    log.info("reconnected to the database after %d failed attempts", lost)
                else:
                    log.info("watching: an update at %d new rows or when the oldest has waited %.0f s (poll %.0f s)",
                             args.min_rows, args.max_age, args.poll)
                lost = 0
                _watch_on(listener, engine, store, signals, progress, train, gate, args, base_model, settings, candidates)
            log.info("watcher stopped after %d updates", progress.updates)
            return 0
        except (psycopg.OperationalError, sa.exc.OperationalError, sa.exc.InterfaceError) as err:
            # A database restart, a failover: keep trying, backing off, rather than die.
            lost += 1
            delay = min(args.backoff * 2 ** (lost - 1), 60.0)
            log.warning("lost the database (%s); reconnecting in %.0f s", str(err).strip().splitlines()[0], delay)
            engine.dispose()  # pooled connections to the old server are dead
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not signals.stopping:
                time.sleep(0.2)
            if signals.stopping:
                return 0


class _Progress:
    """What the watch loop carries across reconnections."""

    def __init__(self):
        self.failures, self.not_before, self.updates, self.deferred_at = 0, 0.0, 0, 0


def _watch_on(listener, engine, store, signals, p: _Progress, train, gate, args, base_model, settings, candidates) -> None:
    while not signals.stopping and (args.max_updates is None or p.updates < args.max_updates):
        with engine.connect() as conn:
            state = unseen(conn)
            erasures = due_erasures(conn) if time.monotonic() >= p.not_before else []
        if erasures:  # before any update: a customer's erasure waits for no new rows
            try:
                outcome = run_due(settings, store=store)
                log.info(outcome.message)
                p.failures = 0
                if outcome.status != "done":  # another process holds the lock (an update, a replay): not a busy loop
                    p.not_before = time.monotonic() + args.poll
            except Exception:  # noqa: BLE001 - recorded on the erasure (state failed); retried after a back-off
                p.failures += 1
                p.not_before = time.monotonic() + min(args.backoff * 2 ** (p.failures - 1), 600.0)
                log.exception("erasure replay failed (%d in a row)", p.failures)
            continue
        if _due(state, args, p.deferred_at) and time.monotonic() >= p.not_before:
            try:
                outcome = _update(store, train, gate, base_model, settings, candidates)
                p.failures, p.deferred_at = 0, 0
                if outcome.status == "created":
                    p.updates += 1
                elif outcome.status == "deferred":
                    # The gate needs more held-out baskets: try again once more rows have come.
                    p.deferred_at = state["rows_unseen"]
                    p.not_before = time.monotonic() + args.poll
                else:
                    # Another updater holds the lock (a manual run, the GPU job), or the cut
                    # found nothing yet (an old open transaction holds the horizon back):
                    # look again after a poll, not at once.
                    p.not_before = time.monotonic() + args.poll
            except Exception:  # noqa: BLE001 - the watcher outlives a failed update
                p.failures += 1
                delay = min(args.backoff * 2 ** (p.failures - 1), 600.0)
                p.not_before = time.monotonic() + delay
                log.exception("update failed (%d in a row); next try in %.0f s", p.failures, delay)
            continue
        waiting = p.not_before if time.monotonic() < p.not_before else None
        for _ in listener.notifies(timeout=_wait(state, args, waiting, bool(p.deferred_at)), stop_after=1):
            pass  # a notification: rows arrived, look again
