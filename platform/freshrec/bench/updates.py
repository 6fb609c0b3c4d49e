"""``freshrec bench updates``: incremental updates against full retraining, a stale model and two
baselines, week by week, through the real platform (PostgreSQL, Feast, the updater, watermarks).

1. A fresh database per incremental strategy; load the first 13 weeks; ``freshrec update`` -> v1.
2. Each following week: load it, materialize, ``run_update`` (the gate on, as in production);
   retrain from the base model on every row so far (same hyper-parameters, same Feast path);
   score every arm on the week after, which is not loaded yet.

Arms: stale (v1, never updated), incremental-<strategy> (the current version), full-retrain,
popularity (last 4 weeks), personal-frequency (own most-bought, filled with popular).
"""
from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from freshrec.bench import report
from freshrec.bench.evaluation import model_scores, personal_frequency, pooled_states, popularity, test_week
from freshrec.bench.timeline import open_timeline
from freshrec.config import Settings, get_settings
from freshrec.db import database_url, get_engine, upgrade
from freshrec.features import apply, materialize, open_store
from freshrec.ingest import write_batch
from freshrec.registry.artifacts import load_chain
from freshrec.updater import run_update
from freshrec.registry.versions import chain
from freshrec.training import dataset
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.training.base_models import build_tiny, load_encoder, load_tokenizer, resolve
from freshrec.training.distributed import World
from freshrec.training.modeling import TwoTower
from freshrec.training.train import fine_tune, wrap_lora
from freshrec.training.watermark import ZERO_XID, take_cut

K = 20
COLUMNS = ["week", "test_week", "arm", "recall@20", "ndcg@20", "users", "train_s", "update_s", "rows", "pairs",
           "peak_rss_mib", "version"]
_COVERAGE = """
SELECT (SELECT count(*) FROM interactions) AS loaded,
       (SELECT count(*) FROM version_consumed_rows WHERE version = :v) AS consumed,
       (SELECT count(DISTINCT interaction_id) FROM version_consumed_rows WHERE version = :v) AS distinct_consumed,
       (SELECT bool_and(consistent) FROM watermark_audit) AS audit_consistent"""


class PeakRss:
    """The process's peak resident memory while the block runs (sampled every 20 ms)."""

    def __enter__(self) -> PeakRss:
        self.peak, self._stop = psutil.Process().memory_info().rss, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        proc = psutil.Process()
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mib(self) -> float:
        return self.peak / 2**20


@dataclass
class Platform:
    """One bench database with its settings, engine and Feast store."""

    strategy: str
    settings: Settings
    store: object

    @property
    def engine(self):
        return get_engine(self.settings)

    def load(self, batch) -> int:
        with self.engine.begin() as conn:
            inserted = write_batch(conn, batch, "bench", self.settings.feast.profile_length).interactions_inserted
        materialize(self.store, engine=self.engine)
        return inserted


def _create_database(base_url: str, name: str) -> str:
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return url


def _drop_database(base_url: str, name: str) -> None:
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _platform(base: Settings, base_url: str, name: str, strategy: str, scratch: Path, timeline) -> Platform:
    settings = base.model_copy(update={"database_url": SecretStr(_create_database(base_url, name)),
                                       "artifacts_uri": str(scratch / "artifacts" / name)})
    store = open_store(settings)
    apply(store, settings.feast.repo_path)
    platform = Platform(strategy, settings, store)
    if timeline.catalog is not None:
        with platform.engine.begin() as conn:
            write_batch(conn, timeline.catalog, "bench catalog")
    platform.load(timeline.batch(None, timeline.first_until))
    return platform


def _base_model(name: str, scratch: Path) -> str:
    return str(build_tiny(scratch / "models" / "tiny")) if name == "tiny" else str(resolve(name))


def _current_model(platform: Platform):
    with platform.engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version FROM current_version")).scalar()
        lineage = chain(conn, version)
    loaded = load_chain(lineage, 128)
    return version, loaded.model, loaded.tokenizer


