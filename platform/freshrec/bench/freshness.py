"""``freshrec bench freshness``: from an event's POST to the API serving a version whose watermark covers it.

A database of its own, loaded with the first 13 weeks and a version 1; then ``freshrec serve`` and
``freshrec update --watch`` as their own processes, as in production. This process posts the
following weeks' real purchases over HTTP, one event per request, at a steady rate, for each rate
in turn, while it polls ``/readyz`` for the version the API serves. An event is *served* once the
API answers with a version whose watermark covers the event's row (its ``ingest_xid`` lies below
the version's ``xid_to``: the lineage has consumed it). Latency = that moment - the POST.

"Consumed" is not always "trained on": the newest fifth of each cut is held out (half chooses the
epoch, half is the gate's evidence), and the next version replays it with the older rows. The
user's own rows count at once, though: the API reads a user's history per request.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import sqlalchemy as sa

from freshrec.bench import report
from freshrec.bench.processes import spawn, stop, wait_ready
from freshrec.bench.timeline import open_timeline
from freshrec.bench.platform import base_model_path, create_platform, dispose
from freshrec.config import get_settings
from freshrec.db import database_url
from freshrec.training.args import GateArguments, TrainingArguments
from freshrec.updater import run_update

TOKEN = {"Authorization": "Bearer freshrec-dev-token"}


class _Served:
    """Polls /readyz: (moment, serving version) at each change."""

    def __init__(self, url: str, every: float = 0.25):
        self.url, self.every, self.changes, self._stop = url, every, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def _run(self) -> None:
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                try:
                    version = http.get(f"{self.url}/readyz").json().get("version")
                    if not self.changes or self.changes[-1][1] != version:
                        self.changes.append((time.time(), version))
                except httpx.HTTPError:
                    pass
                self._stop.wait(self.every)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _post_at_rate(url: str, events: pd.DataFrame, rate: float, seconds: float, stop) -> list[dict]:
    """One event per request, sent on a fixed schedule; the moment each POST was answered.

    The events of the first ``seconds`` are measured. After them the same traffic goes on, not
    measured, until ``stop(measured)`` says so: a shop's traffic does not pause while the last
    events wait for a version, and a watcher only updates when rows arrive.
    """
    sent, start = [], time.monotonic()
    with httpx.Client(base_url=url, headers=TOKEN, timeout=30) as http:
        for n, row in enumerate(events.itertuples()):
            due = start + n / rate
            measured = due - start <= seconds
            if not measured and n % max(1, int(rate)) == 0 and stop([s for s in sent if s["measured"]]):
                break
            time.sleep(max(0.0, due - time.monotonic()))
            body = {"events": [{"event_key": f"fresh-{row.event_key}", "user_id": row.user_id, "item_id": row.item_id,
                                "event_type": "purchase", "event_time": row.event_time.isoformat(),
                                "quantity": int(row.quantity or 1)}]}
            r = http.post("/v1/events", json=body)
            sent.append({"event_key": f"fresh-{row.event_key}", "posted": time.time(), "status": r.status_code,
                         "measured": measured})
    return sent


def _latencies(engine, sent: list[dict], changes: list[tuple[float, int]]) -> pd.DataFrame:
    keys = [s["event_key"] for s in sent]
    with engine.connect() as conn:
        xids = dict(conn.execute(sa.text("SELECT event_key, ingest_xid::text FROM interactions WHERE event_key = ANY(:k)"),
                                 {"k": keys}).all())
        horizon = dict(conn.execute(sa.text("SELECT version, xid_to::text FROM watermarks")).all())
    out = []
    for s in sent:
        xid = int(xids[s["event_key"]]) if s["event_key"] in xids else None
        served = next((t for t, v in changes if v is not None and xid is not None and t >= s["posted"]
                       and int(horizon.get(v, 0)) > xid), None)
        out.append({**s, "served": served, "latency_s": served - s["posted"] if served else None})
    return pd.DataFrame(out)


def run(model: str, rates: list[float], seconds: float, min_rows: int, max_age: float, out_dir: Path, command: str,
        port: int = 8790, min_gate_baskets: int = 10, echo=print) -> dict:
    started = time.perf_counter()
    base, base_url = get_settings(), database_url()
    tag = f"{os.getpid()}_{int(time.time())}"
    scratch = base.home / "bench" / tag
    base_model = base_model_path(model, scratch)
    timeline = open_timeline(None)
    name = f"freshrec_fresh_{tag}"
    platform = create_platform(base, base_url, name, "head", scratch, timeline)
    settings = platform.settings
    v1 = run_update(TrainingArguments(), GateArguments(enabled=False), base_model=base_model, settings=settings,
                    trigger="bench")
    echo(f"version 1 on the first 13 weeks: {v1.message}")
    env = {**os.environ, "FRESHREC_DATABASE_URL": settings.database_url.get_secret_value(),
           "FRESHREC_ARTIFACTS_URI": settings.artifacts_root, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    url = f"http://127.0.0.1:{port}"
    api = spawn(["freshrec", "serve", "--port", str(port)], env, out_dir / "freshness-api.log")
    watcher = None
    rows, summary = [], []
    try:
        wait_ready(url, proc=api)
        watcher = spawn(["freshrec", "update", "--watch", "--base-model", base_model, "--min-rows", str(min_rows),
                          "--max-age", str(max_age), "--poll", "2", "--min-gate-baskets", str(min_gate_baskets)],
                         env, out_dir / "freshness-watch.log")
        events = timeline.batch(*timeline.weeks[0]).interactions.sort_values("event_time").reset_index(drop=True)
        offset = 0
        for rate in rates:
            with _Served(url) as served:
                deadline = time.time() + seconds + max(240.0, 4 * max_age)  # then the measured events must be served
                posted = _post_at_rate(url, events.iloc[offset:], rate, seconds,
                                       lambda sent: time.time() > deadline or _all_served(platform.engine, sent, served.changes))
                offset += len(posted)
                sent = [s for s in posted if s["measured"]]
            frame = _latencies(platform.engine, sent, served.changes)
            with platform.engine.connect() as conn:
                cycles = pd.read_sql(sa.text(
                    "SELECT r.status, v.status AS version_status, "
                    "extract(epoch FROM r.finished_at - r.started_at)::float8 AS seconds FROM update_runs r "
                    "LEFT JOIN model_versions v USING (version) "
                    "WHERE r.trigger = 'watch' AND r.started_at >= to_timestamp(:t)"), conn, params={"t": sent[0]["posted"]})
            done = cycles[cycles["status"] == "created"]
            row = {"rate_per_s": rate, **latency_summary(frame),
                   "updates": int(len(done)), "promoted": int((done["version_status"] == "promoted").sum()),
                   "update_s_median": float(done["seconds"].median()) if len(done) else None}
            summary.append(row)
            rows += frame.assign(rate_per_s=rate).to_dict("records")
            echo(f"{rate:>5} events/s: {row['events']} measured, {row['accepted']} accepted, {row['served']} served; p50 {_secs(row['p50_s'])}, "
                 f"p95 {_secs(row['p95_s'])}, max {_secs(row['max_s'])}; {row['updates']} versions "
                 f"({row['promoted']} promoted), median {row['update_s_median'] or 0:.1f} s each")
    finally:
        stop([watcher, api], grace_s=120)
        dispose(platform, base_url)
    extra = {"model": model, "seconds_per_rate": seconds, "min_rows": min_rows, "max_age": max_age,
             "min_gate_baskets": min_gate_baskets,
             "wall_s": time.perf_counter() - started, "events": rows}
    json_path, md_path = report.write(out_dir, "freshness", summary, command, None, extra)
    _plot(pd.DataFrame(rows), out_dir / "freshness.png", model)
    echo(report.markdown_table(summary))
    echo(f"wrote {json_path}, {md_path} and {out_dir / 'freshness.png'}")
    return {"summary": summary, **extra}


def latency_summary(frame: pd.DataFrame) -> dict:
    """Percentiles over the accepted events (a 422 names an item not in the catalog yet: nothing to
    serve); an accepted event never served counts as infinitely late."""
    accepted = frame[frame["status"] == 200]
    lat = accepted["latency_s"].astype(float).fillna(np.inf).to_numpy()

    def pct(q: float) -> float | None:
        value = float(np.quantile(lat, q, method="higher")) if lat.size else np.inf
        return value if np.isfinite(value) else None

    return {"events": len(frame), "accepted": len(accepted), "rejected_422": int((frame["status"] == 422).sum()),
            "errors": int((~frame["status"].isin([200, 422])).sum()), "served": int(np.isfinite(lat).sum()),
            "p50_s": pct(0.5), "p95_s": pct(0.95), "max_s": pct(1.0)}


def _secs(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "not all served"


def _all_served(engine, sent, changes) -> bool:
    if not sent:
        return False
    frame = _latencies(engine, sent, list(changes))
    return bool(frame.loc[frame["status"] == 200, "latency_s"].notna().all())


def _plot(frame: pd.DataFrame, path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for rate, rows in frame.groupby("rate_per_s"):
        lat = np.sort(rows["latency_s"].dropna().to_numpy())
        if lat.size:  # the share of all measured events: a curve below 1 at the end left some unserved
            ax.plot(lat, np.arange(1, lat.size + 1) / int((rows["status"] == 200).sum()), label=f"{rate:g} events/s")
    ax.set(title=f"event -> served by a version whose watermark covers it ({model}, head, watch mode)",
           xlabel="seconds after the POST", ylabel="share of events served")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
