"""Synthetic search queries from real item titles: the bundled data has purchases, not query logs.

``add_queries`` puts a query on a seeded share of the purchase rows, as if the customer had typed it
before buying: words of the bought item's title, some dropped and the rest shuffled, sometimes with
a typo, sometimes only the head noun ("alarm clock"). The purchases are real; the queries are made
up. The same generator makes the benchmark's known-item queries (``freshrec.search.knownitem``).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from freshrec.words import words

VARIANTS = ("three", "two", "typo", "head")
# How often each kind is typed, for the query log: mostly a few words, sometimes a misspelling or
# just the kind of thing.
LOG_MIX = {"three": 0.35, "two": 0.3, "typo": 0.15, "head": 0.2}
# Words that say which one, not what: never a head noun.
_MODIFIERS = {"red", "blue", "pink", "green", "white", "black", "ivory", "cream", "gold", "silver", "purple",
              "yellow", "orange", "brown", "grey", "small", "large", "mini", "big", "vintage", "retrospot", "polkadot", "design", "assorted", "colour", "colours", "antique", "wooden",
              "wood", "glass", "metal", "paper", "ceramic", "enamel", "hanging", "french", "english", "new", "hot",
              "sweet", "funky", "pack", "love", "home", "party", "christmas", "fairy", "cake"}


# Words nobody types to find a thing.
_FILLER = {"of", "with", "and", "the", "in", "set", "pack", "s", "t"}


def _content(title: str) -> list[str]:
    return [w for w in words(title) if len(w) >= 2 and not w.isdigit() and w not in _FILLER]


@dataclass
class TitleWords:
    """How often each word and each adjacent pair of words is in the catalog's titles."""

    word_counts: Counter
    pair_counts: Counter

    @classmethod
    def build(cls, titles) -> TitleWords:
        word_counts, pair_counts = Counter(), Counter()
        for title in set(titles):
            ws = _content(title)
            word_counts.update(set(ws))
            pair_counts.update(set(zip(ws, ws[1:])))
        return cls(word_counts, pair_counts)

    def head_noun(self, title: str) -> str | None:
        """The kind of thing a title names: its most common content word, with a neighbour when
        the pair is common too ("ALARM CLOCK BAKELIKE RED" -> "alarm clock")."""
        ws = _content(title)
        nouns = [w for w in ws if w not in _MODIFIERS and len(w) >= 3]
        if not nouns:
            return None
        # The most common noun-like word, later words first among equals (English titles end on their noun).
        head = max(nouns, key=lambda w: (self.word_counts[w] * (1 + ws.index(w) / len(ws)), ws.index(w)))
        at = ws.index(head)
        pairs = [p for p in ((ws[at - 1], head) if at else None, (head, ws[at + 1]) if at + 1 < len(ws) else None)
                 if p and not set(p) & _MODIFIERS and self.pair_counts[p] >= 3]
        return " ".join(max(pairs, key=lambda p: self.pair_counts[p])) if pairs else head


def _typo(word: str, rng: np.random.Generator) -> str:
    """One edit: a letter dropped, doubled, replaced, or two swapped."""
    at = int(rng.integers(0, len(word) - 1))
    kind = rng.integers(0, 4)
    if kind == 0:
        return word[:at] + word[at + 1 :]
    if kind == 1:
        return word[: at + 1] + word[at] + word[at + 1 :]
    if kind == 2:
        letter = "abcdefghijklmnopqrstuvwxyz"[int(rng.integers(0, 26))]
        return word[:at] + (letter if letter != word[at] else "x") + word[at + 1 :]
    return word[:at] + word[at + 1] + word[at] + word[at + 2 :]


def make_query(title: str, variant: str, rng: np.random.Generator, stats: TitleWords) -> str | None:
    """One query of the given kind for an item's title (None when the title cannot make one)."""
    ws = _content(title)
    if variant == "head":
        return stats.head_noun(title)
    size = 2 if variant == "two" else 3
    if len(ws) < size:
        return None
    picked = [ws[i] for i in rng.permutation(len(ws))[:size]]
    if variant == "two" and [ws.index(w) for w in picked] == sorted(ws.index(w) for w in picked):
        picked.reverse()  # "two title words, swapped"
    if variant == "typo":
        long = [i for i, w in enumerate(picked) if len(w) >= 4]
        if not long:
            return None
        at = long[int(rng.integers(0, len(long)))]
        picked[at] = _typo(picked[at], rng)
    return " ".join(picked)


def add_queries(interactions: pd.DataFrame, titles: dict[str, str], share: float, seed: int = 0,
                stats: TitleWords | None = None) -> pd.DataFrame:
    """A copy with a query on a seeded ``share`` of the purchase rows (the others keep theirs).

    Seeded per row by its event key, so a row gets the same query however the file is sliced.
    """
    if share <= 0 or interactions.empty:
        return interactions
    stats = stats or TitleWords.build(titles.values())
    out = interactions.copy()
    kinds, weights = list(LOG_MIX), np.array(list(LOG_MIX.values()))
    # A hash of (seed, event key) per row: which rows get a query, and the seed of each query.
    hashed = pd.util.hash_pandas_object(out["event_key"].astype(str), index=False,
                                        hash_key=f"freshrec{seed:08d}"[-16:]).to_numpy()
    chosen = (hashed / 2.0**64 < share) & (out["event_type"] == "purchase").to_numpy() & out["item_id"].isin(titles).to_numpy()
    queries = out["query"].to_numpy(dtype=object).copy()
    for row in np.flatnonzero(chosen):
        rng = np.random.default_rng(int(hashed[row]))
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        queries[row] = make_query(titles[out["item_id"].iat[row]], kind, rng, stats) or queries[row]
    out["query"] = queries
    return out
