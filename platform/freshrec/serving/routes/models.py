"""Versions and lineage (reads), promote and rollback (token)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path
from pydantic import BaseModel, Field

from freshrec.config import Settings
from freshrec.registry import UnknownVersion, VersionError, chain, list_versions, promote, rollback
from freshrec.serving.deps import ApiState, api_state, is_admin, reads_guard, require_token


# Versions are PostgreSQL integers: a larger number is a 422, not a database error.
VERSION = Path(ge=1, le=2**31 - 1, description="a model version number")


class PointerMove(BaseModel):
    reason: str = Field("api", max_length=500, pattern=r"^[^\x00]*$", description="recorded in deployments")


class Pointer(BaseModel):
    current: int
    serving: int | None = Field(description="the version this process answers with; it follows within a second")


ADMIN_ONLY = ("artifact_uri",)  # where the weights live: storage layout is for operators, not readers


def _public(row: dict[str, Any], admin: bool) -> dict[str, Any]:
    """A version row as this caller may see it: storage locations and local paths for admins only."""
    if admin:
        return row
    out = {k: v for k, v in row.items() if k not in ADMIN_ONLY}
    if out.get("base_model"):
        out["base_model"] = str(out["base_model"]).rstrip("/").rsplit("/", 1)[-1]
    return out


def _chain(state: ApiState, version: int, admin: bool) -> list[dict[str, Any]]:
    try:
        with state.engine.connect() as conn:
            return [_public(r, admin) for r in chain(conn, version)]
    except UnknownVersion as err:
        raise HTTPException(404, str(err)) from None


def _moved(state: ApiState, move) -> Pointer:
    try:
        current = move()
    except UnknownVersion as err:
        raise HTTPException(404, str(err)) from None
    except VersionError as err:
        raise HTTPException(409, str(err)) from None
    state.holder.sync()  # this process swaps now; the others on the NOTIFY
    serving = state.holder.current
    return Pointer(current=current, serving=serving.version if serving else None)


def router(settings: Settings) -> APIRouter:
    api = APIRouter(prefix="/v1/models", tags=["models"])
    reads = reads_guard(settings)

    @api.get("", dependencies=reads)
    def versions(state: ApiState = Depends(api_state)) -> list[dict[str, Any]]:
        """Every version: parent, status, strategy, watermark range and row count, and which is current."""
        with state.engine.connect() as conn:
            return list_versions(conn)

    @api.get("/{version}", dependencies=reads, responses={404: {"description": "unknown version"}})
    def version_detail(version: int = VERSION, state: ApiState = Depends(api_state),
                       admin: bool = Depends(is_admin)) -> dict[str, Any]:
        """One version: metrics (the gate's four scores), parameters, sha256, watermark; with the token, its
        artifact location too."""
        return _chain(state, version, admin)[-1]

    @api.get("/{version}/lineage", dependencies=reads, responses={404: {"description": "unknown version"}})
    def lineage(version: int = VERSION, state: ApiState = Depends(api_state),
                admin: bool = Depends(is_admin)) -> dict[str, Any]:
        """The parent chain, oldest first: what `freshrec lineage VERSION --json` prints (artifact locations
        with the token only)."""
        rows = _chain(state, version, admin)
        return {"version": version, "parent": rows[-1]["parent"], "chain": rows}

    @api.post("/{version}/promote", response_model=Pointer, dependencies=[Depends(require_token)],
              responses={401: {"description": "token"}, 404: {"description": "unknown"}, 409: {"description": "already current"}})
    def promote_version(version: int = VERSION, body: PointerMove | None = Body(None),
                        state: ApiState = Depends(api_state)) -> Pointer:
        """Make VERSION current; every API process swaps to it without a restart."""
        reason = body.reason if body else "api"

        def move() -> int:
            promote(state.engine, version, actor="api", reason=reason)
            return version

        return _moved(state, move)

    @api.post("/rollback", response_model=Pointer, dependencies=[Depends(require_token)],
              responses={401: {"description": "token"}, 409: {"description": "nothing to roll back to"}})
    def rollback_version(body: PointerMove | None = Body(None), state: ApiState = Depends(api_state)) -> Pointer:
        """Undo the newest promotion still in effect (one step back through the history per call)."""
        reason = body.reason if body else "api"
        return _moved(state, lambda: rollback(state.engine, actor="api", reason=reason))

    return api
