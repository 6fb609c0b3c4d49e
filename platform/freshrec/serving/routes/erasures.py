"""Erasure (admin token): forget a customer, follow the request, ask which versions saw someone.

``DELETE /v1/users/{id}`` erases the data in one transaction and answers 202 with the erasure's
id: the versions that learned from the customer are replayed by the watcher (``freshrec update
--watch``) once the batching deadline passes, or by ``freshrec erasures --run``. An API process
never trains.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field

from freshrec.config import Settings
from freshrec.serving.deps import NO_NUL, ApiState, api_state, require_token

ADMIN = [Depends(require_token)]
USER_ID = Path(max_length=200, pattern=NO_NUL, description="a customer id")
ERASURE_ID = Path(ge=1, le=2**63 - 1, description="an erasure id")


class ErasureRequested(BaseModel):
    erasure_id: int
    state: str = Field(description="pending: the data is gone; the versions that saw it serve until the replay")
    users: int
    rows: int = Field(description="interactions erased")
    versions: list[int] = Field(description="live versions that learned from the rows (replayed at the deadline)")
    deadline: datetime = Field(description="requests until then share one replay")
    serving: int | None = Field(description="the version serving now")
    message: str


def router(settings: Settings) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["erasure"])

    @api.delete("/users/{user_id}", status_code=202, response_model=ErasureRequested, dependencies=ADMIN,
                responses={401: {"description": "token"}, 404: {"description": "unknown or already erased"},
                           409: {"description": "their new rows committed meanwhile: nothing erased, ask again"}})
    def forget_user(user_id: str = USER_ID, now: bool = Query(False, description="serve the newest version that never "
                                                                                 "saw them at once"),
                    state: ApiState = Depends(api_state)) -> ErasureRequested:
        """Erase a customer: rows, profile and aggregates now (tombstoned against reloads), their online
        profile now; the models that learned from them at the replay."""
        from freshrec.erasure import ErasureConflict, ErasureError, forget

        try:
            request = forget(state.engine, state.settings, [user_id], now=now, requested_by="api", store=state.store)
        except ErasureConflict as err:
            raise HTTPException(409, str(err)) from None
        except ErasureError as err:  # unknown, or already erased (then its online rows are deleted again)
            raise HTTPException(404, str(err)) from None
        state.holder.sync()  # with now=true this process swaps at once; the others on the NOTIFY
        return ErasureRequested(erasure_id=request.erasure_id, state="pending", users=request.users, rows=request.rows,
                                versions=request.versions, deadline=request.deadline, serving=request.serving,
                                message=request.message)

    @api.get("/erasures", dependencies=ADMIN, responses={401: {"description": "token"}})
    def erasures(state: ApiState = Depends(api_state)) -> list[dict[str, Any]]:
        """Every erasure request: state (pending, replaying, done, failed), the version serving, the replay."""
        from freshrec.erasure import erasure_rows

        with state.engine.connect() as conn:
            return erasure_rows(conn)

    @api.get("/erasures/{erasure_id}", dependencies=ADMIN,
             responses={401: {"description": "token"}, 404: {"description": "unknown erasure"}})
    def erasure(erasure_id: int = ERASURE_ID, state: ApiState = Depends(api_state)) -> dict[str, Any]:
        """One erasure, with ``proof``: the live versions still holding its rows (empty once it is done)."""
        from freshrec.erasure import erasure_rows, proof_rows

        with state.engine.connect() as conn:
            rows = erasure_rows(conn, erasure_id)
            if not rows:
                raise HTTPException(404, f"erasure_id: no erasure {erasure_id}")
            return {**rows[0], "proof": proof_rows(conn, [erasure_id])}

    @api.get("/users/{user_id}/versions", dependencies=ADMIN, responses={401: {"description": "token"}})
    def versions_that_saw(user_id: str = USER_ID, state: ApiState = Depends(api_state)) -> dict[str, Any]:
        """The live versions that learned from this customer's rows: `freshrec lineage --user`."""
        from freshrec.erasure import versions_that_saw as saw

        with state.engine.connect() as conn:
            return {"user_id": user_id, "versions": saw(conn, user_id)}

    return api
