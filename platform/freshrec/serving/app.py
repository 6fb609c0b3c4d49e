"""``create_app()``: the FastAPI service. ``freshrec serve`` runs it under uvicorn.

On start it opens the Feast store, loads the current version and starts the pointer watcher.
"""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

import freshrec
from freshrec.config import Settings, get_settings
from freshrec.db import database_url, get_engine
from freshrec.serving.deps import ApiState, api_state, is_admin
from freshrec.serving.metrics import ApiMetrics
from freshrec.serving.routes import erasures, events, models, ranking
from freshrec.serving.search import SearchService
from freshrec.serving.watcher import PointerWatcher, SnapshotHolder

log = logging.getLogger("freshrec.serving")


def _between_requests(state: ApiState) -> None:
    """What the watcher thread does on every wake-up, off the requests' path: the search side catches
    up with the catalog, the serving version reads its changed item aggregates once a minute, and the
    co-purchase partners of more items until it holds every item's (``Snapshot.warm``)."""
    current = state.holder.current
    state.search.sync(current)
    if current is not None:
        current.refresh()
        current.warm()


class Observe:
    """Each request's latency by route and status, as plain ASGI: ``@app.middleware("http")`` wraps every
    response in a stream pumped through a second task, a cost each request paid."""

    def __init__(self, app, metrics: ApiMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:  # the router names the route in the scope while it handles the request
            route = scope.get("route")
            self.metrics.observe(scope["method"], getattr(route, "path", "unmatched"), status[0], started)


def create_app(settings: Settings | None = None, watch: bool = True) -> FastAPI:
    settings = settings or get_settings()
    metrics = ApiMetrics()
    engine = get_engine(settings)
    holder = SnapshotHolder(engine, on_swap=lambda s: metrics.swaps.inc(),
                            on_failure=lambda v, err: metrics.refusals.labels(type(err).__name__).inc())
    state = ApiState(settings, engine, holder, metrics, SearchService(engine, settings.base_model))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from freshrec.features import open_store

        state.store = holder.store = open_store(settings)
        holder.sync()
        state.search.sync(holder.current)  # day one too: full text and the pre-trained encoder
        watcher = PointerWatcher(holder, database_url(settings), settings.serving.poll_seconds,
                                 also=lambda: _between_requests(state)) if watch else None
        if watcher:
            watcher.start()
        yield
        if watcher:
            watcher.stop()

    app = FastAPI(title="freshrec", version=freshrec.__version__, lifespan=lifespan,
                  description="Recommendations and search from the current model version; live events; lineage.")
    app.state.api = state

    app.add_middleware(Observe, metrics=metrics)

    @app.exception_handler(sa.exc.OperationalError)
    async def database_down(request: Request, err: sa.exc.OperationalError):
        log.error("database unavailable: %s", err)
        return JSONResponse({"detail": "the database is unavailable"}, status_code=503)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "not ready"}})
    def readyz(response: Response, state: ApiState = Depends(api_state), admin: bool = Depends(is_admin)) -> dict:
        """Ready when the database answers and a version is loaded. Why a version was refused: the error's
        kind for anyone, its message (which names artifact locations) with the admin token."""
        try:
            with state.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            database = True
        except sa.exc.SQLAlchemyError:
            database = False
        current = state.holder.current
        # Ready once search can answer: from day one (no version yet), full text and the pre-trained
        # encoder do; recommendations are popular items until the first version is published.
        ready = database and state.search.ready
        response.status_code = 200 if ready else 503
        refused = state.holder.refused if admin else {v: why.split(":")[0] for v, why in state.holder.refused.items()}
        return {"ready": ready, "database": database, "version": current.version if current else None,
                "search": f"version {current.version}" if current else "day one: full text and the pre-trained encoder",
                "refused": refused,
                # the share of items whose co-purchase partners it holds: until 1, some requests read them
                "partners_held": current.partners_held if current else None}

    @app.get("/metrics", tags=["health"], response_class=Response)
    def prometheus(state: ApiState = Depends(api_state)) -> Response:
        """Prometheus text format: latency histograms, serving version and its age, rows behind the watermark."""
        return Response(metrics.render(state.engine, state.holder.current), media_type="text/plain; version=0.0.4")

    for module in (ranking, events, models, erasures):
        app.include_router(module.router(settings))
    return app
