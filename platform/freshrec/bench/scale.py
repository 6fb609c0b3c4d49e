"""``freshrec bench scale --factor 1,3,10``: what a bigger shop costs, measured side by side in one run.

An N-times shop is N independent copies of the bundled shop's first 14 weeks: every item, customer
and invoice copied N times (ids suffixed ``-c``), the same timestamps, the same titles. Co-purchase
is therefore block-diagonal by construction: no copy's customer ever buys another copy's item.

For each factor, in a database of its own: the load of the first 13 weeks and the online store's
materialization; version 1 and version 2 (on week 14) made by ``freshrec update`` as processes (wall
seconds, each step's seconds from the version's own timings, peak RSS); ``freshrec serve`` on it
(seconds to ready, RSS once ready, seconds for a hot swap, seconds until it holds every item's
co-purchase partners and its RSS then, a returning customer's recommendation at concurrency 1 and
8, the same customers at every factor: ``returning_customers``, each in one stretch); the rows of
each table and the database's size. At 1x, once the API's own stretches are done, ``feast serve``
also hands the same customers' features over HTTP beside it, in turns with the API at concurrency 1
(``api_in_turns_*``): the floor a
recommendation stands on. The factors' latencies are compared on the one-stretch figures, measured
alike at every factor.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import httpx
import pandas as pd
import psutil
import sqlalchemy as sa
from pydantic import SecretStr

from freshrec.bench import report
from freshrec.bench.platform import base_model_path, create_database, drop_database
from freshrec.bench.processes import spawn, stop, wait_ready
from freshrec.bench.serving import _feast_serve, _http_load, _in_turns, _row
from freshrec.config import Settings, get_settings
from freshrec.db import database_url, get_engine
from freshrec.features import apply, materialize, open_store
from freshrec.ingest import online_retail_batch, write_batch
from freshrec.ingest.online_retail import BUNDLED, read_purchases

FIRST_UNTIL, WEEK_14 = date(2011, 2, 27), (date(2011, 2, 28), date(2011, 3, 6))
TABLES = ("interactions", "user_profiles", "item_daily_stats", "item_texts", "items", "item_embeddings",
          "item_neighbours", "copurchase_counts", "item_search_vectors", "encoder_states")
STEPS = ("features_s", "train_s", "ranker_inputs_s", "ranker_s", "warm_profiles_s", "search_s", "evaluate_s", "total_s",
         "publish_s")


def copies(factor: int, out: Path) -> Path:
    """The bundled shop's first 14 weeks, ``factor`` times, as an Online Retail file."""
    purchases, _ = read_purchases(BUNDLED)
    rows = purchases[purchases["InvoiceDate"] < pd.Timestamp(WEEK_14[1], tz="UTC") + pd.Timedelta(days=1)]
    parts = []
    for c in range(factor):
        parts.append(rows.assign(**{column: rows[column] + _suffix(c)
                                    for column in ("InvoiceNo", "StockCode", "CustomerID")}))
    path = out / f"shop-{factor}x.parquet"
    pd.concat(parts, ignore_index=True).to_parquet(path, index=False)
    return path


def _rss(proc: psutil.Process) -> int:
    """Bytes resident in a process and its children."""
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


def _rss_mib(proc: psutil.Process) -> float:
    return _rss(proc) / 2**20


