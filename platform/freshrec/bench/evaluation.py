"""Scoring the arms on a test week: who is asked, what counts as a hit, and what each arm answers.

Asked: every user who buys in the test week and has history before it (at most ``max_users``,
evenly spaced over user ids). Relevant: the items they buy that week, split into repeat (had
before) and explore (new to them). Every arm ranks as of the same clock, the API's serving clock
(the end of the newest loaded day), from the same loaded rows; the pipeline arms go through the
API's own ``Snapshot.recommend``.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone

import numpy as np
import pandas as pd

from freshrec.bench import baselines
from freshrec.ranking.baselines import p_topfreq, popularity
from freshrec.bench.metrics import user_metrics
from freshrec.features import online_users
from freshrec.ranking.candidates import DayState, Tower, explore_rankings
from freshrec.ranking.events import EventLog
from freshrec.ranking.inputs import users_log
from freshrec.serving.snapshot import Snapshot

K = 20


@dataclass
class TestWeek:
    since: date
    clock: float  # epoch seconds
    users: list[str]
    truth: list[set[str]]
    history: list[set[str]]
    features: dict[str, dict]  # Feast's online row per user
    log: EventLog  # the asked users' rows before the clock
    user_rows: np.ndarray

    @property
    def when(self) -> datetime:
        """The clock as a moment (every arm ranks as of it)."""
        return datetime.fromtimestamp(self.clock, timezone.utc)


def test_week(engine, store, week_rows: pd.DataFrame, since: date, max_users: int, item_ids: np.ndarray) -> TestWeek:
    bought = week_rows.groupby("user_id")["item_id"].agg(set)
    with engine.connect() as conn:
        log, _, clock = users_log(conn, list(bought.index), None, item_ids)
    known = set(log.users)
    users = [u for u in bought.index if u in known]
    if len(users) > max_users:  # evenly spaced over user ids: deterministic
        users = [users[i] for i in np.linspace(0, len(users) - 1, max_users).astype(int)]
    rows = log.user_rows(users)
    history = [set(item_ids[log.item[log.start[r] : log.start[r + 1]]].tolist()) for r in rows]
    features = online_users(store, users)
    return TestWeek(since, clock.timestamp(), users, [set(bought[u]) for u in users], history, features, log, rows)


def metric_rows(week: TestWeek, arm: str, ranked: list, item_ids: np.ndarray | None = None) -> list[dict]:
    """One row per user: the six metrics of that arm's top K (item rows are mapped to ids).

    For a pipeline ranked in full (more than K items: every candidate), also how many candidates
    it had and the share of the user's week they held (``coverage``, candidate recall).
    """
    out = []
    for user, items, truth, history in zip(week.users, ranked, week.truth, week.history):
        ids = [str(i) for i in (item_ids[np.asarray(items, int)] if item_ids is not None else items)]
        row = {"arm": arm, "user": user, **user_metrics(ids[:K], truth, history, K)}
        if len(ids) > K:
            row.update(candidates=len(ids), coverage=len(truth & set(ids)) / len(truth))
        out.append(row)
    return out


def pipeline_ranked(snap: Snapshot, engine, week: TestWeek, k: int = K) -> list[list[str]]:
    """What the API answers each user (``Snapshot.recommend``: candidates -> features -> ranker), top k."""
    with engine.connect() as conn:
        answers = snap.recommend(conn, {u: week.features[u] for u in week.users}, k, clock=week.when)
    return [[h.item_id for h in answers[u] or []] for u in week.users]


def _user_vecs(snap: Snapshot, week: TestWeek) -> np.ndarray:
    return snap.user_vectors([week.features[u]["user_text"] for u in week.users])


def tower_ranked(snap: Snapshot, week: TestWeek) -> list[list[str]]:
    """The text towers alone, over the whole catalog."""
    return [[h.item_id for h in snap.top_k(v, K)] for v in _user_vecs(snap, week)]


def baseline_ranked(week: TestWeek, day: DayState, tifu: baselines.TifuKnn, everyone: EventLog) -> dict[str, list]:
    """Item rows per user of popularity, P-TopFreq and TIFU-KNN (neighbours from ``everyone``)."""
    times = np.full(len(week.users), week.clock)
    return {
        "popularity": popularity(day, len(week.users), K),
        "p-topfreq": p_topfreq(week.log, week.user_rows, week.clock, day, K),
        "tifu-knn": tifu.rank(everyone, everyone.user_rows(week.users), week.clock, K),
        **{f"{'popularity' if name == 'popular' else name}-explore": ranked for name, ranked in
           explore_rankings(week.log, week.user_rows, times, day, None, K).items()},
    }


def tower_explore_ranked(snap: Snapshot, week: TestWeek) -> list:
    """The towers' top K among items new to the user (item rows)."""
    index = snap.ranking.index
    tower = Tower(_user_vecs(snap, week), index.item_vecs, index.scale, index.bias)
    return explore_rankings(week.log, week.user_rows, np.full(len(week.users), week.clock), snap.day_state(week.when), tower,
                            K)["tower"]
