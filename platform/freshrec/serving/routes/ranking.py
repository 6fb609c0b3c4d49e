"""Recommendations, search and similar items: every answer names the version that ranked it."""
from __future__ import annotations

from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field

from freshrec.config import Settings
from freshrec.features import online_users
from freshrec.ranking.candidates import SOURCES
from freshrec.serving.deps import NO_NUL, ApiState, api_state, reads_guard, require_user_read, search_guard, snapshot
from freshrec.serving.snapshot import Snapshot

QUERY_WEIGHT = 0.7  # personalised search: 70% the query, 30% the user's profile
Source = Literal[SOURCES]  # type: ignore[valid-type]


class ItemOut(BaseModel):
    item_id: str
    title: str
    score: float
    sources: list[Source] = Field(default_factory=list,
                                  description="the candidate sources that proposed it (recommendations only)")


class Ranked(BaseModel):
    version: int
    strategy: Literal["personal", "popular", "search", "personal-search", "similar"]
    items: list[ItemOut]


def _user(state: ApiState, snap: Snapshot, user_id: str) -> np.ndarray | None:
    """The user's tower output, from the Feast online profile; None for a user with no history."""
    row = online_users(state.store, [user_id])[user_id]
    return snap.user_vectors([row["user_text"]])[0] if row["user_text"] else None


def _ranked(snap: Snapshot, strategy: str, hits) -> Ranked:
    return Ranked(version=snap.version, strategy=strategy,
                  items=[ItemOut(item_id=h.item_id, title=h.title, score=h.score, sources=list(h.sources)) for h in hits])


def router(settings: Settings) -> APIRouter:
    limits = settings.serving
    K = Query(20, ge=1, le=limits.max_k, description=f"how many items (1 to {limits.max_k})")
    api = APIRouter(prefix="/v1", tags=["ranking"], dependencies=reads_guard(settings))

    @api.get("/users/{user_id}/recommendations", response_model=Ranked, dependencies=[Depends(require_user_read)],
             responses={401: {"description": "a per-user read: the read token (outside development)"}})
    def recommendations(user_id: str = Path(max_length=200, pattern=NO_NUL), k: int = K,
                        state: ApiState = Depends(api_state), snap: Snapshot = Depends(snapshot)) -> Ranked:
        """Items for a user: candidates from their own history, the text towers, co-purchase and popularity,
        ordered by the version's ranker; each item names the sources that proposed it. Profile and
        per-user and per-item features come from Feast's online store, the user's rows from PostgreSQL.
        A user with no history gets the most popular items of the last 4 weeks (strategy `popular`)."""
        with state.engine.connect() as conn:
            ranked = snap.recommend(conn, online_users(state.store, [user_id]), k)[user_id]
        if ranked is None:
            return _ranked(snap, "popular", snap.popular_hits(k))
        return _ranked(snap, "personal", ranked)

    @api.get("/search", response_model=Ranked, dependencies=[Depends(search_guard)],
             responses={401: {"description": "with user_id, a per-user read: the read token"}})
    def search(q: str = Query(min_length=1, max_length=limits.max_text_chars, pattern=NO_NUL,
                              description=f"search text, at most {limits.max_text_chars} characters"),
               k: int = K, user_id: str | None = Query(None, max_length=200, pattern=NO_NUL,
                                                      description="personalise for this user"),
               state: ApiState = Depends(api_state), snap: Snapshot = Depends(snapshot)) -> Ranked:
        """Text search through the user tower; with `user_id`, blended 70/30 with the user's profile."""
        vec = snap.embed([q])[0]
        user_vec = _user(state, snap, user_id) if user_id else None
        if user_vec is None:
            return _ranked(snap, "search", snap.top_k(vec, k))
        blend = QUERY_WEIGHT * vec + (1 - QUERY_WEIGHT) * user_vec
        return _ranked(snap, "personal-search", snap.top_k(blend / np.linalg.norm(blend), k))

    @api.get("/items/{item_id}/similar", response_model=Ranked, responses={404: {"description": "unknown item"}})
    def similar(item_id: str = Path(max_length=200, pattern=NO_NUL), k: int = K,
                snap: Snapshot = Depends(snapshot)) -> Ranked:
        """The items nearest to this one in the version's item index (itself excluded)."""
        row = snap.row_of.get(item_id)
        if row is None:
            raise HTTPException(404, f"item {item_id!r} is not in version {snap.version}'s index")
        return _ranked(snap, "similar", snap.top_k(snap.item_vecs[row].copy(), k, exclude=row))

    return api