def _update(platform: Platform, args: TrainingArguments, gate: GateArguments, base_model: str) -> dict:
    with PeakRss() as rss:
        started = time.perf_counter()
        outcome = run_update(args, gate, base_model=base_model, settings=platform.settings, log=lambda *_: None)
        wall = time.perf_counter() - started
    if outcome.status != "created":
        return {"update_s": wall, "train_s": 0.0, "rows": 0, "pairs": 0, "peak_rss_mib": rss.mib, "promoted": None}
    with platform.engine.connect() as conn:
        timings = conn.execute(sa.text("SELECT timings FROM model_versions WHERE version = :v"), {"v": outcome.version}).scalar()
    m = outcome.metrics
    return {"update_s": wall, "train_s": timings["train_s"], "rows": m["rows_new"] + m["rows_replay"],
            "pairs": m["rows_seen"], "peak_rss_mib": rss.mib, "promoted": outcome.promoted}


def _full_retrain(platform: Platform, args: TrainingArguments, base_model: str, device):
    """From the base encoder, on every row so far: the same cut-to-Feast path and hyper-parameters."""
    with PeakRss() as rss:
        started = time.perf_counter()
        cut = take_cut(platform.engine, ZERO_XID)
        data = dataset.build(platform.engine, platform.store, cut, args)
        path = resolve(base_model)
        model, tokenizer = TwoTower(load_encoder(path), args.embedding_dim), load_tokenizer(path)
        if args.strategy == "lora":
            wrap_lora(model, args)
        t_train = time.perf_counter()
        result = fine_tune(model, tokenizer, data, args, device, World())
        train_s = time.perf_counter() - t_train
        wall = time.perf_counter() - started
    if args.strategy == "lora":
        model.encoder = model.encoder.merge_and_unload()
    cost = {"update_s": wall, "train_s": train_s, "rows": cut.row_count, "pairs": result.rows_seen, "peak_rss_mib": rss.mib}
    return model, tokenizer, cost


def run(weeks: int | None, model: str, strategies: list[str], device_name: str, dataset_path: str | None,
        out_dir: Path, max_eval_users: int, gate: bool, keep_databases: bool, command: str, echo=print) -> dict:
    started = time.perf_counter()
    timeline = open_timeline(dataset_path)
    n_weeks = min(weeks or len(timeline.weeks), len(timeline.weeks) - 1)  # each needs a test week after it
    if n_weeks < 1:
        raise ValueError("--weeks: the data set has no week after the first 13 to test on")
    base, base_url = get_settings(), database_url()
    tag = f"{os.getpid()}_{int(time.time())}"
    scratch = base.home / "bench" / tag  # versions' artifacts and the tiny model: not results
    base_model = _base_model(model, scratch)
    device = World().device(device_name)
    args = {s: TrainingArguments(strategy=s, device=device_name) for s in strategies}
    echo(f"first 13 weeks to {timeline.first_until}; {n_weeks} weeks to replay; model {model}; strategies {strategies}")
    platforms = [_platform(base, base_url, f"freshrec_bench_{s}_{tag}", s, scratch, timeline) for s in strategies]
    primary = platforms[0]
    rows: list[dict] = []
    try:
        for p in platforms:  # version 1 of each incremental arm: the first 13 weeks
            cost = _update(p, args[p.strategy], GateArguments(enabled=False), base_model)
            rows.append({"week": str(timeline.first_until), "test_week": None, "arm": f"incremental-{p.strategy}",
                         **cost, "version": 1})
        _, stale_model, stale_tokenizer = _current_model(primary)
        for i, (since, until) in enumerate(timeline.weeks[:n_weeks]):
            batch = timeline.batch(since, until)
            costs = {}
            for p in platforms:
                p.load(batch)
                costs[f"incremental-{p.strategy}"] = _update(p, args[p.strategy], GateArguments(enabled=gate), base_model)
            retrained, retrained_tokenizer, costs["full-retrain"] = _full_retrain(primary, args[primary.strategy],
                                                                                   base_model, device)
            test_since, test_until = timeline.weeks[i + 1]
            week = test_week(primary.engine, timeline.batch(test_since, test_until).interactions, test_since, max_eval_users)
            # Head arms all keep the base encoder: encode the week once, project per arm.
            shared = pooled_states(stale_model, stale_tokenizer, device, week) if strategies == ["head"] else None
            scores = {"stale": model_scores(stale_model, stale_tokenizer, device, week, K, shared),
                      "full-retrain": model_scores(retrained, retrained_tokenizer, device, week, K, shared),
                      "popularity": popularity(primary.engine, week, K),
                      "personal-frequency": personal_frequency(primary.engine, week, K)}
            versions = {}
            for p in platforms:
                versions[p.strategy], m, tok = _current_model(p)
                scores[f"incremental-{p.strategy}"] = model_scores(m, tok, device, week, K, shared)
            for arm, (recall, ndcg) in scores.items():
                strategy = arm.removeprefix("incremental-")
                rows.append({"week": str(since), "test_week": str(test_since), "arm": arm, "recall@20": recall,
                             "ndcg@20": ndcg, "users": len(week.users), **costs.get(arm, {}),
                             "version": versions.get(strategy)})
            line = "  ".join(f"{a} {r:.3f}" for a, (r, _) in scores.items())
            echo(f"week {since} -> test {test_since} ({len(week.users)} users): Recall@20 {line}")
        coverage = {}
        for p in platforms:
            v, *_ = _current_model(p)
            with p.engine.connect() as conn:
                coverage[p.strategy] = dict(conn.execute(sa.text(_COVERAGE), {"v": v}).mappings().one())
    finally:
        if not keep_databases:
            for p in platforms:
                get_engine(p.settings).dispose()
                _drop_database(base_url, make_url(p.settings.database_url.get_secret_value()).database)
            shutil.rmtree(scratch, ignore_errors=True)
    summary = summarise(rows, strategies)
    extra = {"model": model, "strategies": strategies, "weeks": n_weeks, "first_until": str(timeline.first_until),
             "dataset": timeline.source, "device": str(device), "wall_s": time.perf_counter() - started,
             "watermark_coverage": coverage, "summary": summary}
    json_path, md_path = report.write(out_dir, "updates", rows, command, COLUMNS, extra)
    plot(rows, out_dir / "updates.png", f"{model}, {', '.join(strategies)}")
    echo(report.markdown_table(rows[-len(scores):], COLUMNS) if rows else "")
    echo(f"summary: {summary}\nwrote {json_path}, {md_path} and {out_dir / 'updates.png'}")
    return {"rows": rows, **extra}


