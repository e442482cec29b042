"""The one contract every model follows (scikit-learn style).

Hyper-parameters go in ``__init__``; ``fit(train, valid=None)`` learns and returns self;
fitted state ends in ``_``. Every model implements a single scoring primitive,
``score_histories(users, histories)`` -> [n_users, n_items] float32, over the full item
universe; ``recommend``, ``score`` and the evaluator are built on it, so all models are
measured the same way.
"""
from __future__ import annotations

import inspect
import json
import pickle
from pathlib import Path

import numpy as np

from ..data.split import EvalSet, TrainSet


class Recommender:
    name = "recommender"

    # -- to implement -------------------------------------------------------------
    def fit(self, train: TrainSet, valid: EvalSet | None = None) -> "Recommender":
        raise NotImplementedError

    def score_histories(self, users: np.ndarray, histories: list) -> np.ndarray:
        """Scores of every item for each (user index, history) pair; higher is better."""
        raise NotImplementedError

    # -- shared behaviour -----------------------------------------------------------
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
        """Change hyper-parameters (e.g. a lower learning rate before fine-tuning)."""
        valid = self.get_params()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"{type(self).__name__} has no hyper-parameter {key!r}; it has {sorted(valid)}")
            setattr(self, key, value)
        return self

    def _remember(self, train: TrainSet) -> None:
        """Keep what recommend() needs to answer by raw id after fit."""
        self.user_ids_ = np.asarray(train.user_ids, dtype=object)
        self.item_ids_ = np.asarray(train.item_ids, dtype=object)
        self.histories_ = [np.asarray(s, dtype=np.int64) for s in train.sequences]
        self._uindex = {u: i for i, u in enumerate(self.user_ids_)}
        self._iindex = {it: i for i, it in enumerate(self.item_ids_)}

    def _check_fitted(self):
        if not hasattr(self, "item_ids_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() first")

    def user_index(self, user) -> int:
        self._check_fitted()
        if not hasattr(self, "_uindex"):
            self._uindex = {u: i for i, u in enumerate(self.user_ids_)}
        try:
            return self._uindex[str(user)]
        except KeyError:
            raise KeyError(f"unknown user {user!r}") from None

    def item_index(self, item) -> int:
        self._check_fitted()
        if not hasattr(self, "_iindex"):
            self._iindex = {it: i for i, it in enumerate(self.item_ids_)}
        try:
            return self._iindex[str(item)]
        except KeyError:
            raise KeyError(f"unknown item {item!r}") from None

    def partial_fit(self, new_interactions, item_vectors=None, **kw) -> "Recommender":
        """Update on new events without a refit (Popularity, ALS; sequential models override)."""
        from .incremental import partial_fit

        return partial_fit(self, new_interactions, item_vectors=item_vectors, **kw)

    def observe(self, user, items) -> None:
        """Append events to a known user's history (used when predicting later events)."""
        u = self.user_index(user)
        extra = np.asarray([self.item_index(i) for i in items], dtype=np.int64)
        self.histories_[u] = np.concatenate([self.histories_[u], extra])

    def use_histories(self, evalset) -> None:
        """Answer later calls from these histories, e.g. train + the validation item once fitted."""
        for u, h in zip(evalset.users, evalset.histories):
            self.histories_[u] = np.asarray(h, dtype=np.int64)

    def score(self, users, items) -> np.ndarray:
        """Scores of the given raw item ids for the given raw user ids: [len(users), len(items)]."""
        uidx = np.asarray([self.user_index(u) for u in users], dtype=np.int64)
        iidx = np.asarray([self.item_index(i) for i in items], dtype=np.int64)
        full = self.score_histories(uidx, [self.histories_[u] for u in uidx])
        return full[:, iidx]

    def recommend(self, users, k: int = 10, exclude_seen: bool = True):
        """Top-k raw item ids and their scores for each raw user id: two [len(users), k] arrays."""
        uidx = np.asarray([self.user_index(u) for u in users], dtype=np.int64)
        hist = [self.histories_[u] for u in uidx]
        scores = self.score_histories(uidx, hist).astype(np.float32, copy=True)
        if exclude_seen:
            for row, h in enumerate(hist):
                scores[row, h] = -np.inf
        k = min(k, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)
        return self.item_ids_[top], np.take_along_axis(scores, top, 1)

    # -- persistence: params as JSON, fitted state by the subclass (pickle by default) ----
    def save(self, path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "model.json").write_text(json.dumps(
            {"class": f"{type(self).__module__}.{type(self).__qualname__}", "params": _jsonable(self.get_params())},
            indent=2))
        self._save_state(path)

    @classmethod
    def load(cls, path) -> "Recommender":
        path = Path(path)
        meta = json.loads((path / "model.json").read_text())
        module, _, qual = meta["class"].rpartition(".")
        klass = getattr(__import__(module, fromlist=[qual]), qual)
        if not issubclass(klass, cls):
            raise TypeError(f"{path} holds a {qual}, not a {cls.__name__}")
        model = klass(**meta["params"])
        model._load_state(path)
        return model

    def _fitted_state(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k.endswith("_") and not k.startswith("__")}

    def _save_state(self, path: Path) -> None:
        with open(path / "state.pkl", "wb") as fh:
            pickle.dump(self._fitted_state(), fh, protocol=pickle.HIGHEST_PROTOCOL)

    def _load_state(self, path: Path) -> None:
        with open(path / "state.pkl", "rb") as fh:
            self.__dict__.update(pickle.load(fh))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def _jsonable(params: dict) -> dict:
    out = {}
    for k, v in params.items():
        if isinstance(v, (str, int, float, bool, type(None), list, tuple, dict)):
            out[k] = v
        else:
            raise TypeError(f"hyper-parameter {k}={v!r} is not JSON-serialisable")
    return out
