"""``freshrec bench search``: does search find what the customer typed, and does fine-tuning keep it?

Its own database (the first 13 weeks of the bundled data, a synthetic query on 30% of the
purchases), a version 1 made by ``freshrec update`` (towers, ranker, and the search side's query
adapter trained on those weeks' query events), then week 14 loaded but not trained on:

- **known items** (1,000 catalog items, their queries never train; ``search.knownitem``): three
  title words shuffled, two swapped, three with one typo (hit@10, MRR, NDCG@10), and the head noun
  only (every item whose title holds it is relevant: NDCG@10);
- **week 14's query events**, split by customer: one half chooses the behaviour weights (a grid),
  the other half reports every arm with those weights.

Arms: PostgreSQL full text alone; BM25 over titles; the pre-trained encoder alone; the version's
user tower (how search ranked before it had a side of its own: for the record); the search
pipeline on day one (no adapter) and as version 1 trained it. 95% intervals: bootstrap over queries.

Latency: ``freshrec serve`` on that database, queries never asked before (no cache hits), at
concurrency 1 and 8, beside a returning customer's recommendations; and where one search's time
goes, in process. ``--timeline updates.json`` draws the forgetting curve from ``bench updates``
(the known-item set scored on every version of the whole timeline).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
import torch

from freshrec.bench import report
from freshrec.bench.metrics import as_interval, bootstrap
from freshrec.bench.platform import bench_run, create_platform, dispose
from freshrec.bench.processes import spawn, stop, wait_ready
from freshrec.bench.search_weeks import forgetting_plot
from freshrec.bench.serving import _http_load, _row
from freshrec.bench.timeline import open_timeline
from freshrec.ingest.synthetic_queries import VARIANTS, TitleWords, make_query
from freshrec.search import evaluate, lexical
from freshrec.search.bm25 import BM25
from freshrec.search.pipeline import SearchConfig, SearchPipeline
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.updater import run_update
from freshrec.updater.search_stage import base_side, popularity_at

QUERY_SHARE = 0.3
GRID = {"dense_weight": (0.5, 1.0), "popularity_weight": (0.0, 0.002, 0.005, 0.01),
        "history_weight": (0.0, 0.005, 0.01, 0.02)}
ARMS = ("full-text", "bm25", "pre-trained encoder", "user tower (record)", "pipeline, day one", "pipeline, version 1")


def _ranked_lists(side, snap, bm25, pipelines, queries, lexical_lists, popularity, histories):
    """Each arm's top 10 for every query (item ids)."""
    vecs = side.pipeline(None).query_vectors(queries)
    user_vecs = snap.embed(queries)
    out = {"full-text": [lst[:10] for lst in lexical_lists],
           "bm25": [[side.items.item_ids[j] for j in np.argsort(-bm25.scores(q), kind="stable")[:10]] for q in queries],
           "pre-trained encoder": [lst[:10] for lst in side.pipeline(None).dense(vecs)],
           "user tower (record)": [[h.item_id for h in snap.top_k(v, 10)] for v in user_vecs]}
    for name, pipeline in pipelines.items():
        ranked = pipeline.rank(queries, lexical_lists, popularity, histories, 10)
        out[name] = [[h.item_id for h in hits] for hits in ranked]
    return out


def _summaries(frame: pd.DataFrame, by: str) -> list[dict]:
    rows = []
    for (arm, group), part in frame.groupby(["arm", by], sort=False):
        row = {"arm": arm, by: group, "queries": len(part)}
        for m in ("hit", "rr", "ndcg"):
            row[m] = as_interval(bootstrap(part.rename(columns={"query_id": "user"}), m))
        rows.append(row)
    return rows


def _histories(engine, events: pd.DataFrame) -> list[dict[str, float]]:
    """Each query event's customer: baskets with each item before the event."""
    sql = """SELECT item_id, count(DISTINCT event_time) FROM interactions
             WHERE user_id = :u AND event_time < :t AND event_type = 'purchase' GROUP BY item_id"""
    with engine.connect() as conn:
        return [{r[0]: float(r[1]) for r in conn.execute(sa.text(sql), {"u": u, "t": t})}
                for u, t in zip(events["user_id"], events["event_time"])]


def _weights(side, adapter, events, lexical_lists, popularity, histories) -> tuple[SearchConfig, list[dict]]:
    """The behaviour weights with the best MRR on the validation half of the query events."""
    grid = []
    for dense, pop, hist in itertools.product(*GRID.values()):
        config = SearchConfig(dense_weight=dense, popularity_weight=pop, history_weight=hist)
        rows = evaluate.score(side.pipeline(adapter, config), events["query"].tolist(),
                              [{i} for i in events["item_id"]], lexical_lists, popularity, histories)
        grid.append({"dense_weight": dense, "popularity_weight": pop, "history_weight": hist,
                     "mrr": float(np.mean([r["rr"] for r in rows]))})
    best = max(grid, key=lambda g: (g["mrr"], -g["popularity_weight"], -g["history_weight"]))
    return SearchConfig(dense_weight=best["dense_weight"], popularity_weight=best["popularity_weight"],
                        history_weight=best["history_weight"]), grid


