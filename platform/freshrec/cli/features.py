"""freshrec features: the Feast repository, in-process."""
from __future__ import annotations

import typer

from freshrec.cli._common import migrated_engine, user_errors
from freshrec.config import get_settings

app = typer.Typer(help="Feast: apply the feature repo and materialize the online store.", no_args_is_help=True)


@app.command("apply")
def apply_cmd() -> None:
    """Register entities, sources, feature views and the feature service (like `feast apply`)."""
    from freshrec.features import apply, open_store

    with user_errors():
        migrated_engine()
        for name in apply(open_store(), get_settings().feast.repo_path):
            typer.echo(f"applied {name}")


@app.command("materialize")
def materialize_cmd() -> None:
    """Write every feature row committed since the last run into the online store (a transaction-horizon
    cursor: late commits and backfills included), after rebuilding the daily item aggregates."""
    from freshrec.features import materialize, open_store

    with user_errors():
        migrated_engine()
        window = materialize(open_store())
    if window is None:
        typer.echo("nothing new to materialize")
    else:
        typer.echo(f"materialized event times {window[0]:%Y-%m-%d %H:%M} .. {window[1]:%Y-%m-%d %H:%M}")
