"""Where the database is, and one SQLAlchemy engine for it."""
from __future__ import annotations

import time
from functools import lru_cache
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from freshrec.config import Settings, get_settings
from freshrec.db import embedded


class DatabaseError(RuntimeError):
    """The database cannot be used by freshrec; the message says why in one line."""


def database_url(settings: Settings | None = None) -> str:
    """A libpq URL (``postgresql://``) that psql, psycopg and Feast accept; starts the embedded server if needed."""
    settings = settings or get_settings()
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return embedded.start(settings.home).url


def sqlalchemy_url(url: str) -> str:
    """The same URL with SQLAlchemy's psycopg 3 driver named."""
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def connection_parts(url: str) -> dict[str, str]:
    """host, port, database, user and password of a URL, as Feast's Postgres config wants them."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return {
        "host": query.get("host", [parts.hostname or "127.0.0.1"])[0],
        "port": str(parts.port or 5432),
        "database": parts.path.lstrip("/") or "postgres",
        "user": parts.username or "postgres",
        "password": parts.password or "",
    }


# A pooled connection used this recently is taken as alive without a ping (HikariCP's
# ``aliveBypassWindowMs``, 500 ms by default): the ping is a round trip, a tenth of a returning
# customer's recommendation, paid on every checkout. A connection idle for longer, which a database
# restart or an idle timeout may have closed, is pinged; a dead one invalidates the pool, as
# ``pool_pre_ping`` does, and the checkout takes a new connection. The price: after a restart, a
# connection used within the window fails its next statement (an API request answers 503), and
# SQLAlchemy then invalidates the pool.
ALIVE_BYPASS_S = 0.5


def _ping_idle(engine: Engine) -> None:
    dialect = engine.dialect

    @sa.event.listens_for(engine, "connect")  # a new connection has just proved itself
    @sa.event.listens_for(engine, "checkin")
    def used(dbapi_connection, record) -> None:
        record.info["returned_at"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def taken(dbapi_connection, record, proxy) -> None:
        if time.monotonic() - record.info.get("returned_at", float("-inf")) < ALIVE_BYPASS_S:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as err:
            if dialect.is_disconnect(err, dbapi_connection, None):
                raise sa.exc.InvalidatePoolError(str(err)) from err
            raise


@lru_cache
def _engine_for(url: str) -> Engine:
    engine = sa.create_engine(sqlalchemy_url(url), pool_size=10, max_overflow=20)
    _ping_idle(engine)
    return engine


def get_engine(settings: Settings | None = None) -> Engine:
    """The process-wide engine for the configured database."""
    return _engine_for(database_url(settings))


def require_pgvector(engine: Engine) -> None:
    """Fail in one line when the server cannot provide pgvector."""
    with engine.connect() as conn:
        available = conn.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).first()
    if available is None:
        host = engine.url.host or engine.url.query.get("host")
        raise DatabaseError(
            f"PostgreSQL at {host} has no pgvector extension: install pgvector there, "
            "or unset FRESHREC_DATABASE_URL to use the embedded server"
        )
