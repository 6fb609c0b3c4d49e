"""freshrec bench train | serve | updates | freshness | rankers | search: measurements that print a table and write JSON + Markdown."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from freshrec.cli._common import migrated_engine, user_errors

app = typer.Typer(help="Benchmarks: figures to JSON and a Markdown table.", no_args_is_help=True)
OUT = typer.Option(Path("bench-out"), help="folder for the JSON and Markdown (and plots)")


def _command() -> str:
    return "freshrec " + " ".join(sys.argv[1:])


@app.command()
def train(
    models: str = typer.Option("tiny,minilm", help="comma-separated: tiny, minilm or local encoder paths"),
    strategies: str = typer.Option("head,lora,full"),
    pairs: int = typer.Option(2048, help="training pairs per cell (each interaction row brings 1 + negatives)"),
    pairs_dir: Path = typer.Option(None, help="reuse pairs exported earlier instead of reading the database"),
    repeats: int = typer.Option(3, help="runs per cell; the table gives medians"),
    batch_size: int = typer.Option(64),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    out: Path = OUT,
) -> None:
    """Fine-tuning throughput (pairs/s) per base model and strategy, on pairs from the loaded data."""
    from freshrec.bench import throughput

    with user_errors():
        if pairs_dir is None:
            migrated_engine(migrate=True)
            pairs_dir = throughput.export_pairs(out / "pairs", pairs)
        throughput.run(pairs_dir, models.split(","), strategies.split(","), device, repeats, batch_size, out,
                       _command(), echo=typer.echo)


@app.command()
def serve(
    seconds: float = typer.Option(10.0, help="load per (endpoint, concurrency) cell"),
    concurrency: str = typer.Option("1,8", help="comma-separated concurrent clients"),
    port: int = typer.Option(8765, help="port for the server under test"),
    out: Path = OUT,
) -> None:
    """p50/p99 and throughput of recommendations and search, beside the raw Feast online read."""
    from freshrec.bench import serving

    with user_errors():
        migrated_engine(migrate=True)
        serving.run(out, seconds, [int(c) for c in concurrency.split(",")], port, _command(), echo=typer.echo)


@app.command()
def updates(
    weeks: int = typer.Option(None, help="weeks to replay after the first 13 (default: all that have a week after)"),
    model: str = typer.Option("tiny", help="tiny, minilm or a local encoder path"),
    strategy: str = typer.Option("head", help="incremental arms: comma-separated head, lora, full"),
    dataset: str = typer.Option(None, help="an Online Retail file, or ITEMS,INTERACTIONS files; default: bundled"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    max_eval_users: int = typer.Option(1000, help="users scored per test week"),
    gate: bool = typer.Option(True, "--gate/--no-gate", help="the incremental arm's gate, as in production"),
    keep_databases: bool = typer.Option(False, help="keep the bench databases for SQL audits"),
    full_retrain_every: int = typer.Option(1, help="retrain from scratch every N weeks (and the last week)"),
    seeds: str = typer.Option("0", help="comma-separated training seeds: one incremental arm each (the first is "
                                        "the reference; the others measure the seed's spread)"),
    tune: bool = typer.Option(True, "--tune/--no-tune", help="choose TIFU-KNN's parameters and the candidate counts "
                                                             "on week 13 (8 configurations each) before the test weeks"),
    queries: float = typer.Option(0.3, help="share of purchases given a synthetic search query"),
    out: Path = OUT,
) -> None:
    """The pipeline kept fresh incrementally vs retrained from scratch vs stale vs TIFU-KNN, P-TopFreq and
    popularity, week by week, overall and on repeat and explore items, with 95% intervals: JSON, Markdown, PNG."""
    from freshrec.bench import updates as bench_updates

    with user_errors():
        migrated_engine(migrate=True)
        bench_updates.run(weeks, model, strategy.split(","), device, dataset, out, max_eval_users, gate, keep_databases,
                          _command(), full_retrain_every=full_retrain_every, seeds=[int(s) for s in seeds.split(",")],
                          tune=tune, queries=queries, echo=typer.echo)


@app.command()
def freshness(
    model: str = typer.Option("minilm", help="tiny, minilm or a local encoder path"),
    rates: str = typer.Option("2,10", help="comma-separated events per second, one run each"),
    seconds: float = typer.Option(180.0, help="how long to post at each rate"),
    min_rows: int = typer.Option(500, help="the watcher's --min-rows"),
    max_age: float = typer.Option(20.0, help="the watcher's --max-age (seconds)"),
    port: int = typer.Option(8790, help="port for the API under test"),
    min_gate_baskets: int = typer.Option(10, help="the watcher's --min-gate-baskets (the gate's evidence)"),
    out: Path = OUT,
) -> None:
    """Event-to-served latency: post real events at steady rates to a live API while `update --watch` runs;
    p50/p95/max from each POST until the API serves a version whose watermark covers (has consumed) the event."""
    from freshrec.bench import freshness as bench_freshness

    with user_errors():
        migrated_engine(migrate=True)
        bench_freshness.run(model, [float(r) for r in rates.split(",")], seconds, min_rows, max_age, out, _command(),
                            port=port, min_gate_baskets=min_gate_baskets, echo=typer.echo)


@app.command()
def search(
    model: str = typer.Option("minilm", help="tiny, minilm or a local encoder path"),
    items: int = typer.Option(0, help="score only the known-item set's first N items (a smoke run); 0: all of it"),
    seconds: float = typer.Option(10.0, help="load per latency cell"),
    concurrency: str = typer.Option("1,8", help="comma-separated concurrent clients"),
    port: int = typer.Option(8796, help="port for the API under test"),
    timeline: Path = typer.Option(None, help="a `bench updates` JSON: draw the forgetting curve of its versions"),
    out: Path = OUT,
) -> None:
    """Known-item search and week-14 query events: full text, BM25, the pre-trained encoder, the old user
    tower and the search pipeline (day one and trained), with intervals; the behaviour weights' grid;
    latency against a live API; the forgetting curve from a `bench updates` run."""
    from freshrec.bench import search as bench_search

    with user_errors():
        if items < 0:
            raise ValueError("--items: 0 (the whole set) or more")
        migrated_engine(migrate=True)
        bench_search.run(model, out, _command(), items, seconds, tuple(int(c) for c in concurrency.split(",")), port,
                         timeline, echo=typer.echo)


@app.command()
def scale(
    factor: str = typer.Option("1,3,10", help="comma-separated shop sizes: copies of the bundled shop's first 14 weeks"),
    model: str = typer.Option("tiny", help="tiny, minilm or a local encoder path"),
    seconds: float = typer.Option(10.0, help="load per latency cell"),
    concurrency: str = typer.Option("1,8", help="comma-separated concurrent clients"),
    port: int = typer.Option(8798, help="port for the API under test"),
    out: Path = OUT,
) -> None:
    """What an N-times shop costs: load, materialize, version 1 and 2 (with each step), the updater's and
    the API's memory, the API's start, hot swap and latency, the tables' rows; how each step grows."""
    from freshrec.bench import scale as bench_scale

    with user_errors():
        factors = [int(f) for f in factor.split(",")]
        if not factors or min(factors) < 1:
            raise ValueError("--factor: positive whole numbers, e.g. 1,3,10")
        migrated_engine(migrate=True)
        bench_scale.run(factors, model, out, _command(), port, tuple(int(c) for c in concurrency.split(",")), seconds,
                        echo=typer.echo)


