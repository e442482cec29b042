"""A reserved place for fresh items: the best-scored never-clicked item is slotted in at a fixed rank.

    model = FreshSlot(fitted_model, position=10).fit(train)    # fresh: items without training events
    model.recommend_history(history, k=10)                     # the 10th place goes to a fresh item

A model trained on clicks ranks an item without training events far below known ones, even when
its text makes it the right answer. This wrapper keeps the wrapped model's order and, when none
of its first `position` items is fresh, moves the fresh item it scores highest to exactly
`position` (the item there and every one below move down one place). The list then always holds
one fresh item within its first `position` places; it costs at most the warm item that stood at
`position`. Which fresh item gets the place is the wrapped model's choice, so a model that scores
fresh items well (text, `InterestModel(cold_neighbours=k)`) fills it better.
"""
from __future__ import annotations

import numpy as np

from .base import Recommender


class FreshSlot(Recommender):
    """A fitted model whose list keeps one place (rank `position`) for its best fresh item.

    model: an already fitted model (fit does not refit it; a nested folder when saved).
    candidates: the item indices the list is drawn from (None = all), e.g. one domain's items.
    items: the fresh item indices (None: the items without training events, read at fit).
    exclude_history: history items are not counted as places (the evaluator and `recommend` mask them).
    """

    name = "fresh-slot"
    registry = "fresh-slot"

    def __init__(self, model: Recommender, position: int = 10, candidates=None, items=None,
                 exclude_history: bool = True):
        self.model, self.position, self.candidates = model, position, candidates
        self.items, self.exclude_history = items, exclude_history

    @property
    def item_ids_(self) -> np.ndarray:
        return self.model.item_ids_

    def _set_items(self, item_ids) -> None:
        n = self.model.n_items                     # RuntimeError if the wrapped model is not fitted
        ids = [str(i) for i in item_ids]
        if ids != list(self.model.item_ids_):
            raise ValueError(f"the training data's {len(ids)} items are not the {n} items "
                             f"of the wrapped model ({type(self.model).__name__})")

    def encoder_info(self) -> dict | None:
        return self.model.encoder_info()

    def fit(self, train, valid=None):
        """Record the fresh items (those given, else the items without training events)."""
        if int(self.position) < 1:
            raise ValueError(f"position must be >= 1 (a place in the list), got {self.position}")
        self._summarise(train)
        fresh = np.flatnonzero(train.item_counts() == 0) if self.items is None else self.items
        self.fresh_ = np.unique(np.asarray(fresh, dtype=np.int64))
        if len(self.fresh_) and (self.fresh_.min() < 0 or self.fresh_.max() >= train.n_items):
            raise ValueError(f"items must be item indices in [0, {train.n_items}), got {self.fresh_.min()} "
                             f"to {self.fresh_.max()}")
        return self

    def _check_fitted(self) -> None:
        super()._check_fitted()
        if "fresh_" not in self.__dict__:
            raise RuntimeError("FreshSlot is not fitted: call fit() first")

    def score_histories(self, histories):
        self._check_fitted()
        histories = [np.asarray(h, dtype=np.int64) for h in histories]
        scores = np.array(self.model.score_histories(histories), dtype=np.float32)
        n = scores.shape[1]
        allowed = np.zeros(n, dtype=bool)
        allowed[np.arange(n) if self.candidates is None else np.asarray(self.candidates, dtype=np.int64)] = True
        fresh = np.zeros(n, dtype=bool)
        fresh[self.fresh_] = True
        pos = int(self.position)
        for row, history in zip(scores, histories):
            listed = allowed & np.isfinite(row)
            if self.exclude_history and len(history):
                listed[history] = False
            pool = np.flatnonzero(listed & fresh)
            if len(pool) == 0 or listed.sum() <= pos:     # no fresh item, or every listed item has a place
                continue
            best = pool[np.argmax(row[pool])]
            values = row[listed]
            top = -np.partition(-values, pos - 1)[:pos]     # the pos largest, [pos-1] the pos-th
            kth = top.min()
            if row[best] >= kth:                            # already within the first pos places
                continue
            above = top[top > kth]
            new = np.float32((float(above.min()) + float(kth)) / 2) if len(above) else kth
            row[best] = new if new > kth else np.nextafter(kth, np.float32(np.inf))   # just above the pos-th
        return scores
