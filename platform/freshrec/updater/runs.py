"""Every updater run leaves a row in ``update_runs``: started, finished, what came of it.

``freshrec status`` and the API's /metrics read the newest rows: the last update's result and
duration. A run killed outright leaves its row ``running``; the next run that takes the update
lock knows nobody else can hold it, and marks such rows ``abandoned``.
"""
from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine

_START = """
INSERT INTO update_runs (status, trigger, host, pid) VALUES ('running', :trigger, :host, :pid) RETURNING id"""
_FINISH = """
UPDATE update_runs SET status = :status, finished_at = now(), version = :version, rows = :rows, message = :message
WHERE id = :id"""
_ABANDONED = "UPDATE update_runs SET status = 'abandoned', finished_at = now() WHERE status = 'running' AND id <> :id"
_LAST = """
SELECT id, status, version, rows, message, trigger, started_at, finished_at,
       extract(epoch FROM coalesce(finished_at, now()) - started_at)::float8 AS seconds
FROM update_runs WHERE status NOT IN ('locked', 'running') ORDER BY id DESC LIMIT 1"""


class Run:
    def __init__(self, engine: Engine, run_id: int):
        self.engine, self.id = engine, run_id

    def finish(self, status: str, version: int | None = None, rows: int | None = None, message: str = "") -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(_FINISH), {"status": status, "version": version, "rows": rows, "message": message[:2000],
                                            "id": self.id})

    def abandon_others(self) -> None:
        """Called holding the update lock: any other run still marked running was killed."""
        with self.engine.begin() as conn:
            conn.execute(sa.text(_ABANDONED), {"id": self.id})


@contextlib.contextmanager
def recorded(engine: Engine, trigger: str) -> Iterator[Run]:
    """A run row for the block; an exception marks it failed (and propagates)."""
    with engine.begin() as conn:
        run = Run(engine, conn.execute(sa.text(_START), {"trigger": trigger, "host": socket.gethostname(),
                                                         "pid": os.getpid()}).scalar_one())
    try:
        yield run
    except BaseException as err:
        run.finish("failed", message=f"{type(err).__name__}: {err}")
        raise


def last_finished(conn) -> dict | None:
    """The newest run that got the lock and ended (created, no-new-rows, failed or abandoned)."""
    row = conn.execute(sa.text(_LAST)).mappings().first()
    return dict(row) if row else None
