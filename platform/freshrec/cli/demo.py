"""freshrec demo: the README's main job, end to end on the embedded database and the bundled data."""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Iterator

import sqlalchemy as sa
import typer

from freshrec.cli._common import echo_table, user_errors
from freshrec.config import get_settings
from freshrec.db import database_url, get_engine, require_pgvector, upgrade
from freshrec.ingest import online_retail_batch, write_batch

COUNTS = """
SELECT (SELECT count(*) FROM interactions) AS interactions,
       (SELECT count(*) FROM users) AS users,
       (SELECT count(*) FROM items) AS items,
       (SELECT count(*) FROM user_profiles) AS profile_rows
"""


@contextmanager
def _step(name: str, timings: list[dict]) -> Iterator[None]:
    typer.secho(f"==> {name}", bold=True)
    started = time.perf_counter()
    yield
    timings.append({"step": name, "seconds": f"{time.perf_counter() - started:.1f}"})


def run_demo(echo: Callable[[str], None] = typer.echo) -> list[dict]:
    """Migrate, load the bundled data, apply and materialize the features; return step timings."""
    settings = get_settings()
    timings: list[dict] = []
    with _step("start database", timings):
        url = database_url(settings)
        require_pgvector(get_engine(settings))
    with _step("migrate (alembic upgrade head)", timings):
        upgrade(url)
    with _step("load UCI Online Retail (bundled)", timings):
        batch = online_retail_batch()
        with get_engine(settings).begin() as conn:
            summary = write_batch(conn, batch, "bundled", settings.feast.profile_length)
        echo(f"    inserted {summary.interactions_inserted:,} interactions ({summary.interactions_duplicate:,} already there)")
    with _step("import feast and open the store", timings):
        from freshrec.features import apply, materialize, open_store

        store = open_store(settings)
    with _step("feast apply", timings):
        apply(store, settings.feast.repo_path)
    with _step("feast materialize (incremental, to now)", timings):
        materialize(store)
    return timings


def demo() -> None:
    """Run the main job end to end and print what the database holds."""
    with user_errors():
        timings = run_demo()
        with get_engine().connect() as conn:
            counts = dict(conn.execute(sa.text(COUNTS)).mappings().one())
    typer.secho("\nfreshrec holds:", bold=True)
    for key, value in counts.items():
        typer.echo(f"  {key:>14}: {value:,}")
    typer.secho("\nstep timings:", bold=True)
    echo_table(timings)
    typer.echo(f'\nnext: eval "$(freshrec env)"; psql -c "select count(*) from interactions"')
