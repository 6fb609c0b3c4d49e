"""Okapi BM25 over item titles, in process: the lexical baseline the benchmark measures full-text
search against (classic parameters k1 = 1.5, b = 0.75; words as ``search.text.words``, no stemming)."""
from __future__ import annotations

import numpy as np
from scipy import sparse

from freshrec.search.text import words


class BM25:
    def __init__(self, texts: list[str], k1: float = 1.5, b: float = 0.75):
        docs = [words(t) for t in texts]
        self.terms = {w: i for i, w in enumerate(sorted({w for d in docs for w in d}))}
        rows = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
        cols = np.array([self.terms[w] for d in docs for w in d], dtype=np.int64)
        tf = sparse.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(docs), len(self.terms)))
        lengths = np.array([len(d) for d in docs], dtype=float)
        df = np.bincount(tf.indices, minlength=len(self.terms))
        idf = np.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
        norm = k1 * (1 - b + b * lengths / max(lengths.mean(), 1e-9))
        tf = tf.tocoo()
        weight = idf[tf.col] * tf.data * (k1 + 1) / (tf.data + norm[tf.row])
        self.matrix = sparse.csc_matrix((weight, (tf.row, tf.col)), shape=tf.shape)

    def scores(self, query: str) -> np.ndarray:
        cols = [self.terms[w] for w in words(query) if w in self.terms]
        if not cols:
            return np.zeros(self.matrix.shape[0])
        return np.asarray(self.matrix[:, cols].sum(axis=1)).ravel()