def _unseen_queries(titles: list[str], n: int, seed: int = 7) -> list[str]:
    """Distinct synthetic queries, none of which the server has been asked before."""
    rng, stats, seen = np.random.default_rng(seed), TitleWords.build(titles), set()
    for _ in range(20 * n):  # a small catalog may hold fewer distinct queries: take what it has
        if len(seen) >= n:
            break
        q = make_query(titles[int(rng.integers(len(titles)))], VARIANTS[int(rng.integers(3))], rng, stats)
        if q:
            seen.add(q)
    out = sorted(seen)
    rng.shuffle(out)  # each latency cell's pool: all kinds of query, not one stretch of the alphabet
    return out


def _time_breakdown(engine, side, pipeline, queries: list[str], popularity) -> dict:
    """Median milliseconds of each part of one search, in process, on queries never seen before; the
    query is embedded as the API embeds it (no shared cache)."""
    parts = {"encode": [], "full-text (SQL)": [], "dense + fusion + re-rank": []}
    pipeline = SearchPipeline(side.items, side.encode_uncached, pipeline.adapter, pipeline.config, side.vocabulary)
    with engine.connect() as conn, torch.no_grad():
        for q in queries:
            t0 = time.perf_counter()
            vec = pipeline.query_vectors([q])
            t1 = time.perf_counter()
            found = [i for i, _ in lexical.search(conn, q, pipeline.vocabulary, pipeline.config.depth)]
            t2 = time.perf_counter()
            pipeline.rank([q], [found], popularity, None, 20, vecs=vec)
            t3 = time.perf_counter()
            for name, (a, b) in zip(parts, ((t0, t1), (t1, t2), (t2, t3))):
                parts[name].append((b - a) * 1000)
    return {name: float(np.median(v)) for name, v in parts.items()}


