"""``freshrec bench serve``: the API under load from a second process, beside the raw Feast online read.

The server runs as its own process (``freshrec serve``) on the loaded database; this process is
the load generator (asyncio + httpx, one connection per concurrent client). For each endpoint
and concurrency it reports p50/p99 latency and throughput; the same users' features
come from Feast's own HTTP feature server (``feast serve``) and from ``get_online_features`` in
process, as the floor the API is built on. The retrieval
table compares the in-process exact index with pgvector's HNSW on the same query vectors.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import sqlalchemy as sa

from freshrec.bench import report
from freshrec.bench.processes import stop, wait_ready
from freshrec.db.vectors import to_literal

COLUMNS = ["target", "concurrency", "requests", "p50_ms", "p99_ms", "throughput_rps", "errors"]


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    ms = np.array(latencies) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _row(target: str, concurrency: int, latencies: list[float], seconds: float, errors: int) -> dict:
    p50, p99 = _percentiles(latencies) if latencies else (float("nan"), float("nan"))
    return {"target": target, "concurrency": concurrency, "requests": len(latencies), "p50_ms": p50, "p99_ms": p99,
            "throughput_rps": len(latencies) / seconds, "errors": errors}


async def _timed(http: httpx.AsyncClient, target) -> float | None:
    """One request's seconds: a GET of a path, or a POST of a (path, json) pair; None when it failed."""
    started = time.perf_counter()
    try:
        r = await (http.post(target[0], json=target[1]) if isinstance(target, tuple) else http.get(target))
    except httpx.TransportError:  # a reset connection is an error of the server under test
        return None
    return time.perf_counter() - started if r.status_code == 200 else None


