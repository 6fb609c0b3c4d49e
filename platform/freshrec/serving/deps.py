"""What every route needs: the serving snapshot, the engine, the Feast store, and the token check.

Each dependency is ``async``: none waits on anything, and FastAPI runs a plain ``def`` dependency in
its thread pool, a hand-off each (four per recommendation) that a request paid for in latency."""
from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Depends, Header, HTTPException, Query, Request
from sqlalchemy.engine import Engine

from freshrec.config import Settings
from freshrec.serving.metrics import ApiMetrics
from freshrec.serving.snapshot import Snapshot
from freshrec.serving.watcher import SnapshotHolder

# Text reaching PostgreSQL may not hold NUL; everything else is fine.
NO_NUL = r"^[^\x00]+$"


@dataclass
class ApiState:
    settings: Settings
    engine: Engine
    holder: SnapshotHolder
    metrics: ApiMetrics
    search: object = None  # serving.search.SearchService: day one's search, and every version's
    store: object = None  # feast.FeatureStore, opened in the lifespan (importing feast takes seconds)


async def api_state(request: Request) -> ApiState:
    return request.app.state.api


async def snapshot(state: ApiState = Depends(api_state)) -> Snapshot:
    """The serving snapshot, read once: the whole request uses this one version."""
    current = state.holder.current
    if current is None:
        raise HTTPException(503, "no model version is serving yet: run `freshrec update`")
    return current


async def snapshot_or_none(state: ApiState = Depends(api_state)) -> Snapshot | None:
    """The serving snapshot, or None on day one (no version yet): search still answers."""
    return state.holder.current


def reads(state: ApiState):
    """A connection for a request's reads, each a statement of its own: in autocommit, no BEGIN goes
    before them and no ROLLBACK follows when the connection returns to the pool (two round trips of
    the four a one-query request made)."""
    return state.engine.connect().execution_options(isolation_level="AUTOCOMMIT")


def ready_search(state: ApiState):
    """The search service once its item vectors are loaded (503 before)."""
    if not state.search.ready:
        raise HTTPException(503, "search is starting: the item vectors are not loaded yet")
    return state.search


async def search_service(state: ApiState = Depends(api_state)):
    return ready_search(state)


def _matches(authorization: str | None, secret) -> bool:
    if secret is None:
        return False
    expected = f"Bearer {secret.get_secret_value()}".encode()
    given = (authorization or "").encode("utf-8", "surrogateescape")
    # compare_digest takes the same time wherever the first differing byte is.
    return hmac.compare_digest(given, expected)


def _token_matches(authorization: str | None, state: ApiState) -> bool:
    """The admin token."""
    return _matches(authorization, state.settings.api_token)


def _read_token_matches(authorization: str | None, state: ApiState) -> bool:
    """The read token, or the admin token (which may do everything)."""
    return _matches(authorization, state.settings.api_read_token) or _token_matches(authorization, state)


def _unauthorized(what: str) -> HTTPException:
    return HTTPException(401, f"missing or wrong bearer token ({what})", headers={"WWW-Authenticate": "Bearer"})


async def require_token(authorization: str | None = Header(None, description="Bearer <FRESHREC_API_TOKEN>"),
                        state: ApiState = Depends(api_state)) -> None:
    if not _token_matches(authorization, state):
        raise _unauthorized("the admin token")


async def require_read_token(authorization: str | None = Header(None, description="Bearer <FRESHREC_API_READ_TOKEN>"),
                             state: ApiState = Depends(api_state)) -> None:
    if not _read_token_matches(authorization, state):
        raise _unauthorized("the read token")


async def require_user_read(authorization: str | None = Header(None, description="Bearer <FRESHREC_API_READ_TOKEN>"),
                            state: ApiState = Depends(api_state)) -> None:
    """A read of one customer's data: their recommendations reveal their purchases."""
    if state.settings.per_user_reads_need_token and not _read_token_matches(authorization, state):
        raise _unauthorized("a per-user read needs the read token")


async def is_admin(authorization: str | None = Header(None, description="Bearer <FRESHREC_API_TOKEN>: shows admin-only fields"),
                   state: ApiState = Depends(api_state)) -> bool:
    """Whether the request carries the token (reads stay open; some fields are for admins only)."""
    return _token_matches(authorization, state)


async def search_guard(user_id: str | None = Query(None), authorization: str | None = Header(None),
                       state: ApiState = Depends(api_state)) -> None:
    """A search personalised with ``user_id`` reads that customer's profile; a catalog search may be open."""
    if user_id is not None:
        await require_user_read(authorization, state)
    elif not state.settings.serving.open_catalog_search:
        await require_read_token(authorization, state)


def reads_guard(settings: Settings) -> list:
    """Catalog-level reads need a token only when FRESHREC_SERVING__REQUIRE_TOKEN_FOR_READS is set."""
    return [Depends(require_read_token)] if settings.serving.require_token_for_reads else []
