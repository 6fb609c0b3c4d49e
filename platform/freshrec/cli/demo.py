"""freshrec demo: the README's main job, end to end on the embedded database and the bundled data.

1. start the embedded PostgreSQL and migrate it;
2. load the first 13 weeks of UCI Online Retail (to 2011-02-27), feast apply + materialize;
3. ``update``: version 1 from the pre-trained MiniLM;
4. load the next week (to 2011-03-06), materialize, ``update``: version 2, fine-tuned from version 1
   on exactly that week's rows;
5. print the versions and their watermarks;
6. show the current version's recommendations for one customer, each item with the candidate
   sources that proposed it (the API's own code path);
7. serve the API from the current version (``--no-serve`` stops before).

Run again on the same home, it loads nothing new and makes no version.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import sqlalchemy as sa
import typer

from freshrec.cli._common import echo_table, user_errors
from freshrec.config import get_settings
from freshrec.db import database_url, get_engine, require_pgvector, upgrade
from freshrec.ingest import online_retail_batch, write_batch

DEMO_USER = "12347"
FIRST_WEEKS_UNTIL = date(2011, 2, 27)  # 13 weeks from the data set's first day, 2010-12-01
NEXT_WEEK_UNTIL = date(2011, 3, 6)


@contextmanager
def _step(name: str, timings: list[dict]) -> Iterator[None]:
    typer.secho(f"==> {name}", bold=True)
    started = time.perf_counter()
    yield
    timings.append({"step": name, "seconds": f"{time.perf_counter() - started:.1f}"})


QUERY_SHARE = 0.3  # synthetic searches on 30% of the purchases (the data set has no query log)
DEMO_QUERIES = ("red alarm clock", "childrens cutlery", "tea cup", "alram clock", "lunch ba")


def _load(settings, until: date) -> int:
    batch = online_retail_batch(until=until, queries=QUERY_SHARE)
    with get_engine(settings).begin() as conn:
        summary = write_batch(conn, batch, "bundled", settings.feast.profile_length)
    typer.echo(f"    inserted {summary.interactions_inserted:,} interactions "
               f"({summary.interactions_duplicate:,} already there)")
    return summary.interactions_inserted


def _update(settings, base_model: str | None, strategy: str, device: str):
    from freshrec.logs import configure
    from freshrec.updater import run_update
    from freshrec.training.args import GateArguments, TrainingArguments

    configure(fmt="    %(message)s")  # the demo's own layout; `freshrec update` logs with timestamps
    outcome = run_update(TrainingArguments(strategy=strategy, device=device), GateArguments(), base_model=base_model,
                         settings=settings, trigger="demo")
    typer.echo(f"    {outcome.message}")
    return outcome


def run_demo(base_model: str | None = None, strategy: str = "head", device: str = "auto") -> list[dict]:
    """The main job; returns step timings."""
    settings = get_settings()
    timings: list[dict] = []
    with _step("start database", timings):
        url = database_url(settings)
        require_pgvector(get_engine(settings))
    with _step("migrate (alembic upgrade head)", timings):
        upgrade(url)
    with _step(f"load UCI Online Retail to {FIRST_WEEKS_UNTIL} (13 weeks)", timings):
        _load(settings, FIRST_WEEKS_UNTIL)
    with _step("import feast, feast apply, materialize", timings):
        from freshrec.features import apply, materialize, open_store

        store = open_store(settings)
        apply(store, settings.feast.repo_path)
        materialize(store)
    with _step("update: version 1 from the pre-trained encoder", timings):
        _update(settings, base_model, strategy, device)
    with _step(f"load the next week, to {NEXT_WEEK_UNTIL}", timings):
        inserted = _load(settings, NEXT_WEEK_UNTIL)
        materialize(store)
    with _step("update: incremental version on that week's rows", timings):
        outcome = _update(settings, base_model, strategy, device)
    if outcome.status == "created":
        with get_engine(settings).connect() as conn:
            consumed = conn.execute(sa.text("SELECT row_count FROM watermarks WHERE version = :v"),
                                    {"v": outcome.version}).scalar()
        verdict = "equal" if consumed == inserted else "NOT EQUAL"
        typer.echo(f"    watermark of version {outcome.version}: {consumed:,} rows; the load inserted {inserted:,}: {verdict}")
    return timings


def _show_recommendations(user_id: str, k: int = 8) -> None:
    """What the API answers this customer now: the current version's pipeline, with each item's sources."""
    from freshrec.features import online_users, open_store
    from freshrec.serving.snapshot import load_snapshot

    engine, store = get_engine(), open_store()
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version FROM current_version")).scalar()
    if version is None:
        return
    snap = load_snapshot(engine, version, store)
    with engine.connect() as conn:
        hits = snap.recommend(conn, online_users(store, [user_id]), k)[user_id] or snap.popular_hits(k)
    typer.secho(f"\nrecommendations for customer {user_id} (version {version}):", bold=True)
    echo_table([{"item_id": h.item_id, "title": h.title, "score": f"{h.score:.3f}", "sources": ", ".join(h.sources)}
                for h in hits])


def _show_search(queries=DEMO_QUERIES, k: int = 3) -> None:
    """What /v1/search answers now, and how the current version's search compares with day one's."""
    import torch

    from freshrec.features import open_store
    from freshrec.serving.search import SearchService
    from freshrec.serving.snapshot import load_snapshot

    engine = get_engine()
    with engine.connect() as conn:
        version, metrics = conn.execute(sa.text(
            "SELECT c.version, v.metrics FROM current_version c JOIN model_versions v USING (version)")).one()
    snap = load_snapshot(engine, version, open_store())
    service = SearchService(engine, None)
    service.sync(snap)
    typer.secho(f"\nsearch (version {version}: full text + query tower, fused, re-ranked):", bold=True)
    rows = []
    with engine.connect() as conn, torch.no_grad():
        for q in queries:
            hits = service.search(conn, q, k, snap)
            rows += [{"query": q if n == 0 else "", "item_id": h.item_id, "title": service.title(h.item_id, conn),
                      "legs": ", ".join(h.legs)} for n, h in enumerate(hits)]
    echo_table(rows)
    judged = metrics.get("search", {})
    if "candidate" in judged:
        typer.echo("    the gate's search check (reciprocal rank; known items: held-out titles' words; queries: the "
                   "week's held-out searches):")
        for part in ("known_items", "queries"):
            mine, base = judged["candidate"][part], judged["day_one"][part]
            if mine["queries"]:
                typer.echo(f"      {part}: version {version} {mine['rr']:.3f}, day one (full text + pre-trained encoder) "
                           f"{base['rr']:.3f}, over {mine['queries']:,} queries")


def demo(
    base_model: str = typer.Option(None, help="local Hugging Face encoder; default: the bundled MiniLM"),
    strategy: str = typer.Option("head", help="head, lora or full"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="end by serving the API (Ctrl-C stops it)"),
) -> None:
    """Run the main job end to end, print the versions and their watermarks, then serve the API."""
    from freshrec.registry import list_versions

    with user_errors():
        timings = run_demo(base_model, strategy, device)
        with get_engine().connect() as conn:
            versions = list_versions(conn)
    typer.secho("\nversions:", bold=True)
    echo_table([{k: v[k] for k in ("version", "parent", "status", "strategy", "rows", "xid_from", "xid_to", "current")}
                for v in versions])
    _show_recommendations(DEMO_USER)
    _show_search()
    typer.secho("\nstep timings:", bold=True)
    echo_table(timings)
    typer.echo('\naudit: freshrec lineage 2 --json;  freshrec history;  eval "$(freshrec env)"; '
               'psql -c "select * from watermark_audit"')
    typer.echo("keep it fresh: freshrec update --watch   (in another terminal; then `freshrec load ...` or POST /v1/events,"
               " and `freshrec status`)")
    if serve:
        from freshrec.cli.serve import serve as run_server

        port = get_settings().serving.port
        typer.echo(f'try:   curl "localhost:{port}/v1/users/12347/recommendations?k=5"\n')
        run_server(host=None, port=None, workers=1)
