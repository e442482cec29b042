"""Replay evaluation: train up to a time T, then walk forward through later periods.

At each step (e.g. one week) the users active in the step who have some history are
recommended for from everything they did before the step; the step's items are the
targets (full ranking over the catalogue as in `evaluator.evaluate`, under its history policy
`repeats`: "exclude" masks the whole history, so a step item the user had before is a miss;
"allow" masks nothing).
Then the step's events are observed and the model is updated by its strategy:

    no-update      weights frozen after the first fit; histories still grow
    incremental    model.partial_fit(step events, histories=<every history before the step>):
                   seconds, not a refit
    full-retrain   a fresh model fitted on every event before the next step
                   (every `retrain_every` steps; frozen in between)

Models hold no user data: the replay keeps every user's history itself (a
`migrec.data.Histories`, raw ids and timestamps) and hands it to the model, so the
strategies score exactly the same inputs.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data.histories import Histories
from ..data.schema import ITEM, TIME, USER, Dataset
from ..data.split import EvalSet, TrainSet
from .evaluator import check_repeats, evaluate

STRATEGIES = ("no-update", "incremental", "full-retrain")


@dataclass
class ReplayResult:
    strategy: str
    steps: list = field(default_factory=list)   # one dict per step: period, cases, metrics, update_seconds
    fit_seconds: float = 0.0                     # the initial fit (shared by the strategies)
    repeats: str = "exclude"                     # the evaluator's history policy that ran

    def summary(self, ks=(10,)) -> dict:
        """Mean of each metric over the steps (each step weighs the same), the case-weighted
        (pooled) mean, the number of cases and the mean update time."""
        scored = [s for s in self.steps if s["cases"]]
        names = [k for k in (scored[0]["metrics"] if scored else {})]
        out = {name: float(np.mean([s["metrics"][name] for s in scored])) for name in names}
        # pooled: every case weighs the same (steps have very different numbers of cases)
        cases = np.asarray([s["cases"] for s in scored], dtype=float)
        out.update({f"{name}:pooled": float(np.dot([s["metrics"][name] for s in scored], cases) / cases.sum())
                    for name in names})
        out["cases"] = int(cases.sum())
        updates = [s["update_seconds"] for s in self.steps if s["update_seconds"] is not None]
        out["update_seconds"] = float(np.mean(updates)) if updates else 0.0
        return out


def time_steps(start: float, end: float, period: float) -> list:
    """Half-open [lo, hi) periods of `period` seconds from `start` until `end` is covered."""
    if period <= 0:
        raise ValueError(f"period must be positive seconds, not {period}")
    if end <= start:
        raise ValueError("no event after the start time: nothing to replay")
    n = int((end - start) // period) + 1          # the last period contains `end` (half-open)
    edges = start + period * np.arange(n + 1)
    return [(float(a), float(b)) for a, b in itertools.pairwise(edges)]


class EventLog:
    """The log coded once against the catalogue, in global time order."""

    def __init__(self, dataset: Dataset):
        inter = dataset.interactions
        if inter[TIME].isna().any():
            raise ValueError(f"{dataset.name}: replay needs a timestamp on every event "
                             f"({int(inter[TIME].isna().sum())} missing)")
        order = np.lexsort((np.arange(len(inter)), inter[TIME].to_numpy(dtype=np.float64)))
        self.frame = inter.iloc[order].reset_index(drop=True)
        self.frame[USER] = self.frame[USER].astype(str)
        self.frame[ITEM] = self.frame[ITEM].astype(str)
        self.item_ids = dataset.catalogue[ITEM].astype(str).to_numpy(dtype=object)
        self._codes = pd.Index(self.item_ids)
        self.items = self.codes(self.frame[ITEM])
        self.times = self.frame[TIME].to_numpy(dtype=np.float64)
        self.catalogue = dataset.catalogue.reset_index(drop=True)

    def codes(self, items) -> np.ndarray:
        """Catalogue indices of raw item ids."""
        codes = self._codes.get_indexer(np.asarray(items, dtype=object)).astype(np.int64)
        if (codes < 0).any():
            raise ValueError(f"events of items not in the catalogue: {list(np.asarray(items)[codes < 0][:5])}")
        return codes

    def trainset(self, before: float, item_vectors=None, hold_out_last: bool = False):
        """TrainSet of the events before `before`; with hold_out_last, the last event of each
        user with 3+ events becomes a validation case (for early stopping)."""
        sel = self.times < before
        users = self.frame[USER].to_numpy()[sel]
        user_ids, uidx = np.unique(users, return_inverse=True)
        order = np.argsort(uidx, kind="stable")   # time order kept within each user
        seqs = np.split(self.items[sel][order], np.cumsum(np.bincount(uidx))[:-1])
        times = np.split(self.times[sel][order], np.cumsum(np.bincount(uidx))[:-1])
        valid = None
        if hold_out_last:
            held = np.flatnonzero([len(s) >= 3 for s in seqs])
            valid = EvalSet(held, [seqs[u][:-1] for u in held], [seqs[u][-1:] for u in held])
            seqs = [s[:-1] if len(s) >= 3 else s for s in seqs]
            times = [t[:-1] if len(t) >= 3 else t for t in times]
        train = TrainSet(user_ids.astype(object), self.item_ids, seqs, self.catalogue, timestamps=times,
                         item_vectors=item_vectors)
        return train, valid

    def histories(self, before: float) -> Histories:
        """Every user's events before `before` (raw ids, timestamps), in time order."""
        return Histories.from_frame(self.frame[self.times < before])


