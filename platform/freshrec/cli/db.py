"""freshrec db: the embedded server and the migrations."""
from __future__ import annotations

import typer

from freshrec.cli._common import user_errors
from freshrec.config import get_settings
from freshrec.db import database_url, downgrade, embedded, get_engine, require_pgvector, upgrade

app = typer.Typer(help="The database: start, stop, status, url, upgrade, downgrade.", no_args_is_help=True)


def _external() -> bool:
    return get_settings().database_url is not None


@app.command()
def start() -> None:
    """Start the embedded PostgreSQL (with pgvector) under $FRESHREC_HOME; it keeps running."""
    if _external():
        typer.echo("FRESHREC_DATABASE_URL is set: freshrec uses that server and starts none")
        return
    server = embedded.start(get_settings().home)
    typer.echo(f"embedded PostgreSQL running (pid {server.pid}): {server.url}")


@app.command()
def stop() -> None:
    """Stop the embedded PostgreSQL."""
    stopped = embedded.stop(get_settings().home)
    typer.echo("stopped" if stopped else "not running")


@app.command()
def status() -> None:
    """Say whether the database is up, and where."""
    if _external():
        typer.echo("external database (FRESHREC_DATABASE_URL)")
        return
    server = embedded.running(get_settings().home)
    typer.echo(f"running (pid {server.pid}): {server.url}" if server else "not running")
    if server is None:
        raise typer.Exit(3)


@app.command()
def url() -> None:
    """Print a URL that psql and SQLAlchemy accept (starts the embedded server if needed)."""
    typer.echo(database_url())


@app.command("upgrade")
def upgrade_cmd(revision: str = typer.Argument("head")) -> None:
    """Migrate the schema to REVISION (default: head)."""
    with user_errors():
        require_pgvector(get_engine())
        upgrade(database_url(), revision)
    typer.echo(f"schema at {revision}")


@app.command("downgrade")
def downgrade_cmd(revision: str = typer.Argument(..., help="target revision, e.g. base")) -> None:
    """Migrate the schema down to REVISION ('base' drops everything freshrec made)."""
    with user_errors():
        downgrade(database_url(), revision)
    typer.echo(f"schema at {revision}")
