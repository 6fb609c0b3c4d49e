"""The lexical leg: PostgreSQL's full-text search over each item's generated ``search_doc`` (GIN).

Two queries in one: ``websearch_to_tsquery`` of the text as typed (all its words, quotes and
``-word`` as a web search reads them) scores 1 when a document matches it all; a relaxed query,
any of the words, the last one as a prefix (as-you-type: "alarm clo" finds "alarm clock"), and each
misspelt word alongside its correction, ranks by cover density (``ts_rank_cd``). Documents that
match the whole text come first, then those that match the most of it.
"""
from __future__ import annotations

import sqlalchemy as sa

from freshrec.search.text import Vocabulary, words

_MATCH = """
SELECT item_id, (search_doc @@ websearch_to_tsquery('english', :typed))::int
                + ts_rank_cd(search_doc, to_tsquery('english', :relaxed), 1) AS score
FROM items
WHERE search_doc @@ (websearch_to_tsquery('english', :typed) || to_tsquery('english', :relaxed))
ORDER BY score DESC, item_id LIMIT :n"""


def relaxed_query(text: str, vocabulary: Vocabulary | None = None, prefix: bool = True) -> str | None:
    """A ``to_tsquery`` text: any of the words (each with its typo correction), the last as a prefix."""
    typed = words(text)
    if not typed:
        return None
    terms = []
    for n, word in enumerate(typed):
        fix = vocabulary.correct(word) if vocabulary is not None else None
        suffix = ":*" if prefix and n == len(typed) - 1 else ""
        terms.append("(" + " | ".join(f"{w}{suffix}" for w in ([word, fix] if fix else [word])) + ")")
    return " | ".join(terms)


def search(conn, text: str, vocabulary: Vocabulary | None, n: int = 100) -> list[tuple[str, float]]:
    """The n best (item_id, score) for the text; [] when it has no searchable word."""
    relaxed = relaxed_query(text, vocabulary)
    if relaxed is None:
        return []
    return [(r.item_id, float(r.score)) for r in conn.execute(sa.text(_MATCH), {"typed": text, "relaxed": relaxed, "n": n})]
