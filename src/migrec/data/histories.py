"""Per-user histories, kept outside the models.

A model scores a history; it does not know who the history belongs to. `Histories` is the
small container the command line, the demo, the evaluator's helpers and replay keep the
histories in (the service keeps them in its store): raw user id -> that user's events in
time order, as raw item ids, with optional timestamps.

    hist = Histories.from_frame(dataset.interactions)
    ids, scores = model.recommend_history(hist["42"], k=10)
    hist.append("42", ["1193"], [978300760.0])
    hist.remove("42")                         # forget a user
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from .schema import ITEM, TIME, USER

_EMPTY = np.zeros(0, dtype=object)


class Histories:
    """raw user id -> item ids (oldest first) and, where known, their timestamps."""

    def __init__(self, histories: dict | None = None):
        self._items: dict[str, np.ndarray] = {}
        self._times: dict[str, np.ndarray] = {}
        for user, items in (histories or {}).items():
            self.append(user, items)

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "Histories":
        """From an interactions frame (user_id, item_id[, timestamp]); time order, file order breaks ties."""
        for col in (USER, ITEM):
            if col not in frame.columns:
                raise ValueError(f"the frame lacks the column {col!r} (has {list(frame.columns)})")
        out = cls()
        out.extend(frame)
        return out

    @classmethod
    def from_sequences(cls, user_ids, item_ids, sequences, timestamps=None) -> "Histories":
        """From integer-coded sequences (a TrainSet's user_ids, item_ids, sequences, timestamps)."""
        item_ids = np.asarray(item_ids, dtype=object)
        out = cls()
        for u, user in enumerate(user_ids):
            seq = np.asarray(sequences[u], dtype=np.int64)
            times = None if timestamps is None else timestamps[u]
            out._set(str(user), item_ids[seq], times)
        return out

    @classmethod
    def from_cases(cls, train, evalset) -> "Histories":
        """The histories an evaluation set's cases see (e.g. test: training events + the validation item)."""
        return cls.from_sequences(np.asarray(train.user_ids)[evalset.users], train.item_ids, evalset.histories)

    def copy(self) -> "Histories":
        out = Histories()
        out._items, out._times = dict(self._items), dict(self._times)
        return out

    # -- reading ----------------------------------------------------------------------------------
    def __getitem__(self, user) -> np.ndarray:
        try:
            return self._items[str(user)]
        except KeyError:
            raise KeyError(f"no history for user {user!r}") from None

    def get(self, user, default=None) -> np.ndarray:
        """The user's item ids, or `default` (an empty history unless given) when unknown."""
        return self._items.get(str(user), _EMPTY if default is None else default)

    def times(self, user) -> np.ndarray | None:
        return self._times.get(str(user))

    def __contains__(self, user) -> bool:
        return str(user) in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def users(self) -> list[str]:
        return list(self._items)

    def lengths(self) -> np.ndarray:
        """Number of events per user, in `users()` order."""
        return np.fromiter((len(v) for v in self._items.values()), dtype=np.int64, count=len(self._items))

    @property
    def n_events(self) -> int:
        return int(self.lengths().sum())

    def to_frame(self) -> pd.DataFrame:
        users = np.repeat(np.asarray(self.users(), dtype=object), self.lengths())
        items = np.concatenate(list(self._items.values())) if self._items else _EMPTY
        frame = pd.DataFrame({USER: users, ITEM: items})
        if self._times and len(self._times) == len(self._items):
            frame[TIME] = np.concatenate([self._times[u] for u in self._items])
        return frame

    # -- writing ----------------------------------------------------------------------------------
    def _set(self, user: str, items, times=None) -> None:
        self._items[user] = np.asarray(items, dtype=object).astype(str).astype(object)
        if times is not None:
            times = np.asarray(times, dtype=np.float64)
            if len(times) != len(items):
                raise ValueError(f"user {user!r}: {len(items)} items but {len(times)} timestamps")
            self._times[user] = times

    def append(self, user, items: Iterable, times: Iterable | None = None) -> None:
        """Add events (oldest first) at the end of a user's history; a new user is created."""
        user = str(user)
        if isinstance(items, (str, bytes)):
            raise TypeError(f"items must be a sequence of item ids, not one string ({items!r}): wrap it in a list")
        items = np.asarray(list(items), dtype=object).astype(str).astype(object)
        if times is not None:
            times = np.asarray(list(times), dtype=np.float64)
            if len(times) != len(items):
                raise ValueError(f"user {user!r}: {len(items)} items but {len(times)} timestamps")
        if user not in self._items:
            self._set(user, items, times)
            return
        had_times = user in self._times
        self._items[user] = np.concatenate([self._items[user], items])
        if had_times or times is not None:
            old = self._times.get(user, np.full(len(self._items[user]) - len(items), np.nan))
            new = times if times is not None else np.full(len(items), np.nan)
            self._times[user] = np.concatenate([old, new])

    def extend(self, frame: pd.DataFrame) -> dict:
        """Append every event of an interactions frame (time order within each user); {user: events added}."""
        frame = frame.reset_index(drop=True)
        users = frame[USER].astype(str).to_numpy()
        items = frame[ITEM].astype(str).to_numpy()
        times = frame[TIME].astype(float).to_numpy() if TIME in frame.columns else None
        key = np.zeros(len(frame)) if times is None else np.where(np.isnan(times), -np.inf, times)
        order = np.lexsort((np.arange(len(frame)), key, users))
        users, items = users[order], items[order]
        times = None if times is None else times[order]
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, int)
        ends = np.r_[starts[1:], len(users)]
        added = {}
        for lo, hi in zip(starts, ends):
            self.append(users[lo], items[lo:hi], None if times is None else times[lo:hi])
            added[users[lo]] = int(hi - lo)
        return added

    def remove(self, user) -> int:
        """Forget a user; returns how many events were removed (0 if unknown)."""
        user = str(user)
        self._times.pop(user, None)
        return len(self._items.pop(user, _EMPTY))

    def __repr__(self) -> str:
        return f"Histories({len(self)} users, {self.n_events} events)"