async def _http_load(base: str, paths: list, concurrency: int, seconds: float) -> tuple[list[float], int, float]:
    """GET each path (or POST, for a (path, json) pair) from ``concurrency`` clients for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            i = offset
            while time.perf_counter() < deadline:
                took = await _timed(http, paths[i % len(paths)])
                if took is None:
                    errors += 1
                else:
                    latencies.append(took)
                i += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


async def _in_turns(servers: dict[str, tuple[str, list]], seconds: float, rounds: int = 5) -> dict[str, tuple]:
    """One client per server, sending its targets in order, to each server in turn for ``seconds /
    rounds`` at a time, ``rounds`` times: side by side, so a slow moment of the machine falls on both
    (one server's p99 moved 2x between runs measured one after the other). A server's targets carry on
    where its last turn stopped, on the same connection. Per server: (latencies, errors, seconds)."""
    clients = {name: httpx.AsyncClient(base_url=url, timeout=60) for name, (url, _) in servers.items()}
    latencies: dict[str, list[float]] = {name: [] for name in servers}
    errors, sent, busy = dict.fromkeys(servers, 0), dict.fromkeys(servers, 0), dict.fromkeys(servers, 0.0)
    try:
        for _ in range(rounds):
            for name, (_, targets) in servers.items():
                started = time.perf_counter()
                while time.perf_counter() - started < seconds / rounds:
                    took = await _timed(clients[name], targets[sent[name] % len(targets)])
                    sent[name] += 1
                    if took is None:
                        errors[name] += 1
                    else:
                        latencies[name].append(took)
                busy[name] += time.perf_counter() - started
    finally:
        for http in clients.values():
            await http.aclose()
    return {name: (latencies[name], errors[name], busy[name]) for name in servers}


def _feast_load(store, users: list[str], concurrency: int, seconds: float) -> tuple[list[float], float]:
    from freshrec.features import online_user_texts

    deadline = time.perf_counter() + seconds

    def worker(offset: int) -> list[float]:
        out, i = [], offset
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            online_user_texts(store, [users[i % len(users)]])
            out.append(time.perf_counter() - started)
            i += concurrency
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        parts = list(pool.map(worker, range(concurrency)))
    return [x for p in parts for x in p], time.perf_counter() - started


# Returning users: active in the serving version's own cut, so the updater warmed their newest
# profile's encoder state into the cache; the others come back after longer and are encoded.
_USERS = """
SELECT user_id, user_id IN (SELECT i.user_id FROM interactions i JOIN watermarks w ON w.version = :v
                            WHERE i.ingest_xid >= w.xid_from AND i.ingest_xid < w.xid_to) AS returning
FROM (SELECT DISTINCT user_id FROM user_profiles) u ORDER BY md5(user_id || :s) LIMIT :n"""


def workload(engine, version: int, n: int = 5000, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """Returning and other real users (shuffled), and search queries made of real item titles' first words."""
    with engine.connect() as conn:
        users = conn.execute(sa.text(_USERS), {"v": version, "s": str(seed), "n": n}).all()
        titles = [r[0] for r in conn.execute(sa.text(
            "SELECT title FROM items ORDER BY md5(item_id || :s) LIMIT :n"), {"s": str(seed), "n": n})]
    queries = [" ".join(t.lower().split()[:2]) for t in titles]
    return [u for u, back in users if back], [u for u, back in users if not back], queries


def retrieval_comparison(engine, store, version: int, k: int = 20, n: int = 200) -> list[dict]:
    """Exact in-process search against pgvector HNSW on the same query vectors: latency and recall@k.

    Publishing builds no vector index (nothing in serving queries one): this builds an HNSW index on
    the version's partition, as an operator who wants SQL nearest-neighbour search would, reports its
    build seconds, and drops it."""
    from threadpoolctl import threadpool_limits

    from freshrec.config import get_settings
    from freshrec.db.partitions import partition_name
    from freshrec.serving.snapshot import load_snapshot

    snap = load_snapshot(engine, version, store)
    _, _, queries = workload(engine, version, n)
    vecs = snap.embed(queries)
    table = partition_name("item_embeddings", version)
    index = f"ix_{table}_hnsw"
    with engine.begin() as conn:  # a run that died left its index: build it again, to time the build
        conn.execute(sa.text(f"DROP INDEX IF EXISTS {index}"))
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE INDEX {index} ON {table} USING hnsw (embedding vector_cosine_ops)"))
    build_s = time.perf_counter() - started
    exact_ms, hnsw_ms, recall = [], [], []
    try:
        # The exact arm on the threads the API computes on (``serving.compute_threads``).
        with engine.connect() as conn, threadpool_limits(get_settings().serving.compute_threads):
            conn.execute(sa.text(f"ANALYZE {table}"))
            for vec in vecs:
                started = time.perf_counter()
                exact = {h.item_id for h in snap.top_k(vec, k)}
                exact_ms.append(time.perf_counter() - started)
                started = time.perf_counter()
                got = [r[0] for r in conn.execute(sa.text(
                    "SELECT item_id FROM item_embeddings WHERE version = :v ORDER BY embedding <=> CAST(:q AS vector) LIMIT :k"),
                    {"v": version, "q": to_literal(vec), "k": k})]
                hnsw_ms.append(time.perf_counter() - started)
                recall.append(len(exact & set(got)) / k)
    finally:  # publishing builds none: the bench leaves none behind
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP INDEX IF EXISTS {index}"))
    rows = []
    for name, times, rec, built in (("in-process exact (numpy)", exact_ms, 1.0, None),
                                    ("pgvector HNSW (SQL)", hnsw_ms, float(np.mean(recall)), build_s)):
        p50, p99 = _percentiles(times)
        rows.append({"index": name, "items": len(snap.item_ids), "queries": len(times), "p50_ms": p50, "p99_ms": p99,
                     f"recall@{k}_vs_exact": rec, "index_build_s": built})
    return rows


def _feast_serve(port: int, settings=None) -> subprocess.Popen:
    """Feast's own HTTP feature server on the same repository and database (``settings``' one, default ours)."""
    from freshrec.config import get_settings
    from freshrec.features import feast_environment
    from freshrec.db import database_url

    settings = settings or get_settings()
    env = {**os.environ, **feast_environment(database_url(settings), settings)}
    feast = str(Path(sys.executable).parent / "feast")
    return subprocess.Popen([feast, "-c", str(settings.feast.repo_path), "serve", "-h", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _cells(base: str, targets: dict, concurrencies: list[int], seconds: float, echo) -> list[dict]:
    rows = []
    for target, paths_for in targets.items():
        for c in concurrencies:
            latencies, errors, took = asyncio.run(_http_load(base, paths_for(), c, seconds))
            rows.append(_row(target, c, latencies, took, errors))
            echo(f"{target:<44} c={c:<3} p50 {rows[-1]['p50_ms']:7.1f} ms  p99 {rows[-1]['p99_ms']:7.1f} ms  "
                 f"{rows[-1]['throughput_rps']:7.1f} req/s")
    return rows


def run(out_dir: Path, seconds: float, concurrencies: list[int], port: int, command: str, echo=print) -> dict:
    from freshrec.config import get_settings
    from freshrec.db import get_engine
    from freshrec.features import open_store
    from freshrec.features.store import USER_ACTIVITY, USER_TEXT

    engine = get_engine()
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version FROM current_version")).scalar()
    if version is None:
        raise ValueError("no current version: run `freshrec demo` or `freshrec update` first")
    returning, others, queries = workload(engine, version)
    if len(returning) < 2 * len(concurrencies) or len(others) < 50 + 2 * len(concurrencies):
        raise ValueError("too few users with profiles to measure: load more data (`freshrec demo` loads 14 weeks)")
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "FRESHREC_SERVING__PORT": str(port)}
    server = subprocess.Popen([sys.executable, "-m", "freshrec", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        wait_ready(base, proc=server)
        hot = [f"/v1/users/{u}/recommendations?k=20" for u in others[:50]]
        asyncio.run(_http_load(base, hot, 1, 3.0))  # warm-up: these 50 land in the process's own cache
        # Each cell takes users of its own, never asked for before in this process (a cell that runs
        # through its share wraps around onto users it has asked for: see the request counts).
        shares = {name: iter(np.array_split(np.array(group, dtype=object), len(concurrencies)))
                  for name, group in (("returning", returning), ("cold", others[50:]))}
        targets = {
            # The updater warmed these users' newest profiles: the encoder-state cache answers.
            "recommendations, returning user": lambda: [f"/v1/users/{u}/recommendations?k=20" for u in next(shares["returning"])],
            # Users outside the serving version's cut: if an earlier version of the same frozen encoder
            # (head) warmed their newest profile, the cache answers; otherwise the user tower runs
            # (micro-batched across requests). After `freshrec demo` version 1 warmed them all.
            "recommendations, cold user": lambda: [f"/v1/users/{u}/recommendations?k=20" for u in next(shares["cold"])],
            # Asked for in this process already: its own (user, profile, version) cache answers.
            "recommendations, cached user": lambda: hot,
            "search (full text + query tower, fused)": lambda: [f"/v1/search?q={q}&k=20" for q in queries],
        }
        rows += _cells(base, targets, concurrencies, seconds, echo)
    finally:
        stop([server], grace_s=30)
    feast_port = port + 1
    feast = _feast_serve(feast_port)
    try:
        wait_ready(f"http://127.0.0.1:{feast_port}", path="/health", proc=feast)
        body = lambda u: ("/get-online-features", {"features": [USER_TEXT, *USER_ACTIVITY], "entities": {"user_id": [u]}})  # noqa: E731
        asyncio.run(_http_load(f"http://127.0.0.1:{feast_port}", [body(u) for u in returning[:50]], 1, 3.0))
        rows += _cells(f"http://127.0.0.1:{feast_port}", {
            "feast serve: the same users' features (HTTP)": lambda: [body(u) for u in returning]}, concurrencies,
            seconds, echo)
    finally:
        stop([feast], grace_s=30)
    store = open_store(get_settings())
    _feast_load(store, returning, 1, 1.0)  # warm-up
    for c in concurrencies:
        latencies, took = _feast_load(store, returning, c, seconds)
        rows.append(_row("Feast get_online_features, in-process", c, latencies, took, 0))
        echo(f"{'Feast get_online_features, in-process':<44} c={c:<3} p50 {rows[-1]['p50_ms']:7.1f} ms  "
             f"p99 {rows[-1]['p99_ms']:7.1f} ms  {rows[-1]['throughput_rps']:7.1f} req/s")
    ratios = {}
    for c in concurrencies:
        ours = next(r for r in rows if r["target"] == "recommendations, returning user" and r["concurrency"] == c)
        theirs = next(r for r in rows if r["target"].startswith("feast serve") and r["concurrency"] == c)
        ratios[f"c={c}"] = ours["p99_ms"] / theirs["p99_ms"] if theirs["requests"] else None
        echo(f"returning-user recommendation p99 / feast serve p99 at c={c}: {ratios[f'c={c}']}")
    retrieval = retrieval_comparison(engine, store, version)
    report.write(out_dir, "serve", rows, command, COLUMNS, {"version": version, "seconds_per_cell": seconds,
                                                           "p99_ratio_returning_vs_feast_serve": ratios,
                                                           "returning_users": len(returning)})
    report.write(out_dir, "retrieval", retrieval, command)
    echo(report.markdown_table(rows, COLUMNS))
    echo(report.markdown_table(retrieval))
    return {"load": rows, "retrieval": retrieval, "ratios": ratios}
