"""Item-to-item co-purchase: how often two items share a basket, as P(j in basket | i in basket).

Two forms with one interface, ``gather(items)``: the strengths of the given items' partners, flat
(for each given item, its partner rows and P(partner | item), never the item itself):
- ``CoPurchase``: sparse pair counts accumulated in time order (exact; the benchmark's offline
  point-in-time state); ``neighbours(k)`` keeps each item's k strongest partners;
- ``Neighbours``: each item's top k partners only, in CSR form. What a version serves (memory and
  per-request work follow the catalog times k, never the catalog squared).

A query's co-purchase score for an item is a sum of P(item | i) over the items i of its recent
baskets, so scores are comparable across items.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from freshrec.ranking.events import EventLog, split_baskets

NEIGHBOURS = 100  # partners kept per item


def _flat_rows(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For CSR rows: the position of each stored entry's row among ``rows``, and the entries' indices."""
    lengths = indptr[rows + 1] - indptr[rows]
    owner = np.repeat(np.arange(len(rows)), lengths)
    offsets = np.repeat(indptr[rows] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return owner, np.arange(lengths.sum()) + offsets


@dataclass
class Neighbours:
    """Each item row's strongest co-purchase partners (CSR: ``indptr`` over item rows)."""

    indptr: np.ndarray
    partners: np.ndarray  # item rows
    strengths: np.ndarray  # P(partner | item), float32

    @classmethod
    def empty(cls, n_items: int) -> Neighbours:
        return cls(np.zeros(n_items + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))

    @property
    def n_items(self) -> int:
        return len(self.indptr) - 1

    def gather(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position in ``items``, partner row, strength) of every stored partner of the given items."""
        items = np.asarray(items, np.int64)
        owner, at = _flat_rows(self.indptr, items)
        return owner, self.partners[at], self.strengths[at]

    def frame(self, item_ids: np.ndarray):
        """One row per item with partners: item_id, partners (ids), strengths (what a version publishes)."""
        import pandas as pd

        rows = np.flatnonzero(np.diff(self.indptr))
        spans = [slice(self.indptr[r], self.indptr[r + 1]) for r in rows]
        return pd.DataFrame({"item_id": item_ids[rows].astype(str),
                             "partners": [item_ids[self.partners[s]].astype(str).tolist() for s in spans],
                             "strengths": [self.strengths[s].tolist() for s in spans]})

    @classmethod
    def from_lists(cls, n_items: int, rows: np.ndarray, partners: list[np.ndarray], strengths: list[np.ndarray]) -> Neighbours:
        """From per-item lists (rows may be sparse: items without partners have none)."""
        lengths = np.zeros(n_items, np.int64)
        lengths[rows] = [len(p) for p in partners]
        order = np.argsort(rows, kind="stable")
        flat_p = np.concatenate([partners[i] for i in order]) if len(order) else np.zeros(0, np.int64)
        flat_s = np.concatenate([strengths[i] for i in order]) if len(order) else np.zeros(0, np.float32)
        return cls(np.concatenate([[0], np.cumsum(lengths)]), flat_p.astype(np.int64), flat_s.astype(np.float32))


class FetchedNeighbours:
    """A version's neighbours read item by item when first needed, then kept: a request reads those
    of its customer's recent items only (``fetch``: item ids -> {item id: (partner ids, strengths)},
    from Feast's online store when serving). Partners outside ``item_index`` are dropped."""

    def __init__(self, fetch, item_ids: np.ndarray, item_index, limit: int = 200_000, fetch_many=None):
        # The bound holds every item's at any catalog size: the API reads them all between requests.
        self.fetch, self.item_ids, self.item_index = fetch, item_ids, item_index
        self.limit = max(limit, len(item_ids))
        self.fetch_many = fetch_many or fetch  # for ``prefetch`` of many items at once
        self._known: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def gather(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        items = np.asarray(items, np.int64)
        known = self._held(items, self.fetch)
        parts = [known[int(i)] for i in items]
        owner = np.repeat(np.arange(len(items)), [len(p[0]) for p in parts])
        if not len(owner):
            return owner, np.zeros(0, np.int64), np.zeros(0, np.float32)
        return owner, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def prefetch(self, items: np.ndarray) -> None:
        """Read the partners of those of these item rows not held yet, through ``fetch_many``."""
        self._held(items, self.fetch_many)

    @property
    def held(self) -> int:
        """How many items' partners are held."""
        return len(self._known)

    def prefetch_next(self, order: np.ndarray, n: int) -> int:
        """Read the partners of the first ``n`` item rows of ``order`` not held yet, while they fit under
        the bound; how many were read (0: every one is held, or no more fit)."""
        known = self._known
        n = min(n, self.limit - len(known))
        if n <= 0 or len(known) >= len(self.item_ids):  # every item held: no pass over the catalog each wake-up
            return 0
        held = np.fromiter(known.keys(), np.int64, len(known))
        missing = np.asarray(order, np.int64)[~np.isin(order, held)][:n]
        if len(missing):
            self._held(missing, self.fetch_many)
        return len(missing)

    def _held(self, items: np.ndarray, fetch) -> dict:
        """The held partners, these items' among them (a dict of its own to the caller: another
        thread that passes the bound starts a new one, it never empties this one)."""
        known = self._known
        # By look-up, item by item: a set minus ``known.keys()`` copies every held key (28k at 10x) each time.
        missing = sorted({i for i in np.asarray(items, np.int64).tolist() if i not in known})
        if not missing:
            return known
        found = fetch([str(self.item_ids[i]) for i in missing])
        if len(known) + len(missing) > self.limit:  # a bound, not an LRU: versions swap often enough
            known = self._known = {}
        lists = [found.get(str(self.item_ids[row]), ([], [])) for row in missing]
        # One look-up of every partner at once: one per item was most of a thousand items' read.
        at = self.item_index.get_indexer([p for partners, _ in lists for p in partners])
        strengths = np.fromiter((s for _, found_strengths in lists for s in found_strengths), np.float32, len(at))
        ends = np.cumsum([len(partners) for partners, _ in lists])
        for row, a, s, keep in zip(missing, np.split(at, ends[:-1]), np.split(strengths, ends[:-1]),
                                   np.split(at >= 0, ends[:-1])):
            known[row] = (a[keep].astype(np.int64), s[keep])
        return known


def _owner_then_strongest(owner: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """One int64 key ordering pairs by owner, then strength descending: a float32 >= 0 orders as its
    bits do. One stable sort on it, not a three-key ``lexsort``: 5.6 s to 1.4 s for 31 M stored pairs."""
    bits = np.ascontiguousarray(strength, np.float32).view(np.int32).astype(np.int64)
    return (owner.astype(np.int64) << 32) | (0x7FFFFFFF - bits)


PAIRS_PER_BATCH = 1 << 22  # item pairs held at once while counting or ranking (about 100 MiB of arrays)


class CoPurchase:
    """Sparse pair counts (each item with itself on the diagonal: the baskets holding it)."""

    def __init__(self, n_items: int):
        self.n_items = n_items
        self.counts = sparse.csr_matrix((n_items, n_items), dtype=np.float32)
        self.added_until = -np.inf  # baskets strictly before this time are in

    def copy(self) -> CoPurchase:
        """A copy that shares the counts: ``add`` replaces the matrix, never writes into it."""
        other = CoPurchase.__new__(CoPurchase)
        other.n_items, other.counts, other.added_until = self.n_items, self.counts, self.added_until
        return other

    def add(self, baskets: list[np.ndarray]) -> None:
        """Count every ordered pair of items (and each item with itself) of each basket.

        A batch of baskets at a time: the pair arrays of a whole history at once (three arrays of
        every basket's squared size, and their sparse conversion) were most of an update's peak memory.
        """
        batch, pairs = [], 0
        for basket in baskets:
            batch.append(basket)
            pairs += len(basket) ** 2
            if pairs >= PAIRS_PER_BATCH:
                self._add(batch)
                batch, pairs = [], 0
        if batch:
            self._add(batch)

    def _add(self, baskets: list[np.ndarray]) -> None:
        left = np.concatenate([np.repeat(b, len(b)) for b in baskets])
        right = np.concatenate([np.tile(b, len(b)) for b in baskets])
        ones = np.ones(len(left), np.float32)
        self.counts = (self.counts + sparse.csr_matrix((ones, (left, right)), shape=self.counts.shape)).tocsr()

    def advance(self, log: EventLog, until: float) -> None:
        """Add the log's baskets with ``added_until <= time < until`` (call with increasing times)."""
        if until <= self.added_until:
            return
        mask = (log.time >= self.added_until) & (log.time < until)
        order = np.argsort(log.basket[mask], kind="stable")
        self.add(split_baskets(log.basket[mask][order], log.item[mask][order]))
        self.added_until = until

    def gather(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position in ``items``, partner row, P(partner | item)) over every partner of the given items."""
        items = np.asarray(items, np.int64)
        counts = self.counts
        owner, at = _flat_rows(counts.indptr, items)
        partner = counts.indices[at].astype(np.int64)
        own = np.asarray(counts[items, items]).ravel()
        strength = counts.data[at] / np.maximum(own[owner], 1.0)
        keep = partner != items[owner]
        return owner[keep], partner[keep], strength[keep].astype(np.float32)

    def neighbours(self, k: int = NEIGHBOURS, items: np.ndarray | None = None) -> Neighbours:
        """Each item's k strongest partners (of the given item rows only, if any), ranked a block of items
        at a time (about ``PAIRS_PER_BATCH`` stored pairs each: the sort's arrays stay that small)."""
        lengths = np.diff(self.counts.indptr)
        rows = np.flatnonzero(lengths)
        if items is not None:
            rows = np.intersect1d(rows, np.asarray(items, np.int64))
        sizes = np.cumsum(lengths[rows])
        edges = np.searchsorted(sizes, np.arange(PAIRS_PER_BATCH, sizes[-1] if len(sizes) else 0, PAIRS_PER_BATCH))
        partners, strengths = [], []
        self.counts.sort_indices()  # partners ascending within a row: ties keep that order below
        for block in (b for b in np.split(rows, np.unique(edges)) if len(b)):
            owner, partner, strength = self.gather(block)
            order = np.argsort(_owner_then_strongest(owner, strength), kind="stable")
            owner, partner, strength = owner[order], partner[order], strength[order]
            rank = np.arange(len(owner)) - np.searchsorted(owner, owner)
            keep = rank < k
            owner, partner, strength = owner[keep], partner[keep], strength[keep]
            bounds = np.searchsorted(owner, np.arange(len(block) + 1))
            partners += [partner[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
            strengths += [strength[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        return Neighbours.from_lists(self.n_items, rows, partners, strengths)


def from_log(log: EventLog) -> CoPurchase:
    """Co-purchase over every basket of the log."""
    cp = CoPurchase(log.n_items)
    cp.advance(log, np.inf)
    return cp
