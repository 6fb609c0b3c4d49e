"""Alembic environment: the URL comes from freshrec's settings, Feast's schemas are left alone.

    alembic upgrade head          # from the repository root
    freshrec db upgrade           # the same, from anywhere
"""
from alembic import context
from sqlalchemy import create_engine, pool

from freshrec.config import get_settings
from freshrec.db.engine import database_url, sqlalchemy_url
from freshrec.db.models import Base

config = context.config
target_metadata = Base.metadata
FEAST_SCHEMAS = {get_settings().feast.registry_schema, get_settings().feast.online_schema}


def include_object(obj, name, type_, reflected, compare_to):
    """Autogenerate must not propose dropping Feast's own tables, nor the partitions the publish makes."""
    schema = getattr(obj, "schema", None)
    if type_ == "table" and reflected and name.startswith("item_embeddings_v"):
        return False
    return schema not in FEAST_SCHEMAS


def _url() -> str:
    # `freshrec db upgrade` passes its URL; plain `alembic` (pyproject.toml config) uses the settings.
    return config.attributes.get("sqlalchemy_url") or sqlalchemy_url(database_url())


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, include_object=include_object)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
