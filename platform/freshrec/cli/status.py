"""freshrec status: one screen on how fresh the served model is; freshrec cache: the encoder-state cache."""
from __future__ import annotations

import json
import time

import sqlalchemy as sa
import typer

from freshrec.cli._common import echo_table, migrated_engine, user_errors

cache_app = typer.Typer(help="The encoder-state cache: its size, and eviction.", no_args_is_help=True)


def _age(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    return f"{seconds:,.0f} s" if seconds < 120 else f"{seconds / 60:,.1f} min" if seconds < 7200 else f"{seconds / 3600:,.1f} h"


def status(as_json: bool = typer.Option(False, "--json")) -> None:
    """The database, the serving version, rows behind its watermark, the oldest untrained row, the last update,
    and whether an updater or a watcher holds its lock."""
    from freshrec.config import get_settings
    from freshrec.updater.freshness import freshness

    with user_errors(), migrated_engine().connect() as conn:
        state = freshness(conn)
        database = conn.execute(sa.text("SELECT current_database()")).scalar()
    if as_json:
        typer.echo(json.dumps(state, default=str, indent=2))
        return
    last, oldest = state["last_update"] or {}, state["oldest_transaction"] or {}
    settings = get_settings()
    last_line = "-"
    if last:
        ago = time.time() - last["finished_at"].timestamp() if last["finished_at"] else None
        last_line = f"{last['status']}, version {last['version']}, took {_age(last['seconds'])}, {_age(ago)} ago"
    echo_table([
        {"": "database", "value": f"{database} ({'external' if settings.database_url else 'embedded'})"},
        {"": "serving version", "value": f"{state['version']} (published {_age(state['version_age_seconds'])} ago)"},
        {"": "rows behind its watermark", "value": f"{state['rows_behind']:,}"},
        {"": "oldest untrained row", "value": _age(state["oldest_untrained_seconds"])},
        {"": "rows no version has seen", "value": f"{state['rows_unseen']:,}"},
        {"": "last update", "value": last_line},
        {"": "update running", "value": "yes" if state["update_running"] else "no"},
        {"": "watcher", "value": "running" if state["watcher_running"] else "not running"},
        {"": "oldest open transaction", "value": f"{_age(oldest.get('age_seconds'))} (pid {oldest.get('pid')}, {oldest.get('state')})"
                                                if oldest else "-"},
        {"": "encoder-state cache", "value": f"{state['encoder_cache']['states']:,} states, "
                                             f"{state['encoder_cache']['bytes'] / 2**20:,.1f} MiB"},
    ], title="freshrec status")


@cache_app.command("status")
def cache_status() -> None:
    """States and bytes per encoder (head versions share their base encoder's)."""
    from freshrec.models.state_cache import cache_size

    with user_errors():
        rows = cache_size(migrated_engine())
    echo_table([{**r, "bytes": f"{r['bytes'] / 2**20:,.1f} MiB"} for r in rows], title="encoder states")


@cache_app.command("prune")
def cache_prune(keep: int = typer.Option(..., help="states to keep: the most recently used")) -> None:
    """Evict the least recently used states beyond KEEP."""
    from freshrec.models.state_cache import prune

    if keep < 0:
        typer.secho("error: --keep must be 0 or more", fg="red", err=True)
        raise typer.Exit(2)
    with user_errors():
        gone = prune(migrated_engine(), keep)
    typer.echo(f"evicted {gone:,} states")
