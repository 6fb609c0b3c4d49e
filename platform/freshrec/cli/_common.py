"""What every CLI verb shares: the settings, the engine, and one-line errors."""
from __future__ import annotations

import contextlib
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
    except sa.exc.DBAPIError as err:  # the server said no (permissions, a missing extension): say what it said
        message = str(getattr(err.orig, "diag", None) and err.orig.diag.message_primary or err.orig).strip()
        typer.secho(f"error: the database refused: {message}", fg="red", err=True)
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


def echo_table(rows: list[dict], title: str | None = None) -> None:
    """Rows as a rich table on stdout (wide enough not to wrap when piped)."""
    from rich.console import Console
    from rich.table import Table

    if not rows:
        typer.echo("(none)")
        return
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in rows[0]:
        table.add_column(str(column))
    for row in rows:
        table.add_row(*("" if v is None else f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
                        for v in row.values()))
    console = Console()
    Console(width=max(console.width, 200) if not console.is_terminal else None).print(table)
