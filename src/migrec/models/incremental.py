"""Incremental updates: continue training a fitted model on new events instead of refitting.

`partial_fit(model, new_interactions, ...)` appends the new events to the users' histories
(new users and new items are added), then trains the current weights for a few epochs on

* the windows of the affected users' histories that end in the new events (so every new
  event is a target, predicted from the history before it), mixed with
* a replay sample of older training windows (`replay` x as many), which keeps the
  weights from drifting towards the few users of the update (catastrophic forgetting).

Costs scale with the update, not the log: one update of a week of MovieLens events takes
seconds on a CPU. Classic baselines are supported too: Popularity adds the counts; ALS
re-solves the factors of the items the new events touch (one closed-form ALS item step).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..data.schema import DOMAIN, ITEM, TIME, USER
from .sequential import right_pad, training_windows

log = logging.getLogger(__name__)


# -- input checking ---------------------------------------------------------------------
def coerce_events(new_interactions: pd.DataFrame) -> pd.DataFrame:
    """Check the frame and return it in user-then-time order (file order breaks ties)."""
    if not isinstance(new_interactions, pd.DataFrame):
        raise TypeError(f"new_interactions must be a pandas DataFrame, not {type(new_interactions).__name__}")
    for col in (USER, ITEM):
        if col not in new_interactions.columns:
            raise ValueError(f"new_interactions lacks the column {col!r} (has {list(new_interactions.columns)})")
    if len(new_interactions) == 0:
        raise ValueError("new_interactions is empty: nothing to learn from")
    for col in (USER, ITEM):
        if new_interactions[col].isna().any():
            row = int(np.flatnonzero(new_interactions[col].isna().to_numpy())[0])
            raise ValueError(f"new_interactions has a missing {col!r} in row {row}")
    frame = new_interactions.reset_index(drop=True).copy()
    frame[USER] = frame[USER].astype(str)
    frame[ITEM] = frame[ITEM].astype(str)
    times = frame[TIME].astype(float).fillna(-np.inf).to_numpy() if TIME in frame.columns else np.zeros(len(frame))
    order = np.lexsort((np.arange(len(frame)), times, frame[USER].to_numpy()))
    return frame.iloc[order].reset_index(drop=True)


def vectors_for(item_ids: list, item_vectors, dim: int) -> np.ndarray:
    """Text vectors of `item_ids` from a {item_id: vector} mapping or a DataFrame.

    A DataFrame may carry the ids in an 'item_id' column or as its index; the vector is
    either one 'vector' column of arrays or all remaining numeric columns.
    """
    if item_vectors is None:
        raise ValueError(f"{len(item_ids)} new items need text vectors (item_vectors=...): {item_ids[:5]}")
    if isinstance(item_vectors, pd.DataFrame):
        frame = item_vectors.set_index(ITEM) if ITEM in item_vectors.columns else item_vectors
        frame.index = frame.index.astype(str)
        if "vector" in frame.columns:
            lookup = {k: np.asarray(v, dtype=np.float32) for k, v in frame["vector"].items()}
        else:
            values = frame.select_dtypes("number").to_numpy(dtype=np.float32)
            lookup = dict(zip(frame.index, values))
    elif isinstance(item_vectors, Mapping):
        lookup = {str(k): v for k, v in item_vectors.items()}
    else:
        raise TypeError("item_vectors must be a {item_id: vector} mapping or a DataFrame, "
                        f"not {type(item_vectors).__name__}")
    missing = [i for i in item_ids if i not in lookup]
    if missing:
        raise ValueError(f"no text vector for {len(missing)} new items: {missing[:5]}")
    out = np.stack([np.asarray(lookup[i], dtype=np.float32).ravel() for i in item_ids])
    if out.shape[1] != dim:
        raise ValueError(f"new item vectors have {out.shape[1]} dimensions, the model's have {dim}")
    if not np.isfinite(out).all():
        raise ValueError("new item vectors contain NaN or inf")
    return out


# -- bookkeeping shared by every model ----------------------------------------------------------
def _add_users(model, users) -> list:
    if not hasattr(model, "_uindex"):            # the id maps are not saved: rebuilt after load
        model._uindex = {u: i for i, u in enumerate(model.user_ids_)}
    new = [u for u in dict.fromkeys(users) if u not in model._uindex]
    if new:
        start = len(model.user_ids_)
        model.user_ids_ = np.concatenate([model.user_ids_, np.asarray(new, dtype=object)])
        model.histories_ = list(model.histories_) + [np.zeros(0, dtype=np.int64) for _ in new]
        model._uindex.update({u: start + k for k, u in enumerate(new)})
    return new


def _append_events(model, frame: pd.DataFrame) -> dict:
    """Append the events to the histories; returns {user index: number of new events}."""
    codes = np.asarray([model._iindex[i] for i in frame[ITEM]], dtype=np.int64)
    added = {}
    for user, rows in frame.groupby(USER, sort=False).indices.items():
        u = model._uindex[user]
        model.histories_[u] = np.concatenate([np.asarray(model.histories_[u], dtype=np.int64), codes[rows]])
        added[u] = len(rows)
    return added


def _unknown_items(model, frame: pd.DataFrame) -> list:
    if not hasattr(model, "_iindex"):
        model._iindex = {it: i for i, it in enumerate(model.item_ids_)}
    return [i for i in dict.fromkeys(frame[ITEM]) if i not in model._iindex]


# -- sequential models --------------------------------------------------------------------------
def new_event_windows(histories, added: dict, max_len: int) -> np.ndarray:
    """Right-padded windows (max_len + 1) of each user's history whose targets cover the new events."""
    windows = []
    for u, n_new in added.items():
        h = histories[u]
        end = len(h)
        while end >= 2 and end > len(h) - n_new:   # a window is needed while new targets remain
            windows.append(h[max(0, end - max_len - 1):end])
            end -= max_len
    return right_pad(windows, max_len + 1) if windows else np.zeros((0, max_len + 1), dtype=np.int64)