def _peak_rss(cmd: list[str], env: dict, log: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) and exit status of a process (its children included)."""
    started, peak = time.perf_counter(), 0
    proc = spawn(cmd, env, log)
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, _rss(ps))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.05)
    return time.perf_counter() - started, peak / 2**20, proc.returncode


def _update(env: dict, base_model: str, log: Path) -> dict:
    seconds, rss, status = _peak_rss(["freshrec", "update", "--base-model", base_model, "--no-gate"], env, log)
    if status != 0:
        raise RuntimeError(f"freshrec update failed: see {log}")
    return {"wall_s": seconds, "peak_rss_mib": rss}


def _timings(engine, version: int, wall_s: float) -> dict:
    """The version's own step timings (``total_s`` ends where publishing starts), and two spans from
    its run's row in ``update_runs``:

    - ``publish_s``: the run minus the steps: the publish transaction and the online push of its
      neighbours (and the run's lock and bookkeeping, milliseconds);
    - ``start_s``: the wall minus the run: the process around it, its start above all (the interpreter,
      imports of torch, transformers and Feast) and its exit."""
    with engine.connect() as conn:
        timings = conn.execute(sa.text("SELECT timings FROM model_versions WHERE version = :v"), {"v": version}).scalar()
        run_s = conn.execute(sa.text("SELECT extract(epoch FROM finished_at - started_at) FROM update_runs "
                                     "WHERE version = :v"), {"v": version}).scalar()
    return {**timings, "publish_s": float(run_s) - timings["total_s"], "start_s": wall_s - float(run_s)}


def _record(out: dict, name: str, c: int, measured) -> None:
    """One load's p50, p99 and errors into ``out``, prefixed by the name unless it is the API's own stretch."""
    latencies, errors, took = measured
    row = _row(name, c, latencies, took, errors)
    prefix = "" if name == "api" else f"{name}_"
    out[f"{prefix}p50_ms_c{c}"], out[f"{prefix}p99_ms_c{c}"], out[f"{prefix}errors_c{c}"] = row["p50_ms"], row["p99_ms"], errors


def _api(env: dict, port: int, users: list[str], concurrencies, seconds: float, log: Path, feast: Settings | None) -> dict:
    """The API on this factor's database; with ``feast`` (its settings), Feast's own server on it beside,
    answering the same customers' features in turns with the API's recommendations; it starts after the
    API's own stretches, so that every factor measures those alike, with no other server running."""
    from freshrec.features.store import USER_ACTIVITY, USER_TEXT

    url, feast_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
    started = time.perf_counter()
    server = spawn(["freshrec", "serve", "--port", str(port)], env, log)
    feast_server = None
    out: dict = {}
    try:
        wait_ready(url, "/readyz", timeout=900, proc=server)
        out["ready_s"] = time.perf_counter() - started
        proc = psutil.Process(server.pid)
        out["rss_mib"] = _rss_mib(proc)
        token = {"Authorization": f"Bearer {get_settings().api_token.get_secret_value()}"}
        t0 = time.perf_counter()  # a hot swap: promote version 1, until this process serves it
        httpx.post(f"{url}/v1/models/1/promote", headers=token, timeout=120)
        while httpx.get(f"{url}/readyz", timeout=30).json()["version"] != 1:
            time.sleep(0.05)
        out["hot_swap_s"] = time.perf_counter() - t0
        httpx.post(f"{url}/v1/models/rollback", headers=token, timeout=120)
        while httpx.get(f"{url}/readyz", timeout=30).json()["version"] != 2:
            time.sleep(0.05)
        # Latency in the steady state: once the API holds every item's co-purchase partners (its watcher
        # reads them a few hundred items a second after a swap; ``Snapshot.warm``).
        t0 = time.perf_counter()
        while (held := httpx.get(f"{url}/readyz", timeout=30).json()["partners_held"]) is not None and held < 1.0:
            if time.perf_counter() - t0 > 600:
                raise RuntimeError("the API did not hold every item's partners within 600 s")
            time.sleep(0.5)
        out["partners_held_s"] = time.perf_counter() - t0
        out["rss_held_mib"] = _rss_mib(proc)
        servers = {"api": (url, [f"/v1/users/{u}/recommendations?k=20" for u in users])}
        asyncio.run(_http_load(url, servers["api"][1][:50], 1, 2.0))  # warm-up
        for c in concurrencies:
            # In one stretch at every factor, with nothing else serving: what the factors are compared on.
            _record(out, "api", c, asyncio.run(_http_load(url, servers["api"][1], c, seconds)))
        if feast:  # then the same customers' features from Feast's own server, in turns with the API's
            feast_server = _feast_serve(port + 1, feast)
            wait_ready(feast_url, path="/health", proc=feast_server)
            servers["feast_serve"] = (feast_url, [
                ("/get-online-features", {"features": [USER_TEXT, *USER_ACTIVITY], "entities": {"user_id": [u]}})
                for u in users])
            for base, targets in servers.values():  # warm-up
                asyncio.run(_http_load(base, targets[:50], 1, 2.0))
            turns = asyncio.run(_in_turns(servers, seconds))
            _record(out, "in_turns", 1, turns["api"])
            _record(out, "feast_serve", 1, turns["feast_serve"])
            out["p99_over_feast_serve_c1"] = out["in_turns_p99_ms_c1"] / out["feast_serve_p99_ms_c1"]
            out["p50_over_feast_serve_c1"] = out["in_turns_p50_ms_c1"] / out["feast_serve_p50_ms_c1"]
    finally:
        stop([server, feast_server])
    return out


def returning_customers(engine, factor: int) -> tuple[list[str], int]:
    """The customers whose requests are timed: the same ones at every factor, so that a factor's latency
    differs from another's by the shop's size alone, not by whose history is ranked.

    They are the bundled shop's customers of week 14 (v2's cut), in id order, the n-th one taken from
    copy n mod ``factor``. A sample of the cut's customers at each factor would weigh each customer
    differently: at 10x, ``LIMIT 400`` of 2,420 could take whole groups of one customer's ten copies,
    so a heavy customer weighed up to ten times more in the tail than at 1x. Also returned: their
    rows, equal at every factor."""
    with engine.connect() as conn:
        base = [r[0] for r in conn.execute(sa.text(
            "SELECT DISTINCT i.user_id FROM interactions i JOIN watermarks w ON w.version = 2 "
            "WHERE i.ingest_xid >= w.xid_from AND i.ingest_xid < w.xid_to AND i.user_id !~ '-[0-9]+$' "
            "ORDER BY i.user_id"))]
        users = [user + _suffix(n % factor) for n, user in enumerate(base)]
        rows = conn.execute(sa.text("SELECT count(*) FROM interactions WHERE user_id = ANY(:u)"), {"u": users}).scalar()
    return users, rows


def _suffix(copy: int) -> str:
    """What copy ``copy``'s ids of items, customers and invoices end with (copy 0 keeps the bundled shop's)."""
    return f"-{copy}" if copy else ""


def _sizes(engine) -> dict:
    with engine.connect() as conn:
        rows = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in TABLES}
        rows["database_mib"] = conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar() / 2**20
    return rows