def summarise(rows: list[dict], strategies: list[str]) -> dict:
    """The README's targets, computed from the rows (reported, never asserted)."""
    scored = [r for r in rows if r.get("test_week")]
    by = lambda arm, key: [r[key] for r in scored if r["arm"] == arm]  # noqa: E731
    out = {}
    for s in strategies:
        arm = f"incremental-{s}"
        inc, full, stale = by(arm, "recall@20"), by("full-retrain", "recall@20"), by("stale", "recall@20")
        pop, own = by("popularity", "recall@20"), by("personal-frequency", "recall@20")
        inc_cost, full_cost = by(arm, "train_s"), by("full-retrain", "train_s")
        steady = len(inc_cost) // 2  # the second half of the timeline
        ratios = [a / b for a, b in zip(inc_cost[steady:], full_cost[steady:]) if b]
        out[arm] = {
            "cost_ratio_steady_median": statistics.median(ratios) if ratios else None,
            "quality_vs_full_relative": (statistics.mean(inc) - statistics.mean(full)) / statistics.mean(full)
            if full and statistics.mean(full) else None,
            "weeks_above_stale_last10": sum(a > b for a, b in zip(inc[-10:], stale[-10:])),
            "mean_gain_over_stale_last10": statistics.mean(a - b for a, b in zip(inc[-10:], stale[-10:])) if inc else None,
            "weeks_above_popularity": f"{sum(a > b for a, b in zip(inc, pop))}/{len(inc)}",
            "mean_recall": statistics.mean(inc) if inc else None,
            "mean_recall_personal_frequency": statistics.mean(own) if own else None,
            "mean_recall_full_retrain": statistics.mean(full) if full else None,
            "mean_recall_stale": statistics.mean(stale) if stale else None,
            "mean_recall_popularity": statistics.mean(pop) if pop else None,
        }
    return out


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r.get("test_week")]
    arms = list(dict.fromkeys(r["arm"] for r in scored))
    fig, (quality, cost) = plt.subplots(1, 2, figsize=(13, 4.8))
    for arm in arms:
        mine = [r for r in scored if r["arm"] == arm]
        weeks = [r["test_week"][5:] for r in mine]
        quality.plot(weeks, [r["recall@20"] for r in mine], marker="o", ms=3, label=arm)
        if mine[0].get("train_s") is not None:
            cost.plot(weeks, [max(r["train_s"], 1e-3) for r in mine], marker="o", ms=3, label=arm)
    quality.set(title=f"Recall@20 on the week after ({title})", xlabel="test week", ylabel="Recall@20")
    cost.set(title="training time per week", xlabel="week", ylabel="seconds (log)", yscale="log")
    for ax in (quality, cost):
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelrotation=70, labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
