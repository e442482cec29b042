"""Per-user interest profiles: histories in time order, timelines of topic shares, and
long-/short-term profiles in topic space and in item-vector space.

A profile is a weighted mean of the rows (topic shares or item vectors) of the user's
events. Long-term: every event weighs the same. Short-term: exponential decay, the newest
event weighs 1 and one `half_life` of events earlier weighs 1/2.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.schema import ITEM, TIME, USER


@dataclass
class History:
    """One user's events, oldest first: catalogue positions and timestamps (NaN if unknown)."""

    user: str
    items: np.ndarray
    timestamps: np.ndarray

    def __len__(self) -> int:
        return len(self.items)


def user_histories(interactions: pd.DataFrame, catalogue: pd.DataFrame, min_events: int = 1,
                   users=None) -> dict[str, History]:
    """Histories keyed by raw user id, sorted by time (stable: ties keep file order)."""
    for col in (USER, ITEM, TIME):
        if col not in interactions.columns:
            raise ValueError(f"interactions have no {col!r} column")
    position = pd.Series(np.arange(len(catalogue)), index=catalogue[ITEM].astype(str))
    log = interactions
    if users is not None:
        log = log[log[USER].isin([str(u) for u in users])]
    log = log.assign(_pos=np.arange(len(log)), _item=position.reindex(log[ITEM].astype(str)).to_numpy())
    unknown = log["_item"].isna()
    if unknown.any():
        raise ValueError(f"{int(unknown.sum())} events name items missing from the catalogue, "
                         f"e.g. {log.loc[unknown, ITEM].iloc[0]!r}")
    log = log.sort_values([USER, TIME, "_pos"], kind="stable", na_position="last")
    out = {}
    for user, frame in log.groupby(USER, sort=False):
        if len(frame) >= min_events:
            out[str(user)] = History(str(user), frame["_item"].to_numpy(dtype=int), frame[TIME].to_numpy(float))
    return out


def decay_weights(n: int, half_life: float | None) -> np.ndarray:
    """Weights of n events (oldest first) summing to one; half_life None or inf = uniform."""
    if n < 1:
        raise ValueError("need at least one event")
    if half_life is None or np.isinf(half_life):
        return np.full(n, 1.0 / n)
    if half_life <= 0:
        raise ValueError(f"half_life must be positive; got {half_life}")
    w = 0.5 ** (np.arange(n - 1, -1, -1) / half_life)
    return w / w.sum()


def profile(rows: np.ndarray, half_life: float | None = None) -> np.ndarray:
    """Weighted mean of the event rows; topic-share rows give a distribution summing to one."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or len(rows) == 0:
        raise ValueError(f"rows must be a non-empty [n_events, d] array; got shape {rows.shape}")
    return decay_weights(len(rows), half_life) @ rows


def timeline(rows: np.ndarray, timestamps: np.ndarray | None = None, every: int | None = 20,
             freq: str | None = None) -> pd.DataFrame:
    """Interest distribution per period: `every` events per period, or calendar periods of
    `freq` (a pandas period alias: "D", "W", "M") when timestamps are given.

    Returns one row per period (index = period start: event index or date), columns = topics,
    plus `n_events`; each row's shares sum to one.
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"rows must be [n_events, n_topics]; got shape {rows.shape}")
    if freq is not None:
        if timestamps is None or np.isnan(np.asarray(timestamps, float)).any():
            raise ValueError("freq needs a timestamp for every event")
        key = pd.Series(pd.to_datetime(np.asarray(timestamps, float), unit="s")).dt.to_period(freq)
        groups = pd.DataFrame(rows).groupby(key.to_numpy(), sort=True)
        shares = groups.sum()
        n = groups.size()
        index = [str(k) for k in shares.index]
    else:
        if every is None or every < 1:
            raise ValueError("give every >= 1 events per period, or freq with timestamps")
        period = np.arange(len(rows)) // every
        shares = pd.DataFrame(rows).groupby(period).sum()
        n = pd.Series(np.bincount(period)) if len(rows) else pd.Series([], dtype=int)
        index = list(shares.index * every)
    values = shares.to_numpy()
    values = values / np.maximum(values.sum(axis=1, keepdims=True), 1e-12)
    out = pd.DataFrame(values, index=index)
    out["n_events"] = np.asarray(n)
    return out


@dataclass
class InterestProfile:
    """Long- and short-term interests of one user, in topic space and in item-vector space."""

    user: str
    topic_names: list[str]
    long_topics: np.ndarray
    short_topics: np.ndarray
    long_vector: np.ndarray | None = None
    short_vector: np.ndarray | None = None

    def top(self, which: str = "long", k: int = 3) -> list[tuple[str, float]]:
        dist = self.long_topics if which == "long" else self.short_topics
        order = np.argsort(-dist)[:k]
        return [(self.topic_names[i], float(dist[i])) for i in order]


def interest_profile(history: History, topics, item_vectors: np.ndarray | None = None,
                     short_half_life: float = 10.0, long_half_life: float | None = None) -> InterestProfile:
    """Profiles of one user from their history and a TopicSpace (and optional item vectors)."""
    if len(history) == 0:
        raise ValueError(f"user {history.user} has no events")
    rows = topics.one_hot(history.items)
    vec_long = vec_short = None
    if item_vectors is not None:
        v = np.asarray(item_vectors)[history.items]
        vec_long, vec_short = profile(v, long_half_life), profile(v, short_half_life)
    return InterestProfile(history.user, list(topics.names), profile(rows, long_half_life),
                           profile(rows, short_half_life), vec_long, vec_short)


def item_factors(histories, n_items: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Collaborative item vectors when no trained model is at hand: truncated SVD of the
    user x item matrix (rows scaled to unit length), items scaled to unit length. Items no
    history touches get a zero vector."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import svds

    histories = list(histories)
    rows = np.concatenate([np.full(len(h.items), i) for i, h in enumerate(histories)])
    cols = np.concatenate([h.items for h in histories])
    m = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(histories), n_items))
    m.data[:] = 1.0                                   # repeated events count once
    m = sp.diags(1.0 / np.sqrt(np.maximum(m.sum(axis=1).A1, 1))) @ m
    if dim >= min(m.shape):
        raise ValueError(f"dim={dim} must be below min(users, items)={min(m.shape)}")
    _, s, vt = svds(m, k=dim, random_state=seed)
    v = vt.T * s
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)