def _grow_id_table(model, n_new: int) -> None:
    """SASRec: append freshly initialised ID rows (same init as at fit time) for new items."""
    table = model.net_["item_table"]
    old = table.embedding
    grown = nn.Embedding(old.num_embeddings + n_new, old.embedding_dim, padding_idx=0).to(old.weight.device)
    with torch.no_grad():
        nn.init.normal_(grown.weight, std=old.embedding_dim ** -0.5)
        grown.weight[:old.num_embeddings] = old.weight
    table.embedding = grown


def _add_sequential_items(model, new_items: list, item_vectors, frame: pd.DataFrame) -> None:
    if not new_items:
        return
    if hasattr(model, "add_items"):          # InterestModel: text vectors required
        domains = None
        if getattr(model, "domain_adapters", False):
            if DOMAIN not in frame.columns:
                raise ValueError("this model has domain adapters: new_interactions needs a 'domain' column")
            first = frame.drop_duplicates(ITEM).set_index(ITEM)[DOMAIN].astype(str)
            domains = [first[i] for i in new_items]
        model.add_items(new_items, vectors_for(new_items, item_vectors, model.text_vectors_.shape[1]), domains)
        return
    if not hasattr(model.net_["item_table"], "embedding"):
        raise TypeError(f"{type(model).__name__} cannot take new items (no add_items, no ID table)")
    _grow_id_table(model, len(new_items))
    start = len(model.item_ids_)
    model.item_ids_ = np.concatenate([model.item_ids_, np.asarray(new_items, dtype=object)])
    model._iindex.update({it: start + k for k, it in enumerate(new_items)})


def _mark_seen(model) -> np.ndarray:
    """Items with events in any stored history; InterestModel switches on their ID part."""
    n = len(model.item_ids_)
    flat = np.concatenate([np.asarray(h, dtype=np.int64) for h in model.histories_]) if model.histories_ else []
    seen = np.bincount(flat, minlength=n)[:n] > 0
    if hasattr(model, "seen_"):
        seen |= np.asarray(model.seen_) > 0
        model.seen_ = seen.astype(np.float32)
        table = model.net_["item_table"]
        if getattr(table, "ids", None) is not None:
            table.seen = torch.cat([torch.zeros(1), torch.from_numpy(model.seen_)]).to(table.seen)
    return seen


def _softmax_pool(model, seen: np.ndarray) -> None:
    """The negatives pool / excluded columns, as SequentialRecommender._train sets them."""
    pool = np.flatnonzero(seen) if model.softmax_over == "seen" else np.arange(len(seen))
    model._pool = torch.from_numpy(pool + 1).to(model.device_)
    model._excluded = None
    if len(pool) < len(seen):
        model._excluded = torch.zeros(len(seen), device=model.device_)
        model._excluded[np.flatnonzero(~seen)] = -torch.inf


