"""The environment that feature_repo/feature_store.yaml reads (``${FRESHREC_PG*}`` and friends)."""
from __future__ import annotations

import os
import shlex
from urllib.parse import quote

from freshrec.config import Settings, get_settings
from freshrec.db.engine import connection_parts, database_url


def _offline_password(parts: dict[str, str], settings: Settings) -> str:
    """The offline role's own password; the main one only when Feast reads as the main role itself.

    Handing one role's password to another would fail on any server that checks passwords.
    """
    if settings.feast.offline_password is not None:
        return settings.feast.offline_password.get_secret_value()
    return parts["password"] if settings.feast.offline_user == parts["user"] else ""


def feast_environment(url: str, settings: Settings) -> dict[str, str]:
    """Variables for Feast's YAML and for plain psql, all pointing at ``url``."""
    parts = connection_parts(url)
    registry_url = (
        f"postgresql+psycopg://{quote(parts['user'])}:{quote(parts['password'])}@/{parts['database']}"
        f"?host={quote(parts['host'])}&port={parts['port']}"
        f"&options={quote('-csearch_path=' + settings.feast.registry_schema)}"
    )
    # A Unix socket cannot do SSL; a TCP host keeps whatever the URL asked for.
    sslmode = "disable" if parts["host"].startswith("/") else (
        os.environ.get("FRESHREC_PGSSLMODE") or os.environ.get("PGSSLMODE") or "prefer"
    )
    return {
        "FRESHREC_PGHOST": parts["host"],
        "FRESHREC_PGPORT": parts["port"],
        "FRESHREC_PGDATABASE": parts["database"],
        "FRESHREC_PGUSER": parts["user"],
        "FRESHREC_PGPASSWORD": parts["password"],
        "FRESHREC_PGSSLMODE": sslmode,
        "FRESHREC_FEAST_OFFLINE_USER": settings.feast.offline_user,
        "FRESHREC_FEAST_OFFLINE_PASSWORD": _offline_password(parts, settings),
        "FRESHREC_FEAST_ONLINE_SCHEMA": settings.feast.online_schema,
        "FRESHREC_FEAST_REGISTRY_URL": registry_url,
        "PGHOST": parts["host"],
        "PGPORT": parts["port"],
        "PGDATABASE": parts["database"],
        "PGUSER": parts["user"],
    }


def apply_environment(settings: Settings | None = None) -> dict[str, str]:
    """Put the variables into this process's environment (before Feast reads its YAML)."""
    settings = settings or get_settings()
    env = feast_environment(database_url(settings), settings)
    os.environ.update(env)
    return env


def export_lines(settings: Settings | None = None) -> str:
    """``export`` lines for ``eval "$(freshrec env)"``."""
    settings = settings or get_settings()
    env = feast_environment(database_url(settings), settings)
    env["FRESHREC_HOME"] = str(settings.home)
    # The repository to hand the plain CLI: feast -c "$FRESHREC_FEATURE_REPO" apply (a wheel carries its own).
    env["FRESHREC_FEATURE_REPO"] = str(settings.feast.repo_path)
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
