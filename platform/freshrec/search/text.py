"""Query and title words: one tokenizer for every search leg and benchmark, and typo correction.

Typos: the embedded PostgreSQL has no ``pg_trgm``, so a misspelt word would match no document in
the full-text leg. ``Vocabulary`` corrects a query word that is in no title to the most frequent
title word one edit away (a deletion, insertion, substitution or transposition: the SymSpell
method, through a table of single deletions, built once per catalog). The benchmark measures it
(queries with one typo).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from freshrec.words import words

__all__ = ["Vocabulary", "words"]


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def _one_edit(a: str, b: str) -> bool:
    """Damerau-Levenshtein distance of at most 1."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                   and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


@dataclass
class Vocabulary:
    counts: Counter
    by_delete: dict[str, set[str]]
    min_length: int = 4  # shorter words have too many neighbours one edit away to correct safely

    @classmethod
    def build(cls, texts) -> Vocabulary:
        counts = Counter(w for t in texts for w in set(words(t)))
        by_delete: dict[str, set[str]] = {}
        for word in counts:
            for key in _deletes(word) | {word}:
                by_delete.setdefault(key, set()).add(word)
        return cls(counts, by_delete)

    def corrected(self, text: str) -> str:
        """The text's words, each misspelt one replaced by its correction (what the dense leg embeds)."""
        return " ".join(self.correct(w) or w for w in words(text))

    def correct(self, word: str) -> str | None:
        """The most frequent title word one edit from ``word``; None if it is one, or nothing is near."""
        if word in self.counts or len(word) < self.min_length or word.isdigit():
            return None
        near = set()
        for key in _deletes(word) | {word}:
            near |= self.by_delete.get(key, set())
        near = [w for w in near if _one_edit(word, w)]
        return max(near, key=lambda w: (self.counts[w], w)) if near else None
