"""The engine's pool: a connection used within the bypass window is handed out without a ping; one idle
for longer is pinged, and replaced, with every other pooled one, when its backend is gone (a database
restart, an idle timeout)."""
import sqlalchemy as sa
from conftest import use_database

from freshrec.db import engine as engine_module
from freshrec.db import get_engine

PID = sa.text("SELECT pg_backend_pid()")


def _pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(PID).scalar()


def test_a_recent_connection_skips_the_ping_and_an_idle_dead_one_is_replaced(unit_url, monkeypatch):
    use_database(unit_url)
    admin = get_engine()
    engine = engine_module._engine_for.__wrapped__(admin.url.render_as_string(hide_password=False)
                                                   .replace("postgresql+psycopg", "postgresql"))
    pings = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(1) or real_ping(c))
    try:
        monkeypatch.setattr(engine_module, "ALIVE_BYPASS_S", 3600.0)  # every checkout within the window
        first = _pid(engine)
        assert _pid(engine) == first and not pings  # new, then back within the window: no round trip

        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": first}).scalar()
        monkeypatch.setattr(engine_module, "ALIVE_BYPASS_S", 0.0)  # now every one has been idle too long
        assert _pid(engine) != first  # pinged, found dead, replaced: the caller never saw the error
        assert pings
    finally:
        engine.dispose()
