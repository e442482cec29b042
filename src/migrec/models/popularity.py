"""Most-popular baseline: every user gets the items with the most training events."""
from __future__ import annotations

import numpy as np

from .base import Recommender


class Popularity(Recommender):
    name = "popularity"

    def __init__(self):
        pass

    def fit(self, train, valid=None):
        self._remember(train)
        self.counts_ = train.item_counts().astype(np.float32)
        return self

    def score_histories(self, users, histories):
        return np.broadcast_to(self.counts_, (len(users), len(self.counts_))).copy()
