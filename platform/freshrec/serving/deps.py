"""What every route needs: the serving snapshot, the engine, the Feast store, and the token check."""
from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Depends, Header, HTTPException, Request
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
    store: object = None  # feast.FeatureStore, opened in the lifespan (importing feast takes seconds)


def api_state(request: Request) -> ApiState:
    return request.app.state.api


def snapshot(state: ApiState = Depends(api_state)) -> Snapshot:
    """The serving snapshot, read once: the whole request uses this one version."""
    current = state.holder.current
    if current is None:
        raise HTTPException(503, "no model version is serving yet: run `freshrec update`")
    return current


def _token_matches(authorization: str | None, state: ApiState) -> bool:
    expected = f"Bearer {state.settings.api_token.get_secret_value()}".encode()
    given = (authorization or "").encode("utf-8", "surrogateescape")
    # compare_digest takes the same time wherever the first differing byte is.
    return hmac.compare_digest(given, expected)


def require_token(authorization: str | None = Header(None, description="Bearer <FRESHREC_API_TOKEN>"),
                  state: ApiState = Depends(api_state)) -> None:
    if not _token_matches(authorization, state):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


def is_admin(authorization: str | None = Header(None, description="Bearer <FRESHREC_API_TOKEN>: shows admin-only fields"),
             state: ApiState = Depends(api_state)) -> bool:
    """Whether the request carries the token (reads stay open; some fields are for admins only)."""
    return _token_matches(authorization, state)


def reads_guard(settings: Settings) -> list:
    """Reads need the token only when FRESHREC_SERVING__REQUIRE_TOKEN_FOR_READS is set."""
    return [Depends(require_token)] if settings.serving.require_token_for_reads else []
