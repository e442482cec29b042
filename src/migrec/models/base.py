"""The one contract every model follows (scikit-learn style, implicit's history-in API).

Hyper-parameters go in ``__init__`` (which only stores them); ``fit(train, valid=None)``
learns and returns self; fitted state ends in ``_``. A model holds no user data: it scores
a *history* given to it, and whoever keeps histories (a `migrec.data.Histories`, the
service's store) passes them in. Every model implements one read-only primitive,

    score_histories(histories) -> float32 [len(histories), n_items]

over item-index histories (the full item universe, `item_ids_`). Everything else is built
on it: `recommend_history` / `recommend_histories` / `score` answer in raw item ids, and the
evaluator measures the same scores. Scoring never changes the model and is safe from
several threads; an update runs on a `clone()` that is swapped in when done.

Persistence: `save(path)` writes a safe artifact (`models.artifact`); `migrec.load_model`
reads it back through the explicit registry table.
"""
from __future__ import annotations

import copy
import inspect
import threading
from pathlib import Path

import numpy as np

from . import artifact, retrieval

# caches and locks: never copied or saved ("_ann": the ANN index, models.retrieval)
_RUNTIME = ("_lookup", "_cache", "_unit", "_lock", "_item_matrix", "_ann", "_ann_lock")


class Recommender:
    name = "recommender"      # label in result tables (build_model sets the registry's short name)
    registry = ""             # key in migrec.registry.ARTIFACTS; "" = cannot be saved
    _state_apart: tuple = ()  # fitted attributes a subclass's _state/_restore save themselves

    # -- to implement -------------------------------------------------------------
    def fit(self, train, valid=None) -> "Recommender":
        raise NotImplementedError

    def score_histories(self, histories: list) -> np.ndarray:
        """Scores of every item for each item-index history; higher is better. Read-only."""
        raise NotImplementedError

    def partial_fit(self, new_interactions, histories=None, **kw) -> "Recommender":
        """Update on new events without a refit (models that support it override this)."""
        raise NotImplementedError(f"{type(self).__name__} has no incremental update; refit it instead")

    # -- hyper-parameters ---------------------------------------------------------------
    def get_params(self) -> dict:
        # Hyper-parameters are the named __init__ arguments of the class and its bases.
        names = []
        for klass in type(self).__mro__:
            if "__init__" in vars(klass) and klass is not object:
                for p in inspect.signature(klass.__init__).parameters.values():
                    if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in names:
                        names.append(p.name)
        return {p: getattr(self, p) for p in names if hasattr(self, p)}

    def set_params(self, **params) -> "Recommender":
        """Change hyper-parameters (e.g. a lower learning rate before fine-tuning). An unknown name
        is a ValueError naming it, raised before anything changes."""
        valid = self.get_params()
        unknown = [key for key in params if key not in valid]
        if unknown:
            raise ValueError(f"{type(self).__name__} has no hyper-parameter {unknown[0]!r}; it has {sorted(valid)}")
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def clone(self) -> "Recommender":
        """A deep copy, fitted state included: update it while this one keeps serving."""
        twin = copy.deepcopy(self)
        if self.__dict__.get("_ann") is not None:
            twin._ann = self._ann     # read-only: the clone patches a copy of it after an update
        return twin

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in _RUNTIME}

    # -- items --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        try:
            self.item_ids_
        except AttributeError:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() first") from None

    @property
    def n_items(self) -> int:
        self._check_fitted()
        return len(self.item_ids_)

    def _set_items(self, item_ids) -> None:
        self.item_ids_ = np.asarray([str(i) for i in item_ids], dtype=object)

    def _summarise(self, train) -> None:
        """Record what the model was trained on (counts only, no user data) and its item universe."""
        self._set_items(train.item_ids)
        self.training_ = {"users": int(train.n_users), "items": int(train.n_items),
                          "events": int(train.n_interactions),
                          "items_with_events": int((train.item_counts() > 0).sum())}

    def _item_lookup(self) -> dict:
        self._check_fitted()
        lookup = self.__dict__.get("_lookup")
        if lookup is None or len(lookup) != len(self.item_ids_):
            lookup = {it: i for i, it in enumerate(self.item_ids_)}
            self._lookup = lookup            # a cache, rebuilt whenever the universe grows
        return lookup

    def knows(self, items) -> np.ndarray:
        """Whether each raw item id is in the model's item universe (bool array)."""
        lookup = self._item_lookup()
        return np.asarray([str(i) in lookup for i in items], dtype=bool)

    def item_index(self, items, unknown: str = "raise") -> np.ndarray:
        """Item indices of raw item ids; unknown="raise" (KeyError naming them) or "drop"."""
        lookup = self._item_lookup()
        if isinstance(items, (str, int, np.integer)):
            items = [items]
        out = [lookup.get(str(i), -1) for i in items]
        if unknown == "raise":
            missing = [i for i, j in zip(items, out) if j < 0]
            if missing:
                raise KeyError(f"unknown item{'s' if len(missing) > 1 else ''} {missing[:5]}")
        elif unknown != "drop":
            raise ValueError(f"unknown must be 'raise' or 'drop', not {unknown!r}")
        arr = np.asarray(out, dtype=np.int64)
        return arr[arr >= 0]

    # -- dot-product models: approximate retrieval for large catalogues (models.retrieval) --
    def item_matrix(self) -> np.ndarray | None:
        """Item vectors v [n_items, d] with score(h, i) = query_vectors([h])[0] · v[i], or None
        when the model's scores are not such a dot product (then recommend always scores exactly)."""
        return None

    def query_vectors(self, histories: list) -> np.ndarray:
        """Query vectors q(h) [len(histories), d] of item-index histories (see item_matrix)."""
        raise NotImplementedError(f"{type(self).__name__} scores are not a dot product of query and item vectors")

    def ann_index(self):
        """The ANN index (`models.retrieval.ANNIndex`) recommend uses, or None: built at first use
        and cached while the item matrix stays the same; None below `ann_threshold` items, when
        the threshold is None, or when the model has no item_matrix. Call it on an updated clone
        before swapping it in, so the first request does not pay the build."""
        threshold = getattr(self, "ann_threshold", None)
        if threshold is None or self.n_items < threshold:
            return None
        matrix = self.item_matrix()
        if matrix is None:
            return None
        entry = self.__dict__.get("_ann")
        if entry is not None and entry.matrix is matrix:
            return entry
        with self.__dict__.setdefault("_ann_lock", threading.Lock()):
            entry = self.__dict__.get("_ann")
            if entry is None:
                entry = retrieval.build(matrix)
            elif entry.matrix is not matrix:
                entry = retrieval.update(entry, matrix)
            if entry is not self.__dict__.get("_ann"):
                # nprobe also reaches the target recall on this model's own queries (random histories of
                # 1-200 random items): calibrated on synthetic queries alone, recall was ~0.93 at 1M items
                sample = retrieval.random_histories(self.n_items, 200)
                entry = retrieval.calibrate_on(entry, self.query_vectors(sample))
            self._ann = entry
        return entry

    # -- raw-id answers, all built on score_histories -------------------------------------
    def score(self, histories, items, unknown: str = "raise") -> np.ndarray:
        """Scores of the raw item ids `items` for each raw-id history: [len(histories), len(items)]."""
        idx = [self.item_index(h, unknown) for h in histories]
        return np.asarray(self.score_histories(idx), dtype=np.float32)[:, self.item_index(items)]

    def recommend_histories(self, histories, k: int = 10, exclude_seen: bool = True, exclude=None,
                            candidates=None, unknown: str = "raise"):
        """Top-k raw item ids and scores for each raw-id history: two [len(histories), k'] arrays.

        exclude_seen: leave out the history's own items. exclude: per history, further raw ids
        to leave out. candidates: rank only these raw ids (e.g. one domain's items).
        unknown: what to do with history items the model does not know ("raise" or "drop").
        k' = min(k, number of candidates); a row with fewer allowed items ends in -inf scores.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, not {k}")
        if exclude is not None and len(exclude) != len(histories):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(histories)} histories")
        idx = [self.item_index(h, unknown) for h in histories]
        ann = self.ann_index()
        if ann is not None:      # a large catalogue: approximate top-k, same exclusions and filters
            allowed = None if candidates is None else np.unique(self.item_index(candidates))
            excluded = [np.union1d(h if exclude_seen else [],
                                   [] if exclude is None else self.item_index(exclude[row], "drop")).astype(np.int64)
                        for row, h in enumerate(idx)]
            top, scores = retrieval.search(ann, self.query_vectors(idx), k, excluded, allowed,
                                           exact_below=self.ann_threshold)
            return self.item_ids_[top], scores
        scores = np.array(self.score_histories(idx), dtype=np.float32, copy=True)
        scores[np.isnan(scores)] = -np.inf
        n_allowed = scores.shape[1]
        if candidates is not None:
            keep = np.zeros(scores.shape[1], dtype=bool)
            keep[self.item_index(candidates)] = True
            scores[:, ~keep] = -np.inf
            n_allowed = int(keep.sum())
        for row, h in enumerate(idx):
            if exclude_seen:
                scores[row, h] = -np.inf
            if exclude is not None and len(exclude[row]):
                scores[row, self.item_index(exclude[row], "drop")] = -np.inf
        k = max(1, min(k, n_allowed))
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)
        return self.item_ids_[top], np.take_along_axis(scores, top, 1)

    def recommend_history(self, items, k: int = 10, exclude_seen: bool = True, exclude=None, candidates=None,
                          unknown: str = "raise"):
        """Top-k raw item ids and scores for one raw-id history (excluded items never appear)."""
        ids, scores = self.recommend_histories([items], k, exclude_seen, None if exclude is None else [exclude],
                                               candidates, unknown)
        keep = np.isfinite(scores[0])
        return ids[0][keep], scores[0][keep]

    # -- persistence ---------------------------------------------------------------------
    def _state(self) -> tuple[dict, dict, dict]:
        """(JSON state, numeric arrays, nested models) of the fitted attributes; override to adjust."""
        state, arrays, children = {}, {}, {}
        for key, value in self.__dict__.items():
            if not key.endswith("_") or key.startswith("_") or key in ("item_ids_", "encoder_", "training_") \
                    or key in self._state_apart:
                continue
            if isinstance(value, Recommender):
                children[key] = value
            elif isinstance(value, np.ndarray) and value.dtype != object:
                arrays[key] = value
            elif _is_json(value):
                state[key] = value
            else:
                raise TypeError(f"{type(self).__name__}.{key} ({type(value).__name__}) cannot be saved: "
                                f"override _state/_restore")
        return state, arrays, children

    def _restore(self, state: dict, arrays: dict, children: dict) -> None:
        """Set the fitted attributes back from what _state gave (after __init__ and _set_items)."""
        self.__dict__.update(state)
        self.__dict__.update(arrays)
        self.__dict__.update(children)

    def _artifact_params(self) -> tuple[dict, dict, dict]:
        """Hyper-parameters split into (JSON values, arrays, nested models)."""
        params, arrays, children = {}, {}, {}
        for key, value in self.get_params().items():
            if isinstance(value, Recommender):
                children[key] = value
            elif isinstance(value, np.ndarray):
                arrays[key] = value
            elif _is_json(value):
                params[key] = value
            else:
                raise TypeError(f"hyper-parameter {key}={value!r} cannot be saved")
        return params, arrays, children

    def encoder_info(self) -> dict | None:
        """The text encoder behind the model's item vectors: {"model_id", "dim"}, or None (ID model)."""
        return getattr(self, "encoder_", None)

    def save(self, path) -> None:
        """Write a safe, self-describing artifact (see models.artifact); no user data goes in."""
        self._check_fitted()
        if not self.registry:
            raise TypeError(f"{type(self).__name__} has no registry name: it cannot be saved")
        params, p_arrays, p_children = self._artifact_params()
        state, arrays, children = self._state()
        arrays = {**{f"param.{k}": v for k, v in p_arrays.items()}, **arrays}
        clash = set(p_children) & set(children)
        if clash:
            raise TypeError(f"nested model names used twice: {sorted(clash)}")
        children = {**p_children, **children}
        artifact.write(path, registry=self.registry, name=self.name, params=params, item_ids=self.item_ids_,
                       encoder=self.encoder_info(), training=getattr(self, "training_", {}), state=state,
                       arrays=arrays, children=list(children))
        for key, child in children.items():
            child.save(Path(path) / key)

    @classmethod
    def load(cls, path) -> "Recommender":
        """Load a model folder holding this class (or a subclass of it) and its nested models.

        The manifest's registry name is looked up among the `registry` names of the classes
        defined in code (never imported from the file); `migrec.registry.load_model` is the
        entry point that knows every model the package ships.
        """
        manifest, arrays = artifact.read(path)
        klass = _registered(cls).get(manifest["registry"])
        if klass is None:
            raise artifact.ArtifactError(f"{Path(path) / artifact.MANIFEST}: field 'registry' is "
                                         f"{manifest['registry']!r}, not a {cls.__name__} "
                                         f"(known: {sorted(_registered(cls))})")
        children = {key: Recommender.load(Path(path) / key) for key in manifest["children"]}
        return klass.from_artifact(manifest, arrays, children)

    @classmethod
    def from_artifact(cls, manifest: dict, arrays: dict, children: dict) -> "Recommender":
        """Rebuild from a manifest read by models.artifact.read (children already loaded)."""
        init = set(inspect.signature(cls.__init__).parameters)
        params = dict(manifest["params"])
        params.update({k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")})
        params.update({k: v for k, v in children.items() if k in init})
        model = cls(**params)
        model.name = manifest.get("name") or cls.name
        if "item_ids_" not in _class_properties(cls):
            model._set_items(manifest["item_ids"])
        if manifest.get("encoder") is not None:
            model.encoder_ = manifest["encoder"]
        model.training_ = manifest.get("training") or {}
        model._restore(manifest["state"], {k: v for k, v in arrays.items() if not k.startswith("param.")},
                       {k: v for k, v in children.items() if k not in init})
        return model

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if not isinstance(v, np.ndarray))
        return f"{type(self).__name__}({args})"


def _registered(cls) -> dict:
    """registry name -> class, for cls and every subclass defined so far."""
    out, todo = {}, [cls]
    while todo:
        klass = todo.pop()
        if klass.__dict__.get("registry"):
            out[klass.registry] = klass
        todo.extend(klass.__subclasses__())
    return out


def _class_properties(cls) -> set:
    return {k for klass in cls.__mro__ for k, v in vars(klass).items() if isinstance(v, property)}


def _is_json(value) -> bool:
    if value is None or isinstance(value, (str, bool, int, float, np.integer, np.floating)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False
