"""Prometheus metrics, one registry per app (so tests can build several apps in one process)."""
from __future__ import annotations

import time
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from freshrec.updater.freshness import freshness

UPDATE_RESULTS = ("created", "no-new-rows", "failed", "abandoned")


class ApiMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.latency = Histogram("freshrec_request_seconds", "request latency by route", ["method", "route", "status"],
                                 registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.version = Gauge("freshrec_serving_version", "model version answering requests", registry=self.registry)
        self.age = Gauge("freshrec_serving_version_age_seconds", "seconds since the serving version was published",
                         registry=self.registry)
        self.rows_behind = Gauge("freshrec_rows_behind_watermark", "interactions committed after the serving version's cut",
                                 registry=self.registry)
        self.oldest_untrained = Gauge("freshrec_oldest_untrained_row_age_seconds",
                                      "age of the oldest row past the serving version's watermark (0: none)",
                                      registry=self.registry)
        self.last_update = Gauge("freshrec_last_update_result", "1 for the last update run's result, 0 for the others",
                                 ["result"], registry=self.registry)
        self.last_update_seconds = Gauge("freshrec_last_update_duration_seconds", "how long the last update run took",
                                         registry=self.registry)
        self.last_update_age = Gauge("freshrec_last_update_age_seconds", "seconds since the last update run ended",
                                     registry=self.registry)
        self.watcher = Gauge("freshrec_watcher_running", "1 while `freshrec update --watch` holds its lock",
                             registry=self.registry)
        self.cache_states = Gauge("freshrec_encoder_cache_states", "encoder states cached in PostgreSQL",
                                  registry=self.registry)
        self.cache_bytes = Gauge("freshrec_encoder_cache_bytes", "bytes of encoder states cached", registry=self.registry)
        self.cache_lookups = Gauge("freshrec_serving_profile_encodes", "the serving version's profile vectors in this "
                                   "process, by where their encoder state came from (cache hit or encoded)",
                                   ["result"], registry=self.registry)
        self.horizon_age = Gauge("freshrec_horizon_oldest_transaction_seconds",
                                 "age of the oldest open transaction on the server: the watermark cut and "
                                 "materialization wait for it", registry=self.registry)
        self.swaps = Counter("freshrec_version_swaps", "hot swaps to a new version", registry=self.registry)
        self.refusals = Counter("freshrec_version_refusals", "versions that failed to load (old one kept serving)",
                                ["reason"], registry=self.registry)

    def observe(self, method: str, route: str, status: int, started: float) -> None:
        self.latency.labels(method, route, str(status)).observe(time.perf_counter() - started)

    def render(self, engine, snapshot) -> bytes:
        with engine.connect() as conn:
            state = freshness(conn)
        self.horizon_age.set((state["oldest_transaction"] or {}).get("age_seconds") or 0)
        self.rows_behind.set(state["rows_behind"])
        self.oldest_untrained.set(state["oldest_untrained_seconds"] or 0)
        last = state["last_update"]
        for result in UPDATE_RESULTS:
            self.last_update.labels(result).set(1 if last and last["status"] == result else 0)
        if last:
            self.last_update_seconds.set(last["seconds"] or 0)
            self.last_update_age.set((datetime.now(timezone.utc) - last["finished_at"]).total_seconds()
                                     if last["finished_at"] else 0)
        self.watcher.set(1 if state["watcher_running"] else 0)
        self.cache_states.set(state["encoder_cache"]["states"])
        self.cache_bytes.set(state["encoder_cache"]["bytes"])
        if snapshot is not None:
            self.version.set(snapshot.version)
            self.age.set((datetime.now(timezone.utc) - snapshot.created_at).total_seconds())
            stats = snapshot.ranking.encoder.stats
            self.cache_lookups.labels("hit").set(stats.hits)
            self.cache_lookups.labels("encoded").set(stats.encoded)
        return generate_latest(self.registry)
