"""Search as its own pipeline, over HTTP against a live `freshrec serve` and the pre-trained MiniLM:
it works on day one (a catalog, no interactions, no version), finds known items by their words, with
a typo and as the customer types, and finds an item the moment it is committed."""
from pathlib import Path

import httpx
import pandas as pd
import pytest

from freshrec.ingest import BUNDLED_ONLINE_RETAIL, items_batch, write_batch
from freshrec.ingest.online_retail import read_purchases

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def catalog(module_db, tmp_path_factory) -> Path:
    """The bundled shop's catalog, as a user's items file: titles only, no interactions at all."""
    from freshrec.db import get_engine
    from freshrec.ingest.online_retail import _items

    purchases, _ = read_purchases(BUNDLED_ONLINE_RETAIL)
    path = tmp_path_factory.mktemp("catalog") / "items.csv"
    _items(purchases)[["item_id", "title"]].to_csv(path, index=False)
    with get_engine().begin() as conn:
        write_batch(conn, items_batch(path), str(path))
    return path


@pytest.fixture(scope="module")
def api(catalog, module_db):
    from conftest import api_server

    env = {"FRESHREC_DATABASE_URL": module_db}
    with api_server(env, ready="/readyz") as url:
        yield url


def _search(url: str, q: str, k: int = 10) -> dict:
    r = httpx.get(f"{url}/v1/search", params={"q": q, "k": k}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_search_answers_on_day_one_with_no_interactions_and_no_version(api):
    ready = httpx.get(f"{api}/readyz", timeout=30).json()
    assert ready["ready"] is True and ready["version"] is None and ready["search"].startswith("day one")
    body = _search(api, "red alarm clock")
    assert body["version"] is None and body["strategy"] == "search"
    assert body["items"] and all(set(i["sources"]) <= {"lexical", "dense"} for i in body["items"])
    # Recommendations before any version: popular items, and the response says no version ranked them.
    recs = httpx.get(f"{api}/v1/users/anyone/recommendations", params={"k": 3}, timeout=30).json()
    assert recs["version"] is None and recs["strategy"] == "popular"


@pytest.mark.parametrize("query, title", [
    ("red alarm clock", "ALARM CLOCK BAKELIKE RED"),
    ("childrens cutlery", "CHILDRENS CUTLERY RETROSPOT RED"),
    ("alram clock bakelike red", "ALARM CLOCK BAKELIKE RED"),  # a typo
    ("cutlery retrospot chil", "CHILDRENS CUTLERY RETROSPOT RED"),  # as the customer types
])
def test_known_items_are_found_by_their_words(api, query, title):
    items = _search(api, query, k=5)["items"]
    titles = [i["title"] for i in items]
    assert title in titles[:3], (query, titles)
    if "alram" not in query:
        assert titles[0] == title or "CUTLERY" in titles[0], (query, titles)


def test_an_item_is_searchable_the_moment_it_is_committed(api, module_db, tmp_path):
    from freshrec.db import get_engine

    new = tmp_path / "new.csv"
    pd.DataFrame([{"item_id": "new-1", "title": "ZEBRA STRIPED UMBRELLA STAND"}]).to_csv(new, index=False)
    with get_engine().begin() as conn:
        write_batch(conn, items_batch(new), str(new))
    items = _search(api, "zebra umbrella", k=3)["items"]  # no update, no restart
    assert items[0]["item_id"] == "new-1" and items[0]["title"] == "ZEBRA STRIPED UMBRELLA STAND"


def test_the_dense_leg_ranks_the_same_a_block_of_queries_at_a_time(monkeypatch):
    """Queries are scored against the items a block at a time (bounded memory on a big catalog): the
    nearest items and their order are those of scoring every query against every item at once."""
    import numpy as np

    from freshrec.search import pipeline as search_pipeline
    from freshrec.search.index import ItemVectors, normalised

    rng = np.random.default_rng(7)
    items = ItemVectors(np.array([f"I{n}" for n in range(500)], dtype=object), [""] * 500,
                        normalised(rng.normal(size=(500, 16))).astype(np.float32))
    queries = normalised(rng.normal(size=(37, 16))).astype(np.float32)
    dense = search_pipeline.SearchPipeline(items, None, None, search_pipeline.SearchConfig(), None)
    monkeypatch.setattr(search_pipeline, "DENSE_BLOCK_CELLS", 500 * 5)  # blocks of 5 queries, the last of 2
    blocked = dense.dense(queries)
    exact = np.argsort(-(queries @ items.vectors.T), axis=1, kind="stable")[:, : dense.config.depth]
    assert blocked == [items.item_ids[row].tolist() for row in exact]


def test_the_query_adapters_loss_is_the_same_a_block_of_queries_at_a_time(monkeypatch):
    """The held-out loss that picks the adapter's epoch, and the training loss's gradients, are those
    of one matrix over every query, computed a block of queries at a time (bounded memory)."""
    import torch

    from freshrec.models.query_adapter import QueryAdapter
    from freshrec.training import search as search_training

    torch.manual_seed(0)
    items = torch.nn.functional.normalize(torch.randn(300, 16), dim=1)
    queries, targets = torch.randn(101, 16), torch.randint(0, 300, (101,))
    negatives = torch.randint(0, 300, (40,))
    adapter = QueryAdapter(16)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.1 * torch.randn_like(p))

    def loss_and_grads():
        adapter.zero_grad()
        loss = search_training._loss(adapter, queries, targets, items, negatives, 0.05)
        loss.backward()
        return float(loss), [p.grad.clone() for p in adapter.parameters()]

    whole, whole_grads = loss_and_grads()
    columns, label = torch.unique(torch.cat([targets, negatives]), return_inverse=True)
    with torch.no_grad():  # the definition: cross-entropy over the targets and the sampled negatives
        direct = torch.nn.functional.cross_entropy(adapter(queries) @ items[columns].T / 0.05, label[:101])
    assert abs(whole - float(direct)) < 1e-5 * whole
    monkeypatch.setattr(search_training, "LOGITS_PER_BLOCK", 300 * 7)  # blocks of a few queries
    blocked, blocked_grads = loss_and_grads()
    assert whole > 0 and abs(blocked - whole) < 1e-5 * whole
    for a, b in zip(whole_grads, blocked_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
