"""Cleaning steps on the interaction log; each one is counted so nothing vanishes unnoticed.

The catalogue is always kept whole: items that lose all their events stay in it as
cold items (known by text only), which text-based models can still recommend.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from .schema import EVENT, ITEM, TIME, USER, Dataset


@dataclass
class StepReport:
    """What one cleaning step removed, and what was left."""

    step: str
    events_removed: int
    users_removed: int
    items_removed: int  # items that lost all their events (still in the catalogue)
    events_left: int
    users_left: int
    items_left: int


@dataclass
class CleaningReport:
    """Step-by-step counts of a `clean` run, with the sizes before it."""

    events_before: int = 0
    users_before: int = 0
    items_before: int = 0
    steps: list[StepReport] = field(default_factory=list)

    @property
    def events_removed(self) -> int:
        return sum(s.events_removed for s in self.steps)

    @property
    def users_removed(self) -> int:
        return sum(s.users_removed for s in self.steps)

    @property
    def items_removed(self) -> int:
        return sum(s.items_removed for s in self.steps)

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        head = f"{'step':<24}{'-events':>10}{'-users':>9}{'-items':>9}{'events':>11}{'users':>9}{'items':>9}"
        rows = [head, f"{'(before)':<24}{'':>10}{'':>9}{'':>9}"
                      f"{self.events_before:>11}{self.users_before:>9}{self.items_before:>9}"]
        for s in self.steps:
            rows.append(f"{s.step:<24}{s.events_removed:>10}{s.users_removed:>9}{s.items_removed:>9}"
                        f"{s.events_left:>11}{s.users_left:>9}{s.items_left:>9}")
        return "\n".join(rows)


def _sizes(inter: pd.DataFrame) -> tuple[int, int, int]:
    return len(inter), int(inter[USER].nunique()), int(inter[ITEM].nunique())


def _step(name: str, before: pd.DataFrame, after: pd.DataFrame) -> StepReport:
    (e0, u0, i0), (e1, u1, i1) = _sizes(before), _sizes(after)
    return StepReport(name, e0 - e1, u0 - u1, i0 - i1, e1, u1, i1)


def _chronological_rank(inter: pd.DataFrame) -> np.ndarray:
    """Position of each row in time order (ties and missing times keep file order)."""
    t = inter[TIME].to_numpy(dtype=np.float64)
    order = np.lexsort((np.arange(len(inter)), np.where(np.isnan(t), -np.inf, t)))
    if np.isnan(t).all():  # order only: file order is the time order
        order = np.arange(len(inter))
    rank = np.empty(len(inter), dtype=np.int64)
    rank[order] = np.arange(len(inter))
    return rank


def deduplicate(dataset: Dataset, keep: str = "last", by_event: bool = True) -> Dataset:
    """Keep one event per (user, item[, event type]): the latest ("last") or the earliest ("first").

    "Latest" follows timestamps (file order when times tie or are missing); the rows
    kept stay in their original order.
    """
    if keep not in ("first", "last"):
        raise ValueError(f"keep must be 'first' or 'last', not {keep!r}")
    inter = dataset.interactions.reset_index(drop=True)
    keys = [USER, ITEM] + ([EVENT] if by_event else [])
    ranked = inter[keys].assign(_rank=_chronological_rank(inter)).sort_values("_rank", kind="stable")
    dup = ranked.duplicated(keys, keep=keep)
    mask = np.ones(len(inter), dtype=bool)
    mask[ranked.index[dup.to_numpy()]] = False
    return dataset.with_interactions(inter[mask])


def k_core(dataset: Dataset, user_k: int = 5, item_k: int = 5) -> Dataset:
    """Repeatedly drop users with < user_k events and items with < item_k events until
    neither rule removes anything (a fixed point). Counts are events, so deduplicate
    first when repeats should count once."""
    inter = dataset.interactions.reset_index(drop=True)
    while True:
        users = inter[USER].map(inter[USER].value_counts()).to_numpy() >= user_k
        items = inter[ITEM].map(inter[ITEM].value_counts()).to_numpy() >= item_k
        keep = users & items
        if keep.all():
            break
        inter = inter[keep].reset_index(drop=True)
    return dataset.with_interactions(inter)


def min_history(dataset: Dataset, n: int) -> Dataset:
    """Drop users with fewer than `n` events (e.g. 3 for leave-one-out: train, valid, test)."""
    inter = dataset.interactions.reset_index(drop=True)
    counts = inter[USER].map(inter[USER].value_counts()).to_numpy()
    return dataset.with_interactions(inter[counts >= n])


def clean(dataset: Dataset, dedup: bool = True, user_k: int = 0, item_k: int = 0, min_history: int = 0,
          keep: str = "last") -> tuple[Dataset, CleaningReport]:
    """Deduplicate, then k-core (when user_k or item_k > 0), then a minimum history length.

    Returns the cleaned data set (catalogue unchanged) and the per-step counts, which
    are also stored in `meta["cleaning"]`.
    """
    e, u, i = _sizes(dataset.interactions)
    report = CleaningReport(e, u, i)
    current = dataset
    steps = []
    if dedup:
        steps.append((f"deduplicate (keep={keep})", lambda d: deduplicate(d, keep=keep)))
    if user_k > 0 or item_k > 0:
        steps.append((f"k-core (users>={user_k}, items>={item_k})", lambda d: k_core(d, user_k, item_k)))
    if min_history > 0:
        steps.append((f"min history {min_history}", lambda d: _min_history(d, min_history)))
    for name, run in steps:
        cleaned = run(current)
        report.steps.append(_step(name, current.interactions, cleaned.interactions))
        current = cleaned
    if current is dataset:  # never write into the caller's meta
        current = dataset.with_interactions(dataset.interactions)
    current.meta["cleaning"] = report.as_dict()
    return current, report


_min_history = min_history  # `clean` has a parameter of the same name