def _latency(settings, port: int, queries: list[str], users: list[str], concurrencies, seconds, out_dir, echo):
    env = {**os.environ, "FRESHREC_DATABASE_URL": settings.database_url.get_secret_value(),
           "FRESHREC_ARTIFACTS_URI": settings.artifacts_root, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    url = f"http://127.0.0.1:{port}"
    server = spawn(["freshrec", "serve", "--port", str(port)], env, out_dir / "search-serve.log")
    rows, pool = [], iter(np.array_split(np.array(queries, dtype=object), 2 * len(concurrencies) + 1))
    try:
        wait_ready(url, "/readyz", timeout=600, proc=server)
        asyncio.run(_http_load(url, [f"/v1/search?q={q}&k=20" for q in next(pool)], 1, 3.0))  # warm-up
        for c in concurrencies:
            for target, paths in (("search, queries never asked before", [f"/v1/search?q={q}&k=20" for q in next(pool)]),
                                  ("recommendations, returning customer", [f"/v1/users/{u}/recommendations?k=20"
                                                                           for u in users])):
                latencies, errors, took = asyncio.run(_http_load(url, paths, c, seconds))
                # Past the pool, queries repeat and the API's encode cache answers them: say so.
                rows.append({**_row(target, c, latencies, took, errors), "distinct_paths": len(paths),
                             "repeated": len(latencies) + errors > len(paths)})
                echo(f"{target:<40} c={c}: p50 {rows[-1]['p50_ms']:.1f} ms, p99 {rows[-1]['p99_ms']:.1f} ms")
    finally:
        stop([server], grace_s=30)
    return rows


def _forgetting(timeline_json: Path, path: Path) -> list[dict]:
    """The forgetting curve of a ``bench updates`` run, drawn from its JSON."""
    weeks = json.loads(timeline_json.read_text())["search"]
    forgetting_plot(weeks, path)
    return weeks


def run(model: str, out_dir: Path, command: str, items: int = 0, seconds: float = 10.0,
        concurrencies: tuple[int, ...] = (1, 8), port: int = 8796, timeline_json: Path | None = None,
        echo=print) -> dict:
    started = time.perf_counter()
    run_ = bench_run(model)
    base, base_url, tag, scratch, base_model = run_.base, run_.base_url, run_.tag, run_.scratch, run_.base_model
    timeline = open_timeline(None, queries=QUERY_SHARE)
    platform = create_platform(base, base_url, f"freshrec_search_{tag}", "head", scratch, timeline)
    try:
        v1 = run_update(TrainingArguments(), GateArguments(enabled=False), base_model=base_model,
                        settings=platform.settings, trigger="bench")
        echo(f"version 1 on the first 13 weeks: {v1.message}")
        held_out = platform.load(timeline.batch(*timeline.weeks[0]))  # week 14: loaded, never trained on
        engine, snap = platform.engine, platform.snapshot()
        side = base_side(engine, base_model, torch.device("cpu"))
        if items:  # a smoke run scores the first few of the set; the benchmark all of it
            side.known = side.known.head(items)
        with engine.connect() as conn:
            events = pd.read_sql(sa.text(
                "SELECT user_id, item_id, query, event_time FROM interactions WHERE query IS NOT NULL "
                "AND event_time >= :a"), conn, params={"a": pd.Timestamp(timeline.weeks[0][0], tz="UTC")})
        events = events[events["item_id"].isin(side.items.row_of)].reset_index(drop=True)
        from freshrec.updater.stages import fold_of

        fold = fold_of(events["user_id"])
        validation, test = events[fold == 0].reset_index(drop=True), events[fold == 1].reset_index(drop=True)
        pop = popularity_at(engine, side, events["event_time"].min())
        popularity = lambda ids: {i: pop.get(i, 0.0) for i in ids}  # noqa: E731
        adapter = snap.loaded.search[0]
        lex = {name: evaluate.lexical_results(engine, side.pipeline(None), frame["query"].tolist())
               for name, frame in (("validation", validation), ("test", test), ("known", side.known.queries))}
        config, grid = _weights(side, adapter, validation, lex["validation"], popularity, _histories(engine, validation))
        echo(f"behaviour weights chosen on {len(validation):,} validation query events: {config}")
        pipelines = {"pipeline, day one": side.pipeline(None, config), "pipeline, version 1": side.pipeline(adapter, config)}
        bm25 = BM25(side.items.titles)
        frames = []
        known = side.known.queries
        for name, queries, relevant, variants, lexical_lists, histories in (
                ("known items", known["query"].tolist(), [set(r) for r in known["relevant"]], known["variant"].tolist(),
                 lex["known"], None),
                ("week-14 query events", test["query"].tolist(), [{i} for i in test["item_id"]], ["query events"] * len(test),
                 lex["test"], _histories(engine, test))):
            ranked = _ranked_lists(side, snap, bm25, pipelines, queries, lexical_lists, popularity, histories)
            for arm, lists in ranked.items():
                rows = [evaluate.query_metrics(r, rel) for r, rel in zip(lists, relevant)]
                frames.append(pd.DataFrame(rows).assign(arm=arm, set=name, variant=variants, query_id=range(len(rows))))
        frame = pd.concat(frames, ignore_index=True)
        frame["week"] = "bench"
        summary = _summaries(frame, "variant")
        titles = side.items.titles
        unseen = _unseen_queries(titles, 30_000)  # enough that no latency cell runs out and repeats
        breakdown = _time_breakdown(engine, side, pipelines["pipeline, version 1"], unseen[:300], popularity)
        echo(f"one search, median ms by part (in process): {breakdown}")
        with engine.connect() as conn:
            # Returning customers: week-14 buyers with earlier history (a newcomer gets the popular list).
            users = [r[0] for r in conn.execute(sa.text(
                "SELECT DISTINCT user_id FROM interactions i WHERE event_time >= :a AND EXISTS "
                "(SELECT 1 FROM interactions o WHERE o.user_id = i.user_id AND o.event_time < :a) ORDER BY user_id LIMIT 500"),
                {"a": pd.Timestamp(timeline.weeks[0][0], tz="UTC")})]
        latency = _latency(platform.settings, port, unseen[300:], users, concurrencies, seconds, out_dir, echo)
    finally:
        dispose(platform, base_url)
        shutil.rmtree(scratch, ignore_errors=True)
    extra = {"model": model, "known_items": int(side.known.queries["item_id"].nunique()), "query_share": QUERY_SHARE, "held_out_rows": held_out,
             "validation_events": len(validation), "test_events": len(test), "weights": config.to_dict(),
             "grid": grid, "time_breakdown_ms": breakdown, "latency": latency, "wall_s": time.perf_counter() - started}
    if timeline_json is not None:
        extra["forgetting"] = _forgetting(Path(timeline_json), out_dir / "search-forgetting.png")
    flat = [{"arm": r["arm"], "variant": r["variant"], "queries": r["queries"],
             **{m: f"{r[m]['mean']:.3f} [{r[m]['lo']:.3f}, {r[m]['hi']:.3f}]" for m in ("hit", "rr", "ndcg")}}
            for r in summary]
    json_path, md_path = report.write(out_dir, "search", summary, command, None, extra)
    md_path.write_text(report.markdown_table(flat) + "\n\n" + report.markdown_table(latency) + "\n\n" + md_path.read_text())
    frame.to_parquet(out_dir / "search-queries.parquet", index=False)
    echo(report.markdown_table(flat))
    echo(report.markdown_table(latency))
    return {"summary": summary, **extra}
