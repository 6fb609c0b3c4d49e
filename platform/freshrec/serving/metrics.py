"""Prometheus metrics, one registry per app (so tests can build several apps in one process)."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Rows committed past the serving version's watermark: an index range scan on ingest_xid.
_ROWS_BEHIND = """
SELECT count(*) FROM interactions
WHERE ingest_xid >= (SELECT w.xid_to FROM watermarks w WHERE w.version = :v)"""


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
        self.swaps = Counter("freshrec_version_swaps", "hot swaps to a new version", registry=self.registry)
        self.refusals = Counter("freshrec_version_refusals", "versions that failed to load (old one kept serving)",
                                ["reason"], registry=self.registry)

    def observe(self, method: str, route: str, status: int, started: float) -> None:
        self.latency.labels(method, route, str(status)).observe(time.perf_counter() - started)

    def render(self, engine, snapshot) -> bytes:
        if snapshot is not None:
            self.version.set(snapshot.version)
            self.age.set((datetime.now(timezone.utc) - snapshot.created_at).total_seconds())
            with engine.connect() as conn:
                self.rows_behind.set(conn.execute(sa.text(_ROWS_BEHIND), {"v": snapshot.version}).scalar() or 0)
        return generate_latest(self.registry)
