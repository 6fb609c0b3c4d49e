"""POST /v1/events: live interactions, validated like a file load, all-or-nothing, idempotent on event_key.

(No `from __future__ import annotations` here: FastAPI must see the EventBatch class the router builds.)
"""

import logging
from datetime import datetime, timedelta
from typing import Literal

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field, create_model

from freshrec.config import Settings
from freshrec.db.models import EVENT_TYPES
from freshrec.features import push_user_profiles
from freshrec.ingest import InputError, interactions_frame_batch, write_batch
from freshrec.serving.deps import ApiState, api_state, require_token

TEXT = r"^[^\x00]+$"
log = logging.getLogger("freshrec.serving")


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_key: str = Field(min_length=1, max_length=200, pattern=TEXT, description="idempotency key")
    user_id: str = Field(min_length=1, max_length=200, pattern=TEXT)
    item_id: str = Field(min_length=1, max_length=200, pattern=TEXT, description="must be in the catalog")
    event_type: Literal[EVENT_TYPES]  # type: ignore[valid-type]
    event_time: datetime = Field(description="ISO 8601; without an offset it is read as UTC")
    quantity: int | None = Field(None, ge=1, le=1_000_000)
    query: str | None = Field(None, max_length=512, pattern=r"^[^\x00]*$")


class Accepted(BaseModel):
    accepted: int = Field(description="new events written")
    duplicates: int = Field(description="events whose event_key was already stored (ignored)")
    tombstoned: int = Field(0, description="events of an erased customer (their event_key is tombstoned): skipped")
    profiles_pushed: int = Field(description="user profiles written to the Feast online store (every user of the "
                                             "batch, duplicates included: a retry repairs a push that failed)")


def _unprocessable(err: InputError) -> HTTPException:
    loc = ["body", "events", err.row - 1, err.column] if err.row else ["body", "events", err.column]
    return HTTPException(422, [{"loc": loc, "msg": err.reason, "type": "value_error"}])


def router(settings: Settings) -> APIRouter:
    max_batch = settings.serving.max_batch
    EventBatch = create_model(  # noqa: N806 - a model class, sized by the settings
        "EventBatch", __config__=ConfigDict(extra="forbid"),
        events=(list[Event], Field(min_length=1, max_length=max_batch, description=f"1 to {max_batch} events")),
    )
    api = APIRouter(prefix="/v1", tags=["events"])

    max_future = timedelta(seconds=settings.ingest.max_future_seconds)

    @api.post("/events", response_model=Accepted, dependencies=[Depends(require_token)],
              responses={401: {"description": "missing or wrong token"},
                         503: {"description": "the rows are stored but the online profiles are not: retry the same batch"}})
    def post_events(batch: EventBatch, state: ApiState = Depends(api_state)) -> Accepted:  # type: ignore[valid-type]
        """Write a batch of interactions. A bad row rejects the whole batch (422 names its index and field);
        a repeated event_key counts as a duplicate. Users' profiles reach the online store once the rows commit;
        if that push fails the answer is a 503 saying the rows are stored, and the same batch retried (all
        duplicates then) pushes the profiles again."""
        frame = pd.DataFrame([e.model_dump() for e in batch.events])
        try:
            parsed = interactions_frame_batch(frame, "events", max_future)
            with state.engine.begin() as conn:
                summary = write_batch(conn, parsed, "POST /v1/events", state.settings.feast.profile_length)
        except InputError as err:
            raise _unprocessable(err) from None
        try:
            with state.engine.connect() as conn:
                pushed = push_user_profiles(state.store, conn, sorted(set(frame["user_id"])))
        except Exception as err:  # noqa: BLE001 - any failure here: the client must learn the rows are in
            log.error("events stored but the online profile push failed: %s", err)
            raise HTTPException(503, {"msg": "the events are stored, but the users' online profiles are not yet: "
                                             "send the same batch again to complete it",
                                      "accepted": summary.interactions_inserted,
                                      "duplicates": summary.interactions_duplicate}) from None
        return Accepted(accepted=summary.interactions_inserted, duplicates=summary.interactions_duplicate,
                        tombstoned=summary.rows_tombstoned, profiles_pushed=pushed)

    return api
