"""freshrec load: real data sets and your own files."""
from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

import typer
from tqdm import tqdm

from freshrec.cli._common import migrated_engine, user_errors
from freshrec.config import get_settings
from freshrec.ingest.aggregates import catch_up
from freshrec.ingest import (
    BUNDLED_ONLINE_RETAIL,
    Batch,
    LoadSummary,
    interactions_batch,
    items_batch,
    online_retail_batch,
    write_batch,
)

app = typer.Typer(help="Load users, items and interactions.", no_args_is_help=True)
DATE = typer.Option(None, formats=["%Y-%m-%d"], help="YYYY-MM-DD, inclusive")


def write(batch: Batch, source: str) -> LoadSummary:
    """Write a batch in one transaction, with a progress bar over its interactions."""
    engine = migrated_engine()
    with tqdm(total=len(batch.interactions), unit="rows", desc="writing", disable=None) as bar:
        with engine.begin() as conn:
            summary = write_batch(conn, batch, source, get_settings().feast.profile_length, bar.update)
    lines = {**asdict(summary), "item_stat_rows": catch_up(engine)}  # the daily aggregates, after the commit
    for key, value in lines.items():
        typer.echo(f"{key:>24}: {value:,}")
    return summary


@app.command("online-retail")
def online_retail(
    path: Path = typer.Argument(BUNDLED_ONLINE_RETAIL, help="UCI Online Retail (or II) file, .parquet or .csv"),
    since: datetime = DATE,
    until: datetime = DATE,
    queries: float = typer.Option(0.0, help="share of purchases given a synthetic search query made from the "
                                            "item's title (the data set has none): 0.3 puts one on 30%"),
    query_seed: int = typer.Option(0, help="seed of the synthetic queries"),
) -> None:
    """UCI Online Retail purchases (cancellations, anonymous and non-positive rows dropped)."""
    with user_errors():
        batch = online_retail_batch(path, since.date() if since else None, until.date() if until else None,
                                    queries, query_seed)
        write(batch, str(path))


@app.command()
def items(path: Path) -> None:
    """A catalog: item_id, title [, category, description, price, valid_from]."""
    with user_errors():
        write(items_batch(path), str(path))


@app.command()
def interactions(path: Path) -> None:
    """An event log: event_key, user_id, item_id, event_type, event_time [, quantity, query]."""
    with user_errors():
        write(interactions_batch(path, timedelta(seconds=get_settings().ingest.max_future_seconds)), str(path))