def measure(factor: int, base, base_url: str, base_model: str, work: Path, port: int, concurrencies, seconds: float,
            echo) -> dict:
    name = f"freshrec_scale_{factor}x_{os.getpid()}"
    url = create_database(base_url, name)
    settings = base.model_copy(update={"database_url": SecretStr(url), "artifacts_uri": str(work / "artifacts" / name)})
    env = {**os.environ, "FRESHREC_DATABASE_URL": url, "FRESHREC_ARTIFACTS_URI": settings.artifacts_root,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    engine, store = get_engine(settings), open_store(settings)
    row: dict = {"factor": factor}
    try:
        apply(store, settings.feast.repo_path)
        path = copies(factor, work)
        t = time.perf_counter()
        with engine.begin() as conn:
            write_batch(conn, online_retail_batch(path, until=FIRST_UNTIL, queries=0.3), "scale")
        row["load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        materialize(store, engine=engine)
        row["materialize_s"] = time.perf_counter() - t
        v1 = _update(env, base_model, work / f"update-v1-{factor}x.log")
        row.update({"v1_s": v1["wall_s"], "v1_peak_rss_mib": v1["peak_rss_mib"],
                    **{f"v1_{k}": v for k, v in _timings(engine, 1, v1["wall_s"]).items()}})
        with engine.begin() as conn:
            new_rows = write_batch(conn, online_retail_batch(path, since=WEEK_14[0], until=WEEK_14[1], queries=0.3),
                                   "scale").interactions_inserted
        materialize(store, engine=engine)
        v2 = _update(env, base_model, work / f"update-v2-{factor}x.log")
        row.update({"v2_new_rows": new_rows, "v2_s": v2["wall_s"], "v2_peak_rss_mib": v2["peak_rss_mib"],
                    "v2_over_v1": v2["wall_s"] / v1["wall_s"],
                    **{f"v2_{k}": v for k, v in _timings(engine, 2, v2["wall_s"]).items()}})
        # Without the process around the run (a fixed cost: `freshrec update --watch` pays its start once).
        row["v2_over_v1_after_start"] = (v2["wall_s"] - row["v2_start_s"]) / (v1["wall_s"] - row["v1_start_s"])
        users, row["api_customers_rows"] = returning_customers(engine, factor)
        row["api_customers"] = len(users)
        row.update({f"api_{k}": v for k, v in _api(env, port, users, concurrencies, seconds,
                                                    work / f"serve-{factor}x.log", feast=settings if factor == 1 else None).items()})
        row.update({f"rows_{k}": v for k, v in _sizes(engine).items()})
        echo(f"{factor}x: v1 {row['v1_s']:.0f} s, v2 {row['v2_s']:.0f} s (v2/v1 {row['v2_over_v1']:.2f}), "
             f"updater peak {row['v2_peak_rss_mib']:.0f} MiB, API {row['api_rss_mib']:.0f} MiB ready in "
             f"{row['api_ready_s']:.1f} s, swap {row['api_hot_swap_s']:.1f} s, p99 {row['api_p99_ms_c1']:.1f} ms")
    finally:
        engine.dispose()
        drop_database(base_url, name)
    return row


def growth(rows: list[dict]) -> list[dict]:
    """Each step's seconds at factor N over its seconds at the smallest factor, beside N itself."""
    first = rows[0]
    out = []
    for row in rows[1:]:
        g = {"factor": row["factor"], "new rows x": row["v2_new_rows"] / first["v2_new_rows"]}
        for step in STEPS:
            key = f"v2_{step}"
            if first.get(key):
                g[step] = row.get(key, 0.0) / first[key]
        g["faster than the new rows"] = [s for s in STEPS if g.get(s, 0) > 1.1 * g["new rows x"]]
        out.append(g)
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(rows)
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for column, label in (("v1_s", "version 1 (13 weeks)"), ("v2_s", "version 2 (week 14)"),
                          ("load_s", "load 13 weeks"), ("api_ready_s", "API ready")):
        a.plot(frame["factor"], frame[column], "-o", label=label)
    a.set(xscale="log", yscale="log", xlabel="shop size (copies)", ylabel="seconds", title="time")
    a.legend()
    for column, label in (("v2_peak_rss_mib", "updater peak RSS (v2)"), ("api_rss_mib", "API RSS")):
        b.plot(frame["factor"], frame[column], "-o", label=label)
    b.set(xscale="log", yscale="log", xlabel="shop size (copies)", ylabel="MiB", title="memory")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(factors: list[int], model: str, out_dir: Path, command: str, port: int = 8798, concurrencies=(1, 8),
        seconds: float = 10.0, echo=print) -> dict:
    started = time.perf_counter()
    base, base_url = get_settings(), database_url()
    work = base.home / "bench" / f"scale_{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    base_model = base_model_path(model, work)
    try:
        rows = [measure(f, base, base_url, base_model, work, port, concurrencies, seconds, echo) for f in sorted(factors)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    grown = growth(rows)
    columns = ["factor", "load_s", "materialize_s", "v1_s", "v2_s", "v2_over_v1", "v2_start_s", "v2_over_v1_after_start",
               "v2_new_rows", "v1_peak_rss_mib",
               "v2_peak_rss_mib", "api_ready_s", "api_rss_mib", "api_rss_held_mib", "api_hot_swap_s", "api_partners_held_s", "api_p50_ms_c1", "api_p99_ms_c1",
               "api_in_turns_p50_ms_c1", "api_in_turns_p99_ms_c1", "api_feast_serve_p50_ms_c1", "api_feast_serve_p99_ms_c1", "api_p50_over_feast_serve_c1",
               "api_p99_over_feast_serve_c1", "api_p50_ms_c8", "api_p99_ms_c8", "rows_interactions", "rows_item_daily_stats", "rows_database_mib"]
    extra = {"model": model, "growth": grown, "wall_s": time.perf_counter() - started}
    json_path, md_path = report.write(out_dir, "scale", rows, command, columns, extra)
    if grown:
        md_path.write_text(md_path.read_text() + "\n" + report.markdown_table(grown) + "\n")
    plot(rows, out_dir / "scale.png")
    echo(report.markdown_table(rows, columns))
    if grown:
        echo(report.markdown_table(grown))
    return {"rows": rows, **extra}

