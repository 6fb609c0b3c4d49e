"""Scoring the arms on a test week: who is asked, what counts as a hit, and the two baselines.

Asked: every user who buys in the test week and has a profile from before it (their text is the
newest profile row before the week starts). Relevant: the items they buy that week. Candidates:
every item in the catalog at that time. Recall@K and NDCG@K as in freshrec.training.evaluate.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import sqlalchemy as sa
import torch

from freshrec.ingest.online_retail import day_start
from freshrec.training.dataset import catalog
from freshrec.training.evaluate import ranked_metrics, recall_ndcg
from freshrec.training.encoder import Encoder

_PROFILES_BEFORE = """
SELECT DISTINCT ON (user_id) user_id, profile_text FROM user_profiles
WHERE user_id = ANY(:ids) AND valid_from < :t ORDER BY user_id, valid_from DESC"""
_POPULAR = """
SELECT item_id FROM interactions WHERE event_time >= :t - interval '28 days' AND event_time < :t
GROUP BY item_id ORDER BY count(*) DESC, item_id LIMIT :k"""
_OWN_HISTORY = """
SELECT user_id, item_id FROM interactions WHERE user_id = ANY(:ids) AND event_time < :t
GROUP BY user_id, item_id ORDER BY user_id, count(*) DESC, max(event_time) DESC, item_id"""


@dataclass
class TestWeek:
    since: date
    users: list[str]
    texts: list[str]
    relevant: list[set]
    items: pd.DataFrame  # item_id, item_text: the candidates


def test_week(engine, week_rows: pd.DataFrame, since: date, max_users: int) -> TestWeek:
    bought = week_rows.groupby("user_id")["item_id"].agg(set)
    with engine.connect() as conn:
        profiles = conn.execute(sa.text(_PROFILES_BEFORE), {"ids": list(bought.index), "t": day_start(since)}).all()
    if len(profiles) > max_users:  # evenly spaced over user ids: deterministic
        profiles = [profiles[i] for i in np.linspace(0, len(profiles) - 1, max_users).astype(int)]
    users = [p.user_id for p in profiles]
    return TestWeek(since, users, [p.profile_text for p in profiles], [bought[u] for u in users], catalog(engine))


def pooled_states(model, tokenizer, device, week: TestWeek, max_user_tokens: int = 128,
                  max_item_tokens: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's pooled states of the week's users and candidates. Arms that share a frozen
    encoder (every arm of the head strategy) share these, and differ only in their projections."""
    model.to(device).eval()
    enc = Encoder(model, tokenizer, device)
    return enc.pooled_all(week.texts, max_user_tokens), enc.pooled_all(week.items["item_text"].tolist(), max_item_tokens)


@torch.no_grad()
def model_scores(model, tokenizer, device, week: TestWeek, k: int, pooled=None) -> tuple[float, float]:
    users, items = pooled if pooled is not None else pooled_states(model, tokenizer, device, week)
    model.to(device).eval()
    u, v = model.project_users(users).cpu().numpy(), model.project_items(items).cpu().numpy()
    return recall_ndcg(u @ v.T, week.items["item_id"].to_numpy(), week.relevant, k)


def popularity(engine, week: TestWeek, k: int) -> tuple[float, float]:
    """The same k most-bought items of the last 4 weeks for everyone."""
    with engine.connect() as conn:
        top = [r[0] for r in conn.execute(sa.text(_POPULAR), {"t": day_start(week.since), "k": k})]
    return ranked_metrics([top] * len(week.users), week.relevant, k)


def personal_frequency(engine, week: TestWeek, k: int) -> tuple[float, float]:
    """Each user's own most-bought items (ties: most recent), filled up with the popular ones."""
    with engine.connect() as conn:
        own = conn.execute(sa.text(_OWN_HISTORY), {"ids": week.users, "t": day_start(week.since)}).all()
        top = [r[0] for r in conn.execute(sa.text(_POPULAR), {"t": day_start(week.since), "k": k})]
    history: dict[str, list[str]] = {}
    for row in own:
        history.setdefault(row.user_id, []).append(row.item_id)
    ranked = []
    for user in week.users:
        mine = history.get(user, [])[:k]
        ranked.append(mine + [i for i in top if i not in set(mine)][: k - len(mine)])
    return ranked_metrics(ranked, week.relevant, k)