@app.command()
def rankers(
    weeks: str = typer.Option("4,12,20,28,36", help="test weeks (0 = the week after the first 13), comma-separated"),
    train_weeks: int = typer.Option(8, help="weeks of baskets before each test week to train on"),
    out: Path = OUT,
) -> None:
    """The MLP ranker against LightGBM (lambdarank and binary) on the same candidates and features,
    beside P-TopFreq: why freshrec's ranker is an MLP. Needs `pip install lightgbm` and the data loaded."""
    from freshrec.bench import rankers as bench_rankers

    with user_errors():
        engine = migrated_engine(migrate=True)
        bench_rankers.run(engine, [int(w) for w in weeks.split(",")], train_weeks, out, _command(), echo=typer.echo)


@app.command()
def erasure(
    model: str = typer.Option("tiny", help="tiny, minilm or a local encoder path"),
    weeks: int = typer.Option(6, help="weekly updates after version 1 (the chain an erasure replays)"),
    max_users: int = typer.Option(400, help="test-week users quality is measured on"),
    out: Path = OUT,
) -> None:
    """Forgetting one customer first seen in the last week, the middle week and the first 13 weeks: the
    replay's cost against a full retrain and the weekly updates it re-runs, and Recall@20 and NDCG@20
    just before and just after, paired by user."""
    from freshrec.bench import erasure as bench_erasure

    with user_errors():
        migrated_engine(migrate=True)
        bench_erasure.run(model, weeks, out, _command(), max_users, echo=typer.echo)
