"""Text neighbours: items scored by the cosine of their text vector to the newest events' text vectors.

Content-based item-to-item retrieval with no training and no IDs, so an item nobody has
clicked yet is scored on the same footing as a well-known one. On Amazon logs a good share
of next purchases are near-duplicates in text of the last one (another size, flavour or
part of the same line): for items held out of training in Food -> Kitchen, the last event's
text alone puts 3 of 54 cold targets in the top 10 of all 27,637 Kitchen items, where the
trained models put none. Mixed into a trained model at a weight chosen on validation
(transfer.mix.ValidatedMix), it gives cold items a way in without costing warm accuracy
on validation.

score(h, i) = t_i . sum_k w_k t_{h[-k]} over the newest `last` events, w_k = decay^(k-1).
"""
from __future__ import annotations

import numpy as np

from ..encoders.base import l2_normalize
from .artifact import check_encoder
from .base import Recommender
from .incremental import new_item_ids, vectors_for


class TextNeighbours(Recommender):
    """Recency-weighted text similarity to the newest `last` events (unit text vectors: cosine)."""

    name = "text-knn"
    registry = "text-knn"

    def __init__(self, last: int = 1, decay: float = 0.5):
        self.last, self.decay = last, decay

    def fit(self, train, valid=None):
        if not (isinstance(self.last, int) and self.last >= 1):
            raise ValueError(f"last must be an integer >= 1, not {self.last!r}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay must be in (0, 1], not {self.decay!r}")
        vectors = getattr(train, "item_vectors", None)
        if vectors is None:
            raise ValueError("TextNeighbours needs train.item_vectors: encode the catalogue first "
                             "(migrec.encoders.encode_catalogue)")
        if len(vectors) != train.n_items:
            raise ValueError(f"item_vectors has {len(vectors)} rows for {train.n_items} items")
        self._summarise(train)
        self.vectors_ = l2_normalize(vectors)
        self.encoder_ = {"model_id": getattr(train, "encoder", None), "dim": int(self.vectors_.shape[1])}
        return self

    def _queries(self, histories) -> np.ndarray:
        weights = self.decay ** np.arange(self.last, dtype=np.float32)
        out = np.zeros((len(histories), self.vectors_.shape[1]), dtype=np.float32)
        for row, h in enumerate(histories):
            newest = np.asarray(h, dtype=np.int64)[::-1][: self.last]
            if len(newest):
                out[row] = weights[: len(newest)] @ self.vectors_[newest]
        return out

    def score_histories(self, histories):
        self._check_fitted()
        return self._queries(histories) @ self.vectors_.T

    def query_vectors(self, histories) -> np.ndarray:
        return self._queries(histories)

    def item_matrix(self) -> np.ndarray:
        return self.vectors_

    def add_items(self, item_ids, vectors=None, domains=None, encoder: str | None = None) -> None:
        """New catalogue items, known by their text vectors (from the same encoder)."""
        self._check_fitted()
        check_encoder(self.encoder_info(), encoder, "the new items' vectors")
        item_ids = new_item_ids(self, item_ids)
        self.vectors_ = np.vstack([self.vectors_, l2_normalize(vectors_for(item_ids, vectors, self.vectors_.shape[1]))])
        self._set_items(list(self.item_ids_) + item_ids)

    def partial_fit(self, new_interactions, histories=None, **_):
        """Nothing is learnt from events: the scores follow the histories passed in."""
        self._check_fitted()
        return self
