"""Recommendations, search and similar items: every answer names the version that ranked it
(``version`` null: no trained version was involved, as on day one, before the first update)."""
from __future__ import annotations

from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from pydantic import BaseModel, Field

from freshrec.config import Settings
from freshrec.features import online_users
from freshrec.ranking import inputs
from freshrec.ranking.candidates import SOURCES
from freshrec.search.pipeline import LEGS
from freshrec.serving.deps import (
    NO_NUL,
    ApiState,
    api_state,
    reads,
    reads_guard,
    ready_search,
    require_user_read,
    search_guard,
    search_service,
    snapshot_or_none,
)
from freshrec.serving.snapshot import Hit, Snapshot

Source = Literal[SOURCES + LEGS]  # type: ignore[valid-type]


class ItemOut(BaseModel):
    item_id: str
    title: str
    score: float
    sources: list[Source] = Field(default_factory=list,
                                  description="what proposed it: candidate sources (recommendations) or search legs")


class Ranked(BaseModel):
    version: int | None = Field(description="the model version that ranked the items; null when none did: day one, "
                                             "before the first `freshrec update` (search from full text and the "
                                             "pre-trained encoder, popular items for recommendations)")
    strategy: Literal["personal", "popular", "search", "personal-search", "similar"]
    items: list[ItemOut]


def _ranked(version: int | None, strategy: str, hits) -> Response:
    """The answer as JSON, serialised here, in the request's worker thread: a returned model would be
    validated again and serialised in a second hand-off to the thread pool (FastAPI does both for a
    plain ``def`` route), about a millisecond of a recommendation's event-loop time."""
    ranked = Ranked(version=version, strategy=strategy,
                    items=[ItemOut(item_id=h.item_id, title=h.title, score=h.score, sources=list(h.sources)) for h in hits])
    return Response(ranked.model_dump_json(), media_type="application/json")


def _popular(state: ApiState, snap: Snapshot | None, k: int) -> Response:
    if snap is not None:
        return _ranked(snap.version, "popular", snap.popular_hits(k))
    if not state.search.ready:
        raise HTTPException(503, "no model version is serving yet: run `freshrec update`")
    popularity = state.search.popularity(None)
    best = sorted(popularity, key=lambda i: (-popularity[i], i))[:k]
    titles = state.search.side.items
    return _ranked(None, "popular", [Hit(i, titles.titles[titles.row_of[i]], 0.0, ("popular",)) for i in best])


def router(settings: Settings) -> APIRouter:
    limits = settings.serving
    K = Query(20, ge=1, le=limits.max_k, description=f"how many items (1 to {limits.max_k})")
    api = APIRouter(prefix="/v1", tags=["ranking"], dependencies=reads_guard(settings))

    @api.get("/users/{user_id}/recommendations", response_model=Ranked, dependencies=[Depends(require_user_read)],
             responses={401: {"description": "a per-user read: the read token (outside development)"}})
    def recommendations(user_id: str = Path(max_length=200, pattern=NO_NUL), k: int = K,
                        state: ApiState = Depends(api_state), snap: Snapshot | None = Depends(snapshot_or_none)) -> Response:
        """Items for a user: candidates from their own history, the text towers, co-purchase, what they browsed
        and popularity, ordered by the version's ranker; each item names the sources that proposed it.
        Profile and per-user and per-item features come from Feast's online store, the user's rows from
        PostgreSQL. A user with no history gets the most popular items of the last 4 weeks (strategy
        `popular`), and so does everyone before the first version (`version` null)."""
        if snap is None:
            return _popular(state, None, k)
        with reads(state) as conn:
            ranked = snap.recommend(conn, online_users(state.store, [user_id]), k)[user_id]
        if ranked is None:
            return _popular(state, snap, k)
        return _ranked(snap.version, "personal", ranked)

    @api.get("/search", response_model=Ranked, dependencies=[Depends(search_guard)],
             responses={401: {"description": "with user_id, a per-user read: the read token"}})
    def search(q: str = Query(min_length=1, max_length=limits.max_text_chars, pattern=NO_NUL,
                              description=f"search text, at most {limits.max_text_chars} characters"),
               k: int = K, user_id: str | None = Query(None, max_length=200, pattern=NO_NUL,
                                                      description="re-rank with this customer's purchases"),
               state: ApiState = Depends(api_state), snap: Snapshot | None = Depends(snapshot_or_none),
               service=Depends(search_service)) -> Response:
        """Items for a search text: PostgreSQL full text (with prefixes and typo corrections) and the search
        side's query tower against the pre-trained encoder's item vectors, fused by reciprocal rank, then
        re-ranked by popularity and, with `user_id`, the customer's own purchases. Each item names the legs
        that found it. Works before any version exists (`version` null)."""
        with reads(state) as conn:
            history = None
            # A customer's purchases are read only where the configuration weighs them (the tuned weight
            # is 0 on the bundled data): an unused read of someone's history is still a read.
            if user_id is not None and service.uses_history(snap):
                log, _, _ = inputs.users_log(conn, [user_id], None, service.side.items.item_ids)
                history = {str(log.item_ids[i]): float(n) for i, n in zip(*_counts(log))}
            hits = service.search(conn, q, k, snap, history)
            out = [Hit(h.item_id, service.title(h.item_id, conn), h.score, h.legs) for h in hits]
        return _ranked(snap.version if snap else None, "personal-search" if history else "search", out)

    @api.get("/items/{item_id}/similar", response_model=Ranked, responses={404: {"description": "unknown item"}})
    def similar(item_id: str = Path(max_length=200, pattern=NO_NUL), k: int = K,
                state: ApiState = Depends(api_state), snap: Snapshot | None = Depends(snapshot_or_none)) -> Response:
        """The items nearest to this one in the version's item index (itself excluded); before the first
        version, in the pre-trained encoder's space."""
        if snap is not None:
            row = snap.row_of.get(item_id)
            if row is None:
                raise HTTPException(404, f"item {item_id!r} is not in version {snap.version}'s index")
            return _ranked(snap.version, "similar", snap.top_k(snap.item_vecs[row].copy(), k, exclude=row))
        items = ready_search(state).side.items
        row = items.row_of.get(item_id)
        if row is None:
            raise HTTPException(404, f"item {item_id!r} is not in the catalog's search index")
        cosine = items.vectors @ items.vectors[row]
        cosine[row] = -1.0
        best = cosine.argsort()[::-1][:k]
        return _ranked(None, "similar", [Hit(items.item_ids[b], items.titles[b], float(cosine[b])) for b in best])

    return api


def _counts(log):
    """(item rows, baskets with each) of a one-user event log."""
    return np.unique(log.item, return_counts=True)
