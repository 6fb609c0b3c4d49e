"""Search, its own pipeline beside recommendations:

    query -> lexical (PostgreSQL full text, GIN)   --\\
          -> dense (query tower vs item vectors)    ---> reciprocal rank fusion -> behaviour re-rank

- **lexical**: ``search.lexical`` (words as typed, prefixes, typo corrections);
- **dense**: the query's pre-trained embedding through the version's ``QueryAdapter`` (none on day
  one: the pre-trained encoder itself) against every item's pre-trained embedding (``search.index``);
- **fusion**: each leg's rank r adds 1 / (rrf_k + r) (Cormack et al., SIGIR 2009): no score scales
  to calibrate between a cover density and a cosine;
- **behaviour**: plus ``popularity_weight`` x the item's recent popularity and, for a known customer,
  ``history_weight`` x how often they bought it, each scaled to [0, 1]. The weights come from
  ``freshrec bench search``, which measures them on query events.

The pipeline computes only; its inputs (the lexical leg's SQL, popularity, a user's history) are
handed in, so the API, the updater's gate and the benchmark rank the same way.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from freshrec.models.query_adapter import QueryAdapter
from freshrec.search.index import ItemVectors, normalised
from freshrec.search.text import Vocabulary
from freshrec.topk import top_columns

LEGS = ("lexical", "dense")


@dataclass
class SearchConfig:
    depth: int = field(default=100, metadata={"help": "items each leg proposes"})
    rrf_k: int = field(default=60, metadata={"help": "reciprocal rank fusion's k: 1 / (k + rank)"})
    lexical_weight: float = field(default=1.0, metadata={"help": "weight of the full-text leg's 1 / (k + rank)"})
    dense_weight: float = field(default=1.0, metadata={"help": "weight of the dense leg's 1 / (k + rank)"})
    # Chosen by `freshrec bench search` on held-out query events (its weight grid, docs/bench/search):
    # popularity helps a little; the customer's own purchases did not help there, so they weigh 0.
    popularity_weight: float = field(default=0.002, metadata={"help": "weight of the item's recent popularity"})
    history_weight: float = field(default=0.0, metadata={"help": "weight of the customer's own purchases of it"})
    typo_correction: bool = field(default=True, metadata={"help": "correct query words that are in no title"})

    def __post_init__(self) -> None:
        weights = (self.popularity_weight, self.history_weight, self.lexical_weight, self.dense_weight)
        if self.depth < 1 or self.rrf_k < 0 or min(weights) < 0:
            raise ValueError("invalid search argument: depth >= 1, rrf_k >= 0, weights >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SearchHit:
    item_id: str
    score: float
    legs: tuple[str, ...]


DENSE_BLOCK_CELLS = 1 << 24  # query x item scores per block of ``SearchPipeline.dense``: 64 MiB of float32


def _scaled(counts: dict[str, float]) -> dict[str, float]:
    """log1p of each count over log1p of the largest: [0, 1]."""
    top = max(counts.values(), default=0.0)
    return {k: float(np.log1p(v) / np.log1p(top)) for k, v in counts.items()} if top > 0 else {}


def fuse(legs: dict[str, list[str]], config: SearchConfig, popularity: Callable[[list[str]], dict[str, float]],
         history: dict[str, float] | None, k: int) -> list[SearchHit]:
    """Reciprocal rank fusion of the legs' rankings, then the behaviour terms; the k best."""
    score: dict[str, float] = {}
    found: dict[str, list[str]] = {}
    weights = {"lexical": config.lexical_weight, "dense": config.dense_weight}
    for leg, ranked in legs.items():
        for rank, item in enumerate(ranked[: config.depth], 1):
            score[item] = score.get(item, 0.0) + weights[leg] / (config.rrf_k + rank)
            found.setdefault(item, []).append(leg)
    if config.popularity_weight:
        for item, value in _scaled(popularity(list(score))).items():
            score[item] += config.popularity_weight * value
    if history and config.history_weight:
        for item, value in _scaled({i: c for i, c in history.items() if i in score}).items():
            score[item] += config.history_weight * value
    best = sorted(score, key=lambda i: (-score[i], i))[:k]
    return [SearchHit(i, score[i], tuple(found[i])) for i in best]


class SearchPipeline:
    """One version's search: the shared item vectors, the version's query adapter and configuration."""

    def __init__(self, items: ItemVectors, encode: Callable[[list[str]], np.ndarray], adapter: QueryAdapter | None,
                 config: SearchConfig, vocabulary: Vocabulary | None):
        self.items, self.encode, self.adapter, self.config = items, encode, adapter, config
        self.vocabulary = vocabulary if config.typo_correction else None

    def dense_texts(self, texts: list[str]) -> list[str]:
        """What the dense leg embeds: the texts with typos corrected (a typo moves a sentence embedding far)."""
        return [self.vocabulary.corrected(t) for t in texts] if self.vocabulary is not None else list(texts)

    def with_adapter(self, adapter: QueryAdapter | None, config: SearchConfig | None = None) -> SearchPipeline:
        return SearchPipeline(self.items, self.encode, adapter, config or self.config, self.vocabulary)

    def query_vectors(self, texts: list[str]) -> np.ndarray:
        """Each query's vector: its pre-trained embedding (misspelt words corrected first), through the
        adapter when there is one."""
        vecs = normalised(self.encode(self.dense_texts(texts)))
        return self.adapter.transform(vecs) if self.adapter is not None else vecs

    def dense(self, vecs: np.ndarray, extra: ItemVectors | None = None) -> list[list[str]]:
        """Each query's ``depth`` nearest items (exact inner product over every item, and ``extra`` ones:
        items committed since the index was last caught up)."""
        ids, vectors = self.items.item_ids, self.items.vectors
        if extra is not None and len(extra.item_ids):
            ids = np.concatenate([ids, extra.item_ids])
            vectors = np.concatenate([vectors, extra.vectors]) if len(vectors) else extra.vectors
        if len(ids) == 0:
            return [[] for _ in range(len(vecs))]
        depth, out = min(self.config.depth, len(ids)), []
        # Queries a block at a time: a score matrix of every query against every item, and its
        # argpartition's int64 copy, took 9 GiB for an update's gate at a 10x shop.
        block = max(1, DENSE_BLOCK_CELLS // len(ids))
        for start in range(0, len(vecs), block):
            scores = vecs[start : start + block] @ vectors.T
            out += [ids[row].tolist() for row in top_columns(scores, depth)]
        return out

    def rank(self, texts: list[str], lexical: list[list[str]], popularity, histories=None, k: int = 10,
             vecs: np.ndarray | None = None, extra: ItemVectors | None = None) -> list[list[SearchHit]]:
        """Each query's k best, from its lexical results (``search.lexical``, run by the caller)."""
        vecs = self.query_vectors(texts) if vecs is None else vecs
        dense = self.dense(vecs, extra)
        histories = histories or [None] * len(texts)
        return [fuse({"lexical": lex, "dense": den}, self.config, popularity, hist, k)
                for lex, den, hist in zip(lexical, dense, histories)]
