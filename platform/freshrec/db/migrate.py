"""Run the Alembic migrations in ``migrations/`` from Python (``freshrec db upgrade``)."""
from __future__ import annotations

from alembic import command
from alembic.config import Config

from freshrec.db.engine import sqlalchemy_url
from freshrec.resources import bundled

MIGRATIONS = bundled("migrations")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["sqlalchemy_url"] = sqlalchemy_url(url)
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)
