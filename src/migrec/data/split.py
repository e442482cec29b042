"""Chronological splits into the integer-coded form every model trains on.

The item universe is the whole catalogue (not only the items seen in training), so
text-only items that nobody has clicked yet can be scored and recommended.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .schema import ITEM, TIME, USER, Dataset, DataError


@dataclass
class TrainSet:
    """Training data: per-user chronological item-index sequences over a fixed item universe."""

    user_ids: np.ndarray          # str, index -> raw user id
    item_ids: np.ndarray          # str, index -> raw item id (= catalogue order)
    sequences: list               # list[np.ndarray[int64]] per user index, oldest first
    catalogue: pd.DataFrame       # aligned with item_ids
    timestamps: list | None = None  # list[np.ndarray[float64]] aligned with sequences
    item_vectors: np.ndarray | None = None  # [n_items, d] text vectors, set by an encoder
    encoder: str | None = None    # model id of the encoder that made item_vectors
    # the sentence model's lower-layer token states (encoders.tuning.LowerStates), for a model that
    # fine-tunes its top layers (InterestModel(text_layers=k)); set by pipeline.attach_item_states
    item_states: object | None = None

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def user_index(self) -> dict:
        return {u: i for i, u in enumerate(self.user_ids)}

    def item_index(self) -> dict:
        return {it: i for i, it in enumerate(self.item_ids)}

    def csr(self, binary: bool = True) -> sp.csr_matrix:
        """User x item matrix of training events (repeats counted unless binary)."""
        # built as CSR directly (no COO row array), with 32-bit indices where they fit: at millions of
        # events the matrix is most of a factorisation model's fit memory
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum([len(s) for s in self.sequences], out=indptr[1:])
        index = np.int32 if max(indptr[-1], self.n_items) < np.iinfo(np.int32).max else np.int64
        cols = (np.concatenate(self.sequences).astype(index, copy=False) if self.sequences
                else np.array([], dtype=index))
        mat = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), cols, indptr.astype(index)),
                            shape=(self.n_users, self.n_items))
        mat.sum_duplicates()
        if binary:
            mat.data[:] = 1.0
        return mat

    def item_counts(self) -> np.ndarray:
        cols = np.concatenate(self.sequences) if self.sequences else np.array([], dtype=np.int64)
        return np.bincount(cols, minlength=self.n_items)


@dataclass
class EvalSet:
    """Evaluation cases: for each user index, the history the model may see and the targets."""

    users: np.ndarray   # int user indices
    histories: list     # list[np.ndarray[int]] the input the model sees (and the items excluded from ranking)
    targets: list       # list[np.ndarray[int]] ground-truth items (one for leave-one-out)

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, mask) -> "EvalSet":
        idx = np.flatnonzero(np.asarray(mask))
        return EvalSet(self.users[idx], [self.histories[i] for i in idx], [self.targets[i] for i in idx])


@dataclass
class Split:
    train: TrainSet
    valid: EvalSet
    test: EvalSet
    name: str = "split"
    protocol: str = ""


def _coded(dataset: Dataset):
    inter = dataset.chronological()
    item_ids = dataset.catalogue[ITEM].to_numpy(dtype=object)
    item_pos = pd.Index(item_ids)
    iidx = item_pos.get_indexer(inter[ITEM])
    if (iidx < 0).any():
        raise DataError("item in the log is not in the catalogue", file=dataset.name, field=ITEM)
    user_ids, uidx = np.unique(inter[USER].to_numpy(dtype=str), return_inverse=True)
    return inter, user_ids.astype(object), item_ids, uidx, iidx.astype(np.int64)


def _group(uidx: np.ndarray, values: np.ndarray, n_users: int) -> list:
    """Split `values` (already in user-then-time order) into one array per user index."""
    order = np.argsort(uidx, kind="stable")
    counts = np.bincount(uidx, minlength=n_users)
    return np.split(values[order], np.cumsum(counts)[:-1])


def leave_one_out(dataset: Dataset, min_history: int = 3) -> Split:
    """Last event of each user = test, second-last = valid, the rest = train.

    Users with fewer than `min_history` events are left out (and counted in
    `split.protocol`), since they cannot give both a training item and two targets.
    The test input history includes the validation item (standard sequential protocol).
    """
    if min_history < 3:
        raise ValueError("leave-one-out needs at least 3 events per user (train, valid, test)")
    inter, user_ids, item_ids, uidx, iidx = _coded(dataset)
    seqs = _group(uidx, iidx, len(user_ids))
    times = _group(uidx, inter[TIME].to_numpy(dtype=np.float64), len(user_ids))
    keep = np.array([len(s) >= min_history for s in seqs], dtype=bool)
    dropped = int((~keep).sum())
    user_ids = user_ids[keep]
    seqs = [s for s, k in zip(seqs, keep) if k]
    times = [t for t, k in zip(times, keep) if k]
    train = TrainSet(user_ids, item_ids, [s[:-2] for s in seqs], dataset.catalogue.reset_index(drop=True),
                     timestamps=[t[:-2] for t in times])
    users = np.arange(len(user_ids))
    valid = EvalSet(users, [s[:-2] for s in seqs], [s[-2:-1] for s in seqs])
    test = EvalSet(users, [s[:-1] for s in seqs], [s[-1:] for s in seqs])
    return Split(train, valid, test, name=dataset.name,
                 protocol=f"leave-one-out (last=test, second-last=valid), users with <{min_history} events "
                          f"left out: {dropped}")


def global_time_split(dataset: Dataset, valid_frac: float = 0.1, test_frac: float = 0.1) -> Split:
    """Cut the whole log at two global time points: events after a cut are targets.

    Each user's evaluation history is everything they did before the cut, so no
    event from the future of the cut is ever seen in training.
    """
    inter, user_ids, item_ids, uidx, iidx = _coded(dataset)
    t = inter[TIME].to_numpy(dtype=np.float64)
    if np.isnan(t).any():
        raise DataError("a global time split needs a timestamp on every event", file=dataset.name, field=TIME)
    t_valid, t_test = np.quantile(t, [1 - valid_frac - test_frac, 1 - test_frac])
    n = len(user_ids)
    seqs, times = _group(uidx, iidx, n), _group(uidx, t, n)
    train_seqs = [s[tt < t_valid] for s, tt in zip(seqs, times)]
    train = TrainSet(user_ids, item_ids, train_seqs, dataset.catalogue.reset_index(drop=True),
                     timestamps=[tt[tt < t_valid] for tt in times])

    def cases(lo, hi):
        users, hist, targ = [], [], []
        for u, (s, tt) in enumerate(zip(seqs, times)):
            before, window = s[tt < lo], s[(tt >= lo) & (tt < hi)]
            if len(before) and len(window):
                users.append(u)
                hist.append(before)
                targ.append(np.unique(window))
        return EvalSet(np.asarray(users, dtype=np.int64), hist, targ)

    return Split(train, cases(t_valid, t_test), cases(t_test, np.inf), name=dataset.name,
                 protocol=f"global time split at t={t_valid:.0f} (valid) and t={t_test:.0f} (test)")

