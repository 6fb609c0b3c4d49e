"""Known-item queries on the shop's own catalog: can search find the item a customer has in mind?

For a fixed share of the catalog's items, queries of each kind (``ingest.synthetic_queries``): three
title words shuffled, two swapped, three with one typo, and the head noun only. What counts as found:
- for word queries, the item, and any item with the very same title;
- for a head noun ("alarm clock"), every item whose title holds the phrase: NDCG@10 is its measure.

The set is **fixed**: an item belongs to it by a hash of its id (so a growing catalog adds members
and never swaps them), its queries are written once to ``known_item_queries`` and never change, and
the updater drops any query event whose (query, item) pair is one of them
(``training_exclusions``): they never train. The gate judges forgetting on part of the set, the
benchmark on all of it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa

from freshrec.ingest.synthetic_queries import VARIANTS, TitleWords, make_query
from freshrec.words import words

SEED = 20_111_201
MEMBER_SHARE = 0.4  # of the items with three or more words: about 1,000 by the bundled data's week 14


@dataclass
class KnownItems:
    queries: pd.DataFrame  # query, variant, item_id, relevant (frozenset of item ids)

    def __len__(self) -> int:
        return len(self.queries)

    def head(self, n_items: int) -> KnownItems:
        """The queries of the set's first ``n_items`` items (the gate's part of the set)."""
        keep = self.queries["item_id"].isin(self.queries["item_id"].drop_duplicates().head(n_items))
        return KnownItems(self.queries[keep].reset_index(drop=True))


def _phrase_holders(spaced: pd.Series, holders_of: dict[str, set], phrase: str) -> frozenset:
    """Items whose title (as " word word ... ") holds the phrase's words in a row.

    Only the titles that hold every word of the phrase are searched (``holders_of``: word -> items),
    so the set's cost follows its members times their head words' items, not members times the
    catalog (at 10x the bundled shop the scan of every title per member took 47 s).
    """
    candidates = set.intersection(*(holders_of.get(w, set()) for w in phrase.split(" ")))
    return frozenset(i for i in candidates if " " + phrase + " " in spaced[i])


def _word_index(spaced: pd.Series) -> dict[str, set]:
    index: dict[str, set] = {}
    for item, text in spaced.items():
        for word in text.split():
            index.setdefault(word, set()).add(item)
    return index


def _rank(item_id: str, seed: int = SEED) -> float:
    """A stable number in [0, 1) per item: membership and the order of the set."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[:8], "little") / 2.0**64


_STORED = "SELECT item_id, variant, query FROM known_item_queries"
_STORE = "INSERT INTO known_item_queries (item_id, variant, query) VALUES (:i, :v, :q) ON CONFLICT DO NOTHING"


def known_items(engine, catalog: pd.DataFrame, seed: int = SEED) -> KnownItems:
    """The set's queries for the items of ``catalog`` (item_id, title): those written before, and new
    members' written now. Relevance is judged on today's catalog."""
    catalog = catalog.drop_duplicates("item_id").sort_values("item_id")
    titles = catalog.set_index("item_id")["title"].astype(str)
    spaced = titles.map(lambda t: " " + " ".join(words(t)) + " ")
    same_title = titles.groupby(titles.str.upper().str.strip()).groups
    members = [i for i, t in titles.items()
               if _rank(i, seed) < MEMBER_SHARE and len([w for w in words(t) if not w.isdigit()]) >= 3]
    with engine.begin() as conn:
        stored = {(r.item_id, r.variant): r.query for r in conn.execute(sa.text(_STORED))}
        written = {i for i, _ in stored}
        stats, new = TitleWords.build(titles), []
        for item in (m for m in members if m not in written):
            rng = np.random.default_rng(int(_rank(item, seed) * 2**62))
            for variant in VARIANTS:
                query = make_query(titles[item], variant, rng, stats)
                if query:
                    new.append({"i": item, "v": variant, "q": query})
                    stored[(item, variant)] = query
        if new:
            conn.execute(sa.text(_STORE), new)  # one executemany: a first version writes thousands
    rows, holders_of, holders = [], _word_index(spaced), {}
    for item in sorted(members, key=_rank):
        twins = frozenset(same_title[titles[item].upper().strip()])
        for variant in VARIANTS:
            query = stored.get((item, variant))
            if query:
                if variant == "head" and query not in holders:  # many members share a head noun
                    holders[query] = _phrase_holders(spaced, holders_of, query)
                relevant = holders[query] if variant == "head" else twins
                rows.append({"query": query, "variant": variant, "item_id": item, "relevant": relevant | {item}})
    return KnownItems(pd.DataFrame(rows, columns=["query", "variant", "item_id", "relevant"]))


def training_exclusions(known: KnownItems) -> set[tuple[str, str]]:
    """(normalised query, item) pairs of the set: query events that must not train the search side."""
    return {(" ".join(words(q)), i) for q, i in zip(known.queries["query"], known.queries["item_id"])}
