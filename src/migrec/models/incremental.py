"""Input checks shared by the models' incremental updates (`partial_fit`) and `add_items`.

Each model family implements its own update (Popularity adds counts, ALS re-solves the
touched items, the sequential models train on the new events' windows plus a replay
sample: models.training); this module only turns what a caller passes into checked,
ordered data.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..data.schema import ITEM, TIME, USER


def new_item_ids(model, item_ids) -> list[str]:
    """`item_ids` as strings, refused when one is already in `model`'s catalogue or repeated (add_items)."""
    item_ids = [str(i) for i in item_ids]
    clash = [i for i, known in zip(item_ids, model.knows(item_ids)) if known]
    if clash or len(set(item_ids)) < len(item_ids):
        raise ValueError(f"items already known or repeated: {(clash or item_ids)[:5]}")
    return item_ids


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
    """Text vectors of `item_ids` from an array (rows in item_ids order), a {item_id: vector}
    mapping or a DataFrame.

    A DataFrame may carry the ids in an 'item_id' column or as its index; the vector is
    either one 'vector' column of arrays or all remaining numeric columns.
    """
    if item_vectors is None:
        raise ValueError(f"{len(item_ids)} new items need text vectors (item_vectors=...): {item_ids[:5]}")
    if isinstance(item_vectors, np.ndarray):
        if item_vectors.ndim != 2 or len(item_vectors) != len(item_ids):
            raise ValueError(f"item_vectors has shape {item_vectors.shape} for {len(item_ids)} new items")
        lookup = dict(zip(item_ids, item_vectors))
    elif isinstance(item_vectors, pd.DataFrame):
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
