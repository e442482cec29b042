"""Adaptation to interest migration: blend long- and short-term interest by the migration score.

`AdaptiveBlend(base)` wraps any fitted-or-not Recommender. For a history h it scores

    (1 - w) * z(base scores from all of h)  +  w * z(base scores from the last `short` events of h)

where z() standardises each row (the two score sets live on different scales) and the
weight w is `weight_min` normally and `weight_max` when the migration detector fires on
one of the last `recent` events (a detected move of the user's interests): right after a
migration the old history describes someone the user no longer is. The weights can be
chosen on the validation set at fit time (`tune=True`, fitted pair in `weights_`); the
test set is never used. Validation ranks follow the evaluator's history policy `repeats`
("exclude": every history item masked, a repeated target a miss; "allow": nothing masked).

Context (optional, `context="hour"` or `"weekday"`): at a given request time, items close
(in text space) to what the user did in the same time bucket get `context_weight` extra
(standardised) score; it needs the history's timestamps and the request time, so it is
reached through `score_context`, not through the evaluator's plain `score_histories`.

The blend is a full model: scoring is read-only (the detector runs on each history as it
comes), its item universe is the base model's (`add_items` and `partial_fit` go to the base;
new items' text vectors join `item_vectors_`), and `save` writes the base model as a nested
folder and the fitted detector (a `MigrationDetector`: hyper-parameters in the manifest,
calibration arrays in the safetensors file) with the blend's own state.
"""
from __future__ import annotations

import copy
import inspect
import itertools

import numpy as np

from ..evaluation.evaluator import check_repeats, policy_ranks
from ..models.artifact import check_encoder
from ..models.base import Recommender
from ..models.incremental import coerce_events, vectors_for
from .detection import MigrationDetector