def fit_until(make_model, log: EventLog, before: float, item_vectors=None):
    """A fresh model fitted on the events before `before` (last event per user with 3+ events
    held out for early stopping). The model holds no histories: the caller keeps them."""
    train, valid = log.trainset(before, item_vectors, hold_out_last=True)
    model = make_model()
    model.fit(train, valid if valid is not None and len(valid) else None)
    return model


def replay_evaluate(dataset: Dataset, make_model, start: float, period: float = 7 * 86400.0,
                    strategies=STRATEGIES, retrain_every: int = 1, max_steps: int | None = None,
                    item_vectors=None, partial_fit_kw: dict | None = None, ks=(10,),
                    initial=None, repeats: str = "exclude") -> dict:
    """Replay `dataset` from time `start` in steps of `period` seconds; {strategy: ReplayResult}.

    make_model(): a fresh unfitted model. item_vectors: catalogue text vectors (text models).
    initial: an already fitted model on the events before `start` (else one is fitted); it
    is not changed (every strategy runs on its own `clone()`).
    partial_fit_kw: extra arguments of the incremental strategy's `model.partial_fit(events,
    histories=..., **partial_fit_kw)` (e.g. epochs, replay).
    repeats: the evaluator's history policy ("exclude" or "allow"), recorded in each result.
    """
    check_repeats(repeats)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {list(STRATEGIES)}")
    if retrain_every < 1:
        raise ValueError(f"retrain_every must be >= 1, not {retrain_every}")
    log = EventLog(dataset)
    if not (log.times < start).any():
        raise ValueError("no event before the start time: nothing to train on")
    steps = time_steps(start, float(log.times.max()), period)[:max_steps]
    universe = TrainSet(np.zeros(0, dtype=object), log.item_ids, [], log.catalogue, item_vectors=item_vectors)

    t0 = time.perf_counter()
    base = initial if initial is not None else fit_until(make_model, log, start, item_vectors)
    fit_seconds = time.perf_counter() - t0
    # the first strategy may use a model fitted here; an `initial` model stays the caller's
    models = {s: (base if k == 0 and initial is None else base.clone()) for k, s in enumerate(strategies)}
    results = {s: ReplayResult(s, fit_seconds=fit_seconds, repeats=repeats) for s in strategies}
    history = log.histories(start)     # the replay's own record of every user's events so far

    for number, (lo, hi) in enumerate(steps, start=1):
        sel = (log.times >= lo) & (log.times < hi)
        events = log.frame[sel]
        cases = _cases(events[USER].to_numpy(), log.items[sel], history, log)
        for strategy in strategies:
            model = models[strategy]
            metrics = _score(model, cases, universe, ks, repeats) if cases else {}
            update = None
            if len(events) and number < len(steps):       # the last step's update would never be used
                t = time.perf_counter()
                if strategy == "incremental":
                    # `history` still ends before this step: each new event is predicted from what came before
                    model.partial_fit(events, histories=history, **(partial_fit_kw or {}))
                    update = time.perf_counter() - t
                elif strategy == "full-retrain" and number % retrain_every == 0:
                    models[strategy] = fit_until(make_model, log, hi, item_vectors)
                    update = time.perf_counter() - t
            results[strategy].steps.append({
                "step": number, "start": lo, "end": hi, "events": int(sel.sum()),
                "cases": len(cases[0]) if cases else 0, "metrics": metrics, "update_seconds": update})
        history.extend(events)
    return results


def _cases(users, items, history: Histories, log: EventLog):
    """Users active in the step with prior history: (raw ids, item-index histories, unique step items)."""
    step = {}
    for user, item in zip(users, items):
        step.setdefault(user, []).append(item)
    raw = [u for u in step if len(history.get(u))]
    if not raw:
        return None
    return raw, [log.codes(history[u]) for u in raw], [np.unique(step[u]) for u in raw]


def _score(model, cases, universe: TrainSet, ks, repeats: str = "exclude") -> dict:
    raw, hists, targets = cases
    # models score histories, not users: EvalSet's users are only case positions here
    cases = EvalSet(np.arange(len(raw), dtype=np.int64), hists, targets)
    result = evaluate(model, cases, universe, ks=ks, beyond=False, segments=False, repeats=repeats)
    return {k: float(v) for k, v in result.metrics.items() if k.split("@")[0] in ("NDCG", "HR", "Recall")}
