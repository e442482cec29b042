"""Most-popular baseline: every history gets the items with the most training events."""
from __future__ import annotations

import numpy as np

from .base import Recommender
from .incremental import coerce_events


class Popularity(Recommender):
    name = "popularity"
    registry = "popularity"

    def __init__(self):
        pass

    def fit(self, train, valid=None):
        self._summarise(train)
        self.counts_ = train.item_counts().astype(np.float32)
        return self

    def score_histories(self, histories):
        return np.broadcast_to(self.counts_, (len(histories), len(self.counts_))).copy()

    def partial_fit(self, new_interactions, histories=None, **_):
        """Add the new events' counts (items must be in the catalogue; histories are not needed)."""
        self._check_fitted()
        frame = coerce_events(new_interactions)
        idx = self.item_index(frame["item_id"])
        self.counts_ = self.counts_ + np.bincount(idx, minlength=len(self.counts_)).astype(np.float32)
        return self
