"""Item-based k-nearest neighbours on the binary user-item matrix (cosine with shrinkage).

Similarities are computed in item chunks and only the top `neighbors` per item are
kept, so memory stays O(n_items * neighbors) even for large catalogues.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .base import Recommender


class ItemKNN(Recommender):
    name = "itemknn"
    registry = "itemknn"
    _state_apart = ("similarity_",)

    def __init__(self, neighbors: int = 100, shrink: float = 10.0, chunk: int = 2048):
        self.neighbors = neighbors
        self.shrink = shrink
        self.chunk = chunk

    def fit(self, train, valid=None):
        self._summarise(train)
        x = train.csr(binary=True).tocsc()
        xt = x.T.tocsr()
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
        n = train.n_items
        k = min(self.neighbors, n - 1)
        rows, cols, vals = [], [], []
        for start in range(0, n, self.chunk):
            stop = min(start + self.chunk, n)
            co = (xt[start:stop] @ x).toarray()  # co-occurrence counts [chunk, n]
            sim = co / (np.outer(norms[start:stop], norms) + self.shrink + 1e-12)
            sim[np.arange(stop - start), np.arange(start, stop)] = 0.0  # no self-similarity
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            rows.append(np.repeat(np.arange(start, stop), k))
            cols.append(top.ravel())
            vals.append(np.take_along_axis(sim, top, 1).ravel())
        sim = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
        sim.eliminate_zeros()
        self.similarity_ = sim.astype(np.float32)
        return self

    def score_histories(self, histories):
        n = self.similarity_.shape[0]
        rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
        cols = np.concatenate(histories) if len(histories) else np.array([], dtype=np.int64)
        h = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(histories), n))
        h.data[:] = 1.0  # a repeated item counts once
        return np.asarray((h @ self.similarity_).todense(), dtype=np.float32)

    def _state(self):
        state, arrays, children = super()._state()
        sim = self.similarity_
        arrays.update({"similarity.data": sim.data, "similarity.indices": sim.indices, "similarity.indptr": sim.indptr})
        return state, arrays, children

    def _restore(self, state, arrays, children):
        n = len(self.item_ids_)
        self.similarity_ = sp.csr_matrix((arrays.pop("similarity.data"), arrays.pop("similarity.indices"),
                                          arrays.pop("similarity.indptr")), shape=(n, n))
        super()._restore(state, arrays, children)