def partial_fit_sequential(model, new_interactions: pd.DataFrame, item_vectors=None, epochs: int = 1,
                           replay: float = 1.0, lr: float | None = None, trainable: str = "all",
                           seed: int | None = None):
    """Continue training a fitted SASRec / InterestModel on new events (see the module doc).

    epochs: passes over (new windows + replay sample). replay: replay windows per new window,
    drawn from the histories as they were before the update (0 = none). lr: defaults to the
    model's lr; a fresh AdamW starts each call (the fit-time optimiser state is not kept).
    trainable: as in fine_tune ("all", "items", "adapter" for InterestModel).
    """
    model._check_fitted()
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, not {epochs}")
    if replay < 0:
        raise ValueError(f"replay must be >= 0, not {replay}")
    started = time.perf_counter()
    frame = coerce_events(new_interactions)
    new_items = _unknown_items(model, frame)
    _add_sequential_items(model, new_items, item_vectors, frame)
    old_histories = list(model.histories_)
    new_users = _add_users(model, frame[USER])
    added = _append_events(model, frame)
    seen = _mark_seen(model)

    # a different (reproducible) stream per update, so successive updates replay different windows
    rng = np.random.default_rng([model.seed, len(getattr(model, "partial_history_", []))] if seed is None else seed)
    fresh = new_event_windows(model.histories_, added, model.max_len)
    old = training_windows(old_histories, model.max_len) if replay > 0 else fresh[:0]
    n_replay = min(len(old), round(replay * len(fresh)))
    windows = np.concatenate([fresh, old[rng.choice(len(old), n_replay, replace=False)]]) if n_replay else fresh

    losses = []
    if len(windows):
        groups = model._trainable(trainable)
        for name, p in model.net_.named_parameters():
            p.requires_grad_(any(name.startswith(g) for g in groups))
        _softmax_pool(model, seen)
        params = [p for p in model.net_.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=model.lr if lr is None else lr, weight_decay=model.weight_decay)
        try:
            for _ in range(epochs):
                losses.append(model._epoch(windows, opt, rng))
        finally:
            for p in model.net_.parameters():
                p.requires_grad_(True)
            model.net_.eval()
    record = {"events": len(frame), "new_users": len(new_users), "new_items": len(new_items),
              "new_windows": len(fresh), "replay_windows": n_replay, "losses": losses,
              "seconds": time.perf_counter() - started}
    model.partial_history_ = list(getattr(model, "partial_history_", [])) + [record]
    log.info("%s partial_fit %s", getattr(model, "name", "model"), record)
    return model


# -- classic baselines --------------------------------------------------------------------------
def _refuse_new_items(model, frame) -> None:
    unknown = _unknown_items(model, frame)
    if unknown:
        raise ValueError(f"{type(model).__name__}.partial_fit cannot add items outside its catalogue: "
                         f"{unknown[:5]} (refit with the grown catalogue)")


def partial_fit_popularity(model, new_interactions: pd.DataFrame, **_):
    model._check_fitted()
    frame = coerce_events(new_interactions)
    _refuse_new_items(model, frame)
    _add_users(model, frame[USER])
    _append_events(model, frame)
    model.counts_ = model.counts_ + np.bincount([model._iindex[i] for i in frame[ITEM]],
                                                minlength=len(model.counts_)).astype(np.float32)
    return model


def partial_fit_als(model, new_interactions: pd.DataFrame, **_):
    """One exact ALS item step for the items the new events touch, from all users' current factors.

    ALS scores a user by re-solving their factors from the history given at prediction
    time, so new users need nothing more; the touched items' factors are re-solved with
    every user who has them, as the ALS item step does (confidence alpha per event).
    """
    model._check_fitted()
    frame = coerce_events(new_interactions)
    _refuse_new_items(model, frame)
    _add_users(model, frame[USER])
    _append_events(model, frame)
    touched = np.unique([model._iindex[i] for i in frame[ITEM]])
    x = model._user_vectors(np.arange(len(model.histories_)), model.histories_)   # current user factors
    holders = {int(i): [] for i in touched}
    for u, h in enumerate(model.histories_):
        for i in np.intersect1d(h, touched):
            holders[int(i)].append(u)
    xtx = x.T @ x
    reg = model.regularization * np.eye(x.shape[1], dtype=np.float32)
    for i, users in holders.items():
        xu = x[users]
        a = xtx + (model.alpha - 1.0) * (xu.T @ xu) + reg
        model.item_factors_[i] = np.linalg.solve(a, model.alpha * xu.sum(axis=0))
    return model


def partial_fit(model, new_interactions: pd.DataFrame, item_vectors=None, **kw):
    """Dispatch to the model's incremental update (sequential models, Popularity, ALS)."""
    from .matrix_factorization import ALS
    from .popularity import Popularity
    from .sequential import SequentialRecommender

    if isinstance(model, SequentialRecommender):
        return partial_fit_sequential(model, new_interactions, item_vectors=item_vectors, **kw)
    if isinstance(model, Popularity):
        return partial_fit_popularity(model, new_interactions)
    if isinstance(model, ALS):
        return partial_fit_als(model, new_interactions)
    raise TypeError(f"{type(model).__name__} has no incremental update; refit it instead")
