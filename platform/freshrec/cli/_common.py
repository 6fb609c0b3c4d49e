"""What every CLI verb shares: the settings, the engine, and one-line errors."""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import sqlalchemy as sa
import typer
from sqlalchemy.engine import Engine

from freshrec.config import get_settings
from freshrec.db import DatabaseError, get_engine, require_pgvector


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Bad input and an unusable database end the command with one line on stderr."""
    try:
        yield
    except ValueError as err:  # InputError, VersionError, bad arguments: the user can fix it
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(2) from None
    except DatabaseError as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(1) from None


def migrated_engine(migrate: bool = False) -> Engine:
    """The engine, once the database is up, has pgvector and is migrated to head (``migrate``: migrate it)."""
    engine = get_engine(get_settings())
    require_pgvector(engine)
    if migrate:
        from freshrec.db import database_url, upgrade

        upgrade(database_url())
    with engine.connect() as conn:
        has_schema = conn.execute(sa.text("SELECT to_regclass('public.alembic_version') IS NOT NULL")).scalar()
    if not has_schema:
        raise DatabaseError("the database has no freshrec schema yet: run `freshrec db upgrade`")
    return engine


def echo_table(rows: list[dict], file=None) -> None:
    """Rows as an aligned text table."""
    if not rows:
        typer.echo("(none)", file=file)
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    typer.echo("  ".join(c.ljust(widths[c]) for c in cols), file=file or sys.stdout)
    for r in rows:
        typer.echo("  ".join(str(r[c]).ljust(widths[c]) for c in cols), file=file or sys.stdout)