BUCKETS = {"hour": lambda t: ((t // 3600) % 24 // 3).astype(np.int64),      # 8 three-hour buckets (UTC)
           "weekday": lambda t: ((t // 86400 + 3) % 7).astype(np.int64)}    # 0 = Monday (epoch was a Thursday)

# Detector classes a saved blend may name (looked up by name, never imported from a file).
DETECTORS = {"MigrationDetector": MigrationDetector}


def _zrows(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float32)
    finite = np.where(np.isfinite(scores), scores, np.nan)
    mean = np.nanmean(finite, axis=1, keepdims=True)
    std = np.nanstd(finite, axis=1, keepdims=True)
    return (scores - mean) / np.where(std > 0, std, 1.0)


def _detector_params(detector) -> dict:
    """The JSON hyper-parameters of a detector a blend can save (a MigrationDetector)."""
    if DETECTORS.get(type(detector).__name__) is not type(detector):
        raise TypeError(f"AdaptiveBlend can save only a detector of {sorted(DETECTORS)}, not "
                        f"{type(detector).__name__}")
    names = [p for p in inspect.signature(type(detector).__init__).parameters if p != "self"]
    return {"class": type(detector).__name__, "params": {p: getattr(detector, p) for p in names}}


def _detector_from(spec: dict):
    klass = DETECTORS.get(spec.get("class"))
    if klass is None:
        raise ValueError(f"unknown detector class {spec.get('class')!r} (known: {sorted(DETECTORS)})")
    return klass(**spec["params"])


class AdaptiveBlend(Recommender):
    name = "adaptive-blend"
    registry = "adaptive-blend"
    _state_apart = ("detector_",)     # saved by _state/_restore: hyper-parameters + calibration arrays

    def __init__(self, base=None, short: int = 5, detector=None, recent: int = 3, weight_min: float = 0.0,
                 weight_max: float = 0.5, tune: bool = True, refit_base: bool = True, min_events: int = 8,
                 context: str | None = None, context_weight: float = 0.0, adaptive: bool = True,
                 repeats: str = "exclude"):
        self.adaptive = adaptive           # False: one fixed recency weight, detector ignored (the control)
        self.base, self.short, self.detector, self.recent = base, short, detector, recent
        self.weight_min, self.weight_max, self.tune, self.refit_base = weight_min, weight_max, tune, refit_base
        self.min_events = min_events       # histories shorter than this calibrate nothing and never fire
        if context not in (None, *BUCKETS):
            raise ValueError(f"context must be None or one of {sorted(BUCKETS)}, not {context!r}")
        self.context, self.context_weight = context, context_weight
        self.repeats = check_repeats(repeats)   # the history policy of the validation tuning (evaluator's)

    @property
    def item_ids_(self) -> np.ndarray:
        """The base model's item universe (the blend scores exactly its items)."""
        if "weights_" not in self.__dict__ or self.base is None:
            raise AttributeError("item_ids_")
        return self.base.item_ids_

    # -- fitting ----------------------------------------------------------------------------------
    def fit(self, train, valid=None):
        if self.base is None:
            raise ValueError("AdaptiveBlend needs a base model (base=...)")
        if self.short < 1 or self.recent < 1:
            raise ValueError(f"short and recent must be >= 1, not {self.short} and {self.recent}")
        if getattr(train, "item_vectors", None) is None:
            raise ValueError("AdaptiveBlend needs train.item_vectors: the migration detector reads the "
                             "history's item text vectors (migrec.encoders.encode_catalogue)")
        if len(train.item_vectors) != train.n_items:
            raise ValueError(f"train.item_vectors has {len(train.item_vectors)} rows for {train.n_items} items")
        if self.refit_base or not hasattr(self.base, "item_ids_"):
            self.base.fit(train, valid)
        if len(self.base.item_ids_) != train.n_items:
            raise ValueError(f"the base model knows {len(self.base.item_ids_)} items but train has "
                             f"{train.n_items}: fit the blend on the base model's item universe")
        for stale in ("weights_", "valid_ndcg_"):
            self.__dict__.pop(stale, None)
        self.training_ = {"users": int(train.n_users), "items": int(train.n_items),
                          "events": int(train.n_interactions),
                          "items_with_events": int((train.item_counts() > 0).sum())}
        self.item_vectors_ = np.asarray(train.item_vectors, dtype=np.float32)
        self.encoder_ = {"model_id": getattr(train, "encoder", None), "dim": int(self.item_vectors_.shape[1])}
        self.detector_ = None
        if self.adaptive:
            long = [self.item_vectors_[s] for s in train.sequences if len(s) >= self.min_events]
            if not long:
                raise ValueError(f"no training history has {self.min_events}+ events to calibrate the detector on")
            # the hyper-parameter stays as given; the fitted copy is detector_
            detector = MigrationDetector() if self.detector is None else copy.deepcopy(self.detector)
            self.detector_ = detector.fit(long)
        weights = (float(self.weight_min), float(self.weight_max))
        if self.tune and valid is not None and len(valid):
            weights, self.valid_ndcg_ = self._tune(valid, weights)
        self.weights_ = weights             # set last: the blend counts as fitted from here on
        return self

    def _tune(self, valid, default: tuple) -> tuple:
        """(weight_min, weight_max) with the best validation NDCG@10, and that NDCG@10."""
        from ..evaluation import metrics as M

        fired = self._migrated(valid.histories) if self.adaptive else np.zeros(len(valid), dtype=bool)
        best, choice = -1.0, default
        parts = []
        for lo in range(0, len(valid), 512):
            hists, targs = valid.histories[lo:lo + 512], valid.targets[lo:lo + 512]
            parts.append((self._parts(hists), hists, targs, fired[lo:lo + 512]))
        # the adaptive grid contains every fixed weight (w_min == w_max), so it can only add to it
        steps = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
        grid = itertools.product(steps, steps) if self.adaptive else ((w, w) for w in steps)
        for w_min, w_max in grid:
            if w_max < w_min:
                continue
            ranks = []
            for (z_long, z_short), hists, targs, f in parts:
                w = np.where(f, w_max, w_min)[:, None].astype(np.float32)
                # the evaluator's policy: masking never looks at the targets
                ranks.append(policy_ranks((1 - w) * z_long + w * z_short, hists, targs, self.repeats))
            score = M.accuracy_metrics(M.pad_ranks([r for block in ranks for r in block]), (10,))["NDCG@10"]
            if score > best + 1e-9:
                best, choice = score, (w_min, w_max)
        return choice, float(best)

    # -- growth: new items and new events go to the base model -------------------------------------
    def add_items(self, item_ids, vectors=None, domains=None, encoder: str | None = None) -> None:
        """Add items to the base model (`base.add_items`) and their text vectors to `item_vectors_`,
        so the detector reads them too. `vectors`: an array (rows in item_ids order), a mapping
        or a frame (see models.incremental.vectors_for)."""
        self._check_fitted()
        if not hasattr(self.base, "add_items"):
            raise ValueError(f"the base model {type(self.base).__name__} cannot take new items (no add_items)")
        check_encoder(self.encoder_info(), encoder, "the new items' vectors")
        item_ids = [str(i) for i in item_ids]
        rows = vectors_for(item_ids, vectors, self.item_vectors_.shape[1])   # checked before anything changes
        self.base.add_items(item_ids, rows, domains=domains, encoder=encoder)
        self.item_vectors_ = np.vstack([self.item_vectors_, rows])

    def partial_fit(self, new_interactions, histories=None, item_vectors=None, encoder: str | None = None, **kw):
        """`base.partial_fit` on the new events (keyword arguments go to it); items new to the base
        need `item_vectors` (as in `add_items`), whose rows also join `item_vectors_`. The detector
        and the blend weights stay as fitted. A base without partial_fit raises NotImplementedError."""
        self._check_fitted()
        frame = coerce_events(new_interactions)
        distinct = list(dict.fromkeys(frame["item_id"]))
        new = [i for i, known in zip(distinct, self.knows(distinct)) if not known]
        lookup = {}
        if new and hasattr(self.base, "add_items"):      # a base without add_items refuses them itself
            check_encoder(self.encoder_info(), encoder, "item_vectors")
            lookup = dict(zip(new, vectors_for(new, item_vectors, self.item_vectors_.shape[1])))
        before = len(self.base.item_ids_)
        if new:
            kw.update(item_vectors=lookup, encoder=encoder)
        try:
            self.base.partial_fit(frame, histories=histories, **kw)
        finally:                                         # items the base took stay in step, even on an error
            grown = [str(i) for i in self.base.item_ids_[before:]]
            if grown:
                self.item_vectors_ = np.vstack([self.item_vectors_, np.stack([lookup[i] for i in grown])])
        return self

    # -- migration (read-only) ----------------------------------------------------------------------
    def _detector(self):
        self._check_fitted()
        if self.detector_ is None:
            raise ValueError("this AdaptiveBlend has adaptive=False: it has no fitted migration detector")
        return self.detector_

    def migration_scores(self, history) -> np.ndarray:
        """The detector's migration score per event of one item-index history (zeros when too short)."""
        detector = self._detector()
        h = np.asarray(history, dtype=np.int64)
        if len(h) < self.min_events:
            return np.zeros(len(h))
        return np.asarray(detector.scores(self.item_vectors_[h]), dtype=np.float64)

    def migrated(self, histories) -> np.ndarray:
        """Whether a migration is detected among the last `recent` events of each item-index history."""
        self._detector()
        return self._migrated(histories)

    def _migrated(self, histories) -> np.ndarray:
        out = np.zeros(len(histories), dtype=bool)
        seen = {}                          # local: the same history asked twice in one call runs once
        for row, h in enumerate(histories):
            h = np.asarray(h, dtype=np.int64)
            if len(h) < self.min_events:
                continue
            key = h.tobytes()
            if key not in seen:
                hits = self.detector_.detect(self.item_vectors_[h])
                seen[key] = any(i >= len(h) - self.recent for i in hits)
            out[row] = seen[key]
        return out

    def weights(self, histories) -> np.ndarray:
        """Weight of the short-term scores per item-index history."""
        self._check_fitted()
        w_min, w_max = self.weights_
        if not self.adaptive:
            return np.full(len(histories), w_min, dtype=np.float32)
        return np.where(self._migrated(histories), w_max, w_min).astype(np.float32)

    # -- scoring (read-only) ----------------------------------------------------------------------
    def _parts(self, histories):
        long = self.base.score_histories(histories)
        short = self.base.score_histories([np.asarray(h, dtype=np.int64)[-self.short:] for h in histories])
        return _zrows(long), _zrows(short)

    def score_histories(self, histories):
        self._check_fitted()
        z_long, z_short = self._parts(histories)
        w = self.weights(histories)[:, None]
        return (1 - w) * z_long + w * z_short

    def score_context(self, histories, times, now) -> np.ndarray:
        """score_histories plus the time-bucket affinity: `times` per history (seconds, one per
        event), `now` the request time (one per history, or one for all)."""
        if self.context is None:
            raise ValueError("this AdaptiveBlend has no context (context='hour' or 'weekday')")
        if len(times) != len(histories):
            raise ValueError(f"times has {len(times)} entries for {len(histories)} histories")
        scores = self.score_histories(histories)
        bucket = BUCKETS[self.context]
        unit = self.item_vectors_ / np.maximum(np.linalg.norm(self.item_vectors_, axis=1, keepdims=True), 1e-12)
        profiles = np.zeros((len(histories), unit.shape[1]), dtype=np.float32)
        has = np.zeros(len(histories), dtype=bool)
        for row, (h, t, when) in enumerate(zip(histories, times, np.broadcast_to(now, (len(histories),)))):
            if len(t) != len(h):
                raise ValueError(f"history {row} has {len(h)} events but {len(t)} timestamps")
            same = bucket(np.asarray(t, dtype=np.float64)) == bucket(np.asarray([when], dtype=np.float64))[0]
            if same.sum() >= 2:           # one event is no habit
                profiles[row], has[row] = unit[np.asarray(h, dtype=np.int64)[same]].mean(0), True
        affinity = _zrows(profiles @ unit.T)
        return scores + self.context_weight * np.where(has[:, None], affinity, 0.0)

    # -- persistence: base model nested, detector as JSON + arrays, nothing pickled -------------------
    def _artifact_params(self):
        params, arrays, children = {}, {}, {}
        for key, value in self.get_params().items():
            if key == "detector":
                params[key] = None if value is None else _detector_params(value)
            elif isinstance(value, Recommender):
                children[key] = value
            else:
                params[key] = value
        return params, arrays, children

    def _state(self):
        state, arrays, children = super()._state()
        state["weights_"] = [float(w) for w in self.weights_]
        if self.detector_ is None:
            state["detector_"] = None
            return state, arrays, children
        spec = _detector_params(self.detector_)
        spec["fitted"] = {}
        for key, value in vars(self.detector_).items():
            if not key.endswith("_") or key.startswith("_"):
                continue
            if isinstance(value, np.ndarray) and value.dtype != object:
                arrays[f"detector_.{key}"] = value
            elif isinstance(value, (int, float, str, bool, np.integer, np.floating)):
                spec["fitted"][key] = value.item() if isinstance(value, (np.integer, np.floating)) else value
            else:
                raise TypeError(f"detector attribute {key} ({type(value).__name__}) cannot be saved")
        state["detector_"] = spec
        return state, arrays, children

    def _restore(self, state, arrays, children):
        state = dict(state)
        spec = state.pop("detector_", None)
        detector_arrays = {k[len("detector_."):]: arrays.pop(k) for k in list(arrays) if k.startswith("detector_.")}
        super()._restore(state, arrays, children)
        self.weights_ = tuple(float(w) for w in self.weights_)
        self.detector_ = None
        if spec is not None:
            detector = _detector_from(spec)
            for key, value in {**spec.get("fitted", {}), **detector_arrays}.items():
                setattr(detector, key, value)
            self.detector_ = detector

    @classmethod
    def from_artifact(cls, manifest, arrays, children):
        params = dict(manifest["params"])
        spec = params.pop("detector", None)
        model = super().from_artifact({**manifest, "params": params}, arrays, children)
        model.detector = None if spec is None else _detector_from(spec)
        return model

