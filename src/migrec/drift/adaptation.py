"""Adaptation to interest migration: blend long- and short-term interest by the migration score.

`AdaptiveBlend(base)` wraps any fitted-or-not Recommender. For a history h it scores

    (1 - w) * z(base scores from all of h)  +  w * z(base scores from the last `short` events of h)

where z() standardises each row (the two score sets live on different scales) and the
weight w is `weight_min` normally and `weight_max` when the migration detector fires on
one of the last `recent` events (a detected move of the user's interests): right after a
migration the old history describes someone the user no longer is. The weights can be
chosen on the validation set at fit time (`tune=True`, fitted pair in `weights_`); the
test set is never used.

Context (optional, `context="hour"` or `"weekday"`): at a given request time, items close
(in text space) to what the user did in the same time bucket get `context_weight` extra
(standardised) score; it needs the history's timestamps and the request time, so it is
reached through `score_context`, not through the evaluator's plain `score_histories`.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..models.base import Recommender

BUCKETS = {"hour": lambda t: ((t // 3600) % 24 // 3).astype(np.int64),      # 8 three-hour buckets (UTC)
           "weekday": lambda t: ((t // 86400 + 3) % 7).astype(np.int64)}    # 0 = Monday (epoch was a Thursday)


def _zrows(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float32)
    finite = np.where(np.isfinite(scores), scores, np.nan)
    mean = np.nanmean(finite, axis=1, keepdims=True)
    std = np.nanstd(finite, axis=1, keepdims=True)
    return (scores - mean) / np.where(std > 0, std, 1.0)


class AdaptiveBlend(Recommender):
    name = "adaptive-blend"

    def __init__(self, base=None, short: int = 5, detector=None, recent: int = 3, weight_min: float = 0.0,
                 weight_max: float = 0.5, tune: bool = True, refit_base: bool = True, min_events: int = 8,
                 context: str | None = None, context_weight: float = 0.0, adaptive: bool = True):
        self.adaptive = adaptive           # False: one fixed recency weight, detector ignored (the control)
        self.base, self.short, self.detector, self.recent = base, short, detector, recent
        self.weight_min, self.weight_max, self.tune, self.refit_base = weight_min, weight_max, tune, refit_base
        self.min_events = min_events       # histories shorter than this calibrate nothing and never fire
        if context not in (None, *BUCKETS):
            raise ValueError(f"context must be None or one of {sorted(BUCKETS)}, not {context!r}")
        self.context, self.context_weight = context, context_weight

    # -- fitting ----------------------------------------------------------------------------------
    def fit(self, train, valid=None):
        if self.base is None:
            raise ValueError("AdaptiveBlend needs a base model (base=...)")
        if self.short < 1 or self.recent < 1:
            raise ValueError(f"short and recent must be >= 1, not {self.short} and {self.recent}")
        if getattr(train, "item_vectors", None) is None:
            raise ValueError("AdaptiveBlend needs train.item_vectors: the migration detector reads the "
                             "history's item text vectors (migrec.encoders.encode_catalogue)")
        if self.refit_base or not hasattr(self.base, "item_ids_"):
            self.base.fit(train, valid)
        self._remember(train)
        self.item_vectors_ = np.asarray(train.item_vectors, dtype=np.float32)
        if self.detector is None:
            from .detection import MigrationDetector
            self.detector = MigrationDetector()
        self._fired = {}                   # history bytes -> detected; scoring asks about the same ones often
        if self.adaptive:
            long = [self.item_vectors_[s] for s in train.sequences if len(s) >= self.min_events]
            if not long:
                raise ValueError(f"no training history has {self.min_events}+ events to calibrate the detector on")
            self.detector.fit(long)
        self.weights_ = (self.weight_min, self.weight_max)
        if self.tune and valid is not None and len(valid):
            self._tune(train, valid)
        return self

    def _tune(self, train, valid) -> None:
        """Pick (weight_min, weight_max) by validation NDCG@10 from the cached long/short scores."""
        from ..evaluation import metrics as M
        from ..evaluation.evaluator import _mask

        fired = self.migrated(valid.histories) if self.adaptive else np.zeros(len(valid), dtype=bool)
        best, choice = -1.0, self.weights_
        parts = []
        for lo in range(0, len(valid), 512):
            users, hists, targs = valid.users[lo:lo + 512], valid.histories[lo:lo + 512], valid.targets[lo:lo + 512]
            parts.append((self._parts(users, hists), hists, targs, fired[lo:lo + 512]))
        # the adaptive grid contains every fixed weight (w_min == w_max), so it can only add to it
        steps = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
        grid = itertools.product(steps, steps) if self.adaptive else ((w, w) for w in steps)
        for w_min, w_max in grid:
            if w_max < w_min:
                continue
            ranks = []
            for (z_long, z_short), hists, targs, f in parts:
                w = np.where(f, w_max, w_min)[:, None].astype(np.float32)
                ranks.append(M.target_ranks(_mask((1 - w) * z_long + w * z_short, hists, targs), targs))
            score = M.accuracy_metrics(M.pad_ranks([r for block in ranks for r in block]), (10,))["NDCG@10"]
            if score > best + 1e-9:
                best, choice = score, (w_min, w_max)
        self.weights_, self.valid_ndcg_ = choice, best

    # -- migration --------------------------------------------------------------------------------
    def migration_scores(self, history) -> np.ndarray:
        """The detector's migration score per event of one history (empty when too short)."""
        h = np.asarray(history, dtype=np.int64)
        if len(h) < self.min_events:
            return np.zeros(len(h))
        return np.asarray(self.detector.scores(self.item_vectors_[h]), dtype=np.float64)

    def migrated(self, histories) -> np.ndarray:
        """Whether a migration is detected among the last `recent` events of each history."""
        out = np.zeros(len(histories), dtype=bool)
        cache = getattr(self, "_fired", {})
        for row, h in enumerate(histories):
            h = np.asarray(h, dtype=np.int64)
            if len(h) < self.min_events:
                continue
            key = h.tobytes()
            if key not in cache:
                hits = self.detector.detect(self.item_vectors_[h])
                cache[key] = any(i >= len(h) - self.recent for i in hits)
            out[row] = cache[key]
        return out

    def weights(self, histories) -> np.ndarray:
        """Weight of the short-term scores per history."""
        w_min, w_max = self.weights_
        if not self.adaptive:
            return np.full(len(histories), w_min, dtype=np.float32)
        return np.where(self.migrated(histories), w_max, w_min).astype(np.float32)

    # -- scoring ----------------------------------------------------------------------------------
    def _parts(self, users, histories):
        long = self.base.score_histories(users, histories)
        short = self.base.score_histories(users, [np.asarray(h)[-self.short:] for h in histories])
        return _zrows(long), _zrows(short)

    def score_histories(self, users, histories):
        self._check_fitted()
        z_long, z_short = self._parts(users, histories)
        w = self.weights(histories)[:, None]
        return (1 - w) * z_long + w * z_short

    def score_context(self, users, histories, times, now) -> np.ndarray:
        """score_histories plus the time-bucket affinity: `times` per history, `now` per user (seconds)."""
        if self.context is None:
            raise ValueError("this AdaptiveBlend has no context (context='hour' or 'weekday')")
        scores = self.score_histories(users, histories)
        bucket = BUCKETS[self.context]
        unit = self.item_vectors_ / np.maximum(np.linalg.norm(self.item_vectors_, axis=1, keepdims=True), 1e-12)
        profiles = np.zeros((len(histories), unit.shape[1]), dtype=np.float32)
        has = np.zeros(len(histories), dtype=bool)
        for row, (h, t, when) in enumerate(zip(histories, times, np.broadcast_to(now, (len(histories),)))):
            if len(t) != len(h):
                raise ValueError(f"history {row} has {len(h)} events but {len(t)} timestamps")
            same = bucket(np.asarray(t, dtype=np.float64)) == bucket(np.asarray([when], dtype=np.float64))[0]
            if same.sum() >= 2:           # one event is no habit
                profiles[row], has[row] = unit[np.asarray(h)[same]].mean(0), True
        affinity = _zrows(profiles @ unit.T)
        return scores + self.context_weight * np.where(has[:, None], affinity, 0.0)

    def save(self, path) -> None:
        raise NotImplementedError("AdaptiveBlend is not saved as one piece: save its base model and refit "
                                  "the blend (it only calibrates the detector and two weights)")
