"""Known-item queries on the shop's own catalog: can search find the item a customer has in mind?

For a seeded sample of items, queries of each kind (``ingest.synthetic_queries``): three title words
shuffled, two swapped, three with one typo, and the head noun only. What counts as found:
- for word queries, the item, and any item with the very same title;
- for a head noun ("alarm clock"), every item whose title holds the phrase: NDCG@10 is its measure.

The set is fixed by the catalog and the seed, and never trains: the updater drops any query event
whose (query, item) pair is in it (``training_exclusions``). The gate judges forgetting on part of
it; the benchmark on all of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from freshrec.ingest.synthetic_queries import VARIANTS, TitleWords, make_query
from freshrec.words import words

SEED = 20_111_201  # fixed: the same catalog always gives the same set


@dataclass
class KnownItems:
    queries: pd.DataFrame  # query, variant, item_id, relevant (frozenset of item ids)

    def __len__(self) -> int:
        return len(self.queries)

    def head(self, n_items: int) -> KnownItems:
        """The queries of the first ``n_items`` sampled items (the gate's part of the set)."""
        keep = self.queries["item_id"].isin(self.queries["item_id"].drop_duplicates().head(n_items))
        return KnownItems(self.queries[keep].reset_index(drop=True))


def _phrase_holders(spaced: pd.Series, phrase: str) -> frozenset:
    """Items whose title (as " word word ... ") holds the phrase's words in a row."""
    return frozenset(spaced.index[spaced.str.contains(" " + phrase + " ", regex=False)])


def known_items(catalog: pd.DataFrame, n_items: int = 1000, seed: int = SEED) -> KnownItems:
    """Queries of every kind for ``n_items`` sampled items of ``catalog`` (item_id, title)."""
    catalog = catalog.drop_duplicates("item_id").sort_values("item_id")
    titles = catalog.set_index("item_id")["title"].astype(str)
    spaced = titles.map(lambda t: " " + " ".join(words(t)) + " ")
    stats = TitleWords.build(titles)
    same_title = titles.groupby(titles.str.upper().str.strip()).groups
    eligible = [i for i, t in titles.items() if len([w for w in words(t) if not w.isdigit()]) >= 3]
    rng = np.random.default_rng(seed)
    sampled = [eligible[i] for i in rng.permutation(len(eligible))[:n_items]]
    rows = []
    for item in sampled:
        title = titles[item]
        twins = frozenset(same_title[title.upper().strip()])
        for variant in VARIANTS:
            query = make_query(title, variant, rng, stats)
            if not query:
                continue
            relevant = _phrase_holders(spaced, query) if variant == "head" else twins
            rows.append({"query": query, "variant": variant, "item_id": item, "relevant": relevant | {item}})
    return KnownItems(pd.DataFrame(rows))


def training_exclusions(known: KnownItems) -> set[tuple[str, str]]:
    """(normalised query, item) pairs of the set: query events that must not train the search side."""
    return {(" ".join(words(q)), i) for q, i in zip(known.queries["query"], known.queries["item_id"])}
