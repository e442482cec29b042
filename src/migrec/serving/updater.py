"""The feedback loop: learn from the events since the live version, check, keep or reject.

One run: the events after the live version's high-water mark (`events_upto`) are split into
a held-back set (each of up to `holdout_users` users' newest new event) and the rest. A clone
of the live model takes `partial_fit` on the rest, with every user's history before the update
as context and replay. Live model and candidate are then scored on the held-back events by full
ranking (history items masked, as the evaluator does); the candidate is saved as a new version
and goes live only when its NDCG@10 is not below the live model's minus `tolerance`. The live
model keeps serving throughout: the service swaps the reference once the new version is loaded.
Every version stays on disk with its metrics, so `rollback` can go back to any of them.
Version paths in the store are relative to the data directory, so the directory can move.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..evaluation import metrics as M

log = logging.getLogger(__name__)

SIDE_FILES = ("catalogue.parquet", "serving.json", "data.json")   # copied from version to version


@dataclass
class UpdatePolicy:
    min_events: int = 50          # fewer new events: nothing to learn from yet ("skipped")
    holdout_users: int = 500      # users whose newest new event is held back for the check
    tolerance: float = 0.0        # the candidate may be this much below the live NDCG@10 and still win
    epochs: int = 1
    replay: float = 1.0
    lr: float | None = None       # partial_fit's learning rate (None: the model's own)
    seed: int = 0


def next_version_path(store, versions_dir) -> Path:
    """The folder of the next version: versions_dir/v0001, v0002, ... after the store's highest."""
    taken = [v["version"] for v in store.versions()]
    return Path(versions_dir) / f"v{max(taken, default=0) + 1:04d}"


def holdout_split(events, max_users: int, seed: int):
    """(train, held): the newest new event of up to `max_users` users (drawn with `seed`) is
    held back, so the check asks what each of them did next."""
    newest = events.groupby("user_id", sort=False)["seq"].idxmax()
    chosen = newest.sample(n=min(max_users, len(newest)), random_state=seed) if len(newest) else newest
    held = events.loc[chosen.to_numpy()]
    return events.drop(index=held.index), held


def ranking_metrics(model, histories: list, targets: list) -> dict:
    """NDCG@10 and HR@10 of raw-id targets after raw-id histories (history items masked)."""
    if not targets:
        return {"NDCG@10": float("nan"), "HR@10": float("nan"), "cases": 0}
    index = [model.item_index(h, "drop") for h in histories]
    scores = np.array(model.score_histories(index), dtype=np.float64, copy=True)
    for row, h in enumerate(index):
        scores[row, h] = -np.inf
    target = model.item_index(targets, "raise")
    for row, t in enumerate(target):
        if t in index[row]:                  # a repeat is a miss (repeats="exclude")
            scores[row, t] = -np.inf
    ranks = M.target_ranks(scores, [[int(t)] for t in target])
    out = M.accuracy_metrics(ranks, ks=(10,))
    return {"NDCG@10": out["NDCG@10"], "HR@10": out["HR@10"], "cases": len(targets)}


class UpdateBusy(RuntimeError):
    """An update was asked for while another update or a retrain runs (Updater.run(wait=False))."""


class Updater:
    """Runs update cycles against a store; one at a time (a lock), from any thread."""

    def __init__(self, store, versions_dir, policy: UpdatePolicy | None = None):
        self.store, self.versions_dir = store, Path(versions_dir)
        self.policy = policy or UpdatePolicy()
        self.lock = threading.Lock()

    def next_path(self) -> Path:
        return next_version_path(self.store, self.versions_dir)

    def run(self, live, wait: bool = True) -> dict:
        """One cycle against `live` (the serving LiveModel). Returns the update record; when the
        candidate won, record["version"] is the new live version (already marked live in the store).
        wait=False: raise UpdateBusy at once when an update or retrain holds the lock."""
        if not self.lock.acquire(blocking=wait):
            raise UpdateBusy("an update or retrain is already running")
        try:
            return self._run(live)
        finally:
            self.lock.release()

    def _run(self, live) -> dict:
        p, started = self.policy, time.time()
        current = self.store.live_version()
        if current is None:
            raise RuntimeError("the store has no live model version to update")
        after, upto = int(current["events_upto"]), self.store.last_seq()
        record = {"started": started, "from_version": current["version"], "to_version": None, "events": 0,
                  "metrics_before": {}, "metrics_after": {}, "decision": "skipped", "note": ""}
        events = self.store.events(after_seq=after, upto_seq=upto)
        record["events"] = len(events)
        if len(events) < p.min_events:
            record["note"] = f"{len(events)} new events, fewer than min_events={p.min_events}"
            return self._finish(record)
        if not _can_update(live.model):
            record.update(decision="unsupported", note=f"{live.model.name} has no partial_fit")
            return self._finish(record)
        train, held = holdout_split(events.reset_index(drop=True), p.holdout_users, p.seed)
        if train.empty:
            record["note"] = "every new event was held back for the check: nothing left to train on"
            return self._finish(record)
        before = self.store.histories(upto_seq=after)
        candidate = live.model.clone()
        candidate.partial_fit(train[["user_id", "item_id", "timestamp", "domain"]], histories=before,
                              epochs=p.epochs, replay=p.replay, lr=p.lr, seed=p.seed)
        # the check: each held-back event after everything its user did before it
        everything = self.store.histories(upto_seq=upto, users=list(held["user_id"].unique()))
        hists, targets = [], []
        for user in held["user_id"]:
            items = list(everything.get(user, []))     # the held-back event is the user's newest
            hists.append(items[:-1])
            targets.append(items[-1])
        record["metrics_before"] = ranking_metrics(live.model, hists, targets)
        record["metrics_after"] = ranking_metrics(candidate, hists, targets)
        old, new = record["metrics_before"]["NDCG@10"], record["metrics_after"]["NDCG@10"]
        wins = bool(np.isnan(old) or new >= old - p.tolerance)
        path = self.next_path()
        candidate.save(path)
        for name in SIDE_FILES:
            source = Path(live.path) / name
            if source.exists():
                shutil.copy2(source, path / name)
        version = self.store.add_version(f"{self.versions_dir.name}/{path.name}", events_upto=upto, metrics=record["metrics_after"],
                                         parent=current["version"], status="candidate",
                                         note=f"partial_fit on {len(train)} events, {len(held)} held back")
        if wins:
            self.store.set_live(version)
            record["decision"] = "swapped"
        else:
            self.store.set_status(version, "rejected")
            record["decision"] = "rejected"
        record["to_version"] = version
        return self._finish(record)

    def _finish(self, record: dict) -> dict:
        record["seconds"] = time.time() - record["started"]
        record["id"] = self.store.add_update({k: v for k, v in record.items() if k != "id"})
        log.info("update %s", {k: record[k] for k in ("from_version", "to_version", "events", "decision")})
        return record


def _can_update(model) -> bool:
    """Whether the model (and the model a blend wraps) overrides the base `partial_fit`, which refuses."""
    from ..models.base import Recommender

    return all(type(m).partial_fit is not Recommender.partial_fit for m in (model, getattr(model, "base", model))
               if m is not None)
