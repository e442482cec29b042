"""Domain bookkeeping for transfer: which items belong where, and a transfer task's data.

A `TransferTask` fixes one item universe (every domain's catalogue) for all regimes, so
a model pre-trained on the source can be fine-tuned on the target and every regime is
evaluated on the same cases, ranking among the target domain's items only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from ..data.schema import DOMAIN, ITEM, USER, DataError, Dataset
from ..data.split import EvalSet, TrainSet
from ..models.base import Recommender


def item_domains(train: TrainSet) -> np.ndarray:
    """Domain name of every item index (the catalogue is aligned with train.item_ids)."""
    return train.catalogue[DOMAIN].astype(str).to_numpy()


def restrict(train: TrainSet, keep: np.ndarray) -> TrainSet:
    """The same users and item universe, each sequence cut to the items where keep[item]."""
    seqs = [s[keep[s]] for s in train.sequences]
    times = None if train.timestamps is None else [t[keep[s]] for s, t in zip(train.sequences, train.timestamps)]
    return TrainSet(train.user_ids, train.item_ids, seqs, train.catalogue, times, train.item_vectors,
                    train.encoder, train.item_states)


def users_with(train: TrainSet, keep: np.ndarray) -> TrainSet:
    """Whole (mixed-domain) sequences of the users with at least one item where keep[item]."""
    seqs = [s if keep[s].any() else s[:0] for s in train.sequences]
    return TrainSet(train.user_ids, train.item_ids, seqs, train.catalogue, None, train.item_vectors, train.encoder,
                    train.item_states)


def restrict_histories(evalset: EvalSet, keep: np.ndarray) -> EvalSet:
    return EvalSet(evalset.users, [h[keep[h]] for h in evalset.histories], evalset.targets)


def same_universe(model: Recommender, item_ids, what: str) -> None:
    """Refuse training data whose items are not `model`'s (a wrapper's universe is its inner model's)."""
    n = model.n_items                     # RuntimeError if that model is not fitted
    ids = [str(i) for i in item_ids]
    if len(ids) != n or ids != list(model.item_ids_):
        raise ValueError(f"the training data's {len(ids)} items are not the {n} items of "
                         f"{what} ({type(model).__name__}): fit it on data over the same catalogue")


class DomainView(Recommender):
    """A fitted model that only ever sees the history items where keep[item] (e.g. target-only).

    Its item universe is the inner model's; saved, the inner model is a nested folder
    and `keep` an array.
    """

    registry = "domain-view"

    def __init__(self, model: Recommender, keep: np.ndarray, name: str | None = None):
        self.model, self.keep = model, np.asarray(keep, dtype=bool)
        self.name = name or getattr(model, "name", "model")

    @property
    def item_ids_(self) -> np.ndarray:
        return self.model.item_ids_

    def _set_items(self, item_ids) -> None:
        same_universe(self.model, item_ids, "the inner model")

    def encoder_info(self) -> dict | None:
        return self.model.encoder_info()

    def fit(self, train, valid=None):
        if len(self.keep) != train.n_items:
            raise ValueError(f"keep has {len(self.keep)} entries for {train.n_items} items")
        self.model.fit(restrict(train, self.keep), None if valid is None else restrict_histories(valid, self.keep))
        self._summarise(train)
        return self

    def score_histories(self, histories):
        return self.model.score_histories([np.asarray(h)[self.keep[np.asarray(h, dtype=np.int64)]]
                                           for h in histories])


@dataclass
class TransferTask:
    """Everything every regime shares: data, cases and the target domain's candidates."""

    name: str
    train: TrainSet            # training sequences over the whole universe (held-out users: empty)
    valid: EvalSet             # cases whose target is a target-domain item; mixed histories
    test: EvalSet
    source: list               # source domain names
    target: str                # target domain name
    cold_items: np.ndarray     # items (of every domain) removed from all training data: known by text only
    protocol: str = ""
    notes: dict = field(default_factory=dict)

    # Cached: the masks are read once per evaluation case, and the catalogue never changes.
    @cached_property
    def domains(self) -> np.ndarray:
        return item_domains(self.train)

    @cached_property
    def target_mask(self) -> np.ndarray:
        return self.domains == self.target

    @cached_property
    def source_mask(self) -> np.ndarray:
        return np.isin(self.domains, self.source)

    @property
    def candidates(self) -> np.ndarray:
        return np.flatnonzero(self.target_mask)

    @cached_property
    def cold_mask(self) -> np.ndarray:
        """[n_items] True for the items held out of all training data."""
        cold = np.zeros(self.train.n_items, dtype=bool)
        cold[self.cold_items] = True
        return cold

    def cold_item_events(self, evalset: EvalSet | None = None) -> EvalSet:
        """More cold-item cases from the same users: every event of a case (history or its first target) whose
        item is a cold target-domain item becomes a case, the events before it its history (cases
        with no event before are left out). Each case keeps its user; a user may give several."""
        evalset = self.test if evalset is None else evalset
        cold = self.cold_mask & self.target_mask
        users, histories, targets = [], [], []
        for user, h, t in zip(evalset.users, evalset.histories, evalset.targets):
            events = np.concatenate([np.asarray(h, dtype=np.int64), np.asarray(t, dtype=np.int64)[:1]])
            for j in np.flatnonzero(cold[events]):
                if j > 0:
                    users.append(user)
                    histories.append(events[:j])
                    targets.append(events[j:j + 1])
        return EvalSet(np.asarray(users, dtype=np.int64), histories, targets)

    def cold_users(self, evalset: EvalSet | None = None) -> EvalSet:
        """The same cases with every target-domain event removed from the history (source history only)."""
        return restrict_histories(self.test if evalset is None else evalset, ~self.target_mask)

    def target_events(self, evalset: EvalSet | None = None) -> np.ndarray:
        """Number of target-domain events in each case's history."""
        evalset = self.test if evalset is None else evalset
        return np.array([int(self.target_mask[h].sum()) for h in evalset.histories])

    def cold_item_cases(self, evalset: EvalSet | None = None) -> np.ndarray:
        evalset = self.test if evalset is None else evalset
        return np.array([bool(self.cold_mask[np.asarray(t)].any()) for t in evalset.targets])


def make_task(dataset: Dataset, target: str, source: list | None = None, cold_item_share: float = 0.1,
              seed: int = 0, name: str | None = None, extra_valid: int = 0) -> TransferTask:
    """Build a transfer task from a multi-domain data set.

    Held-out users (``dataset.meta["heldout_users"]`` with "valid"/"test" lists, as the
    Food-Kitchen loader gives) never train. Their last event is the target and the rest
    the history; the cases whose target is in `target` are the task's cases. If none
    is, leave-one-out within the target domain over the other users: each user's last
    target event is the test target, the one before it the validation target, and
    training keeps only what came before the validation target.

    cold_item_share: this share of each domain's items (uniformly drawn) is removed from
    all training sequences; test cases whose target is one of them measure cold-item quality.
    extra_valid: with held-out users, this many training users active in two or more domains
    (drawn with `seed`, whatever the target) give their last event to validation: it leaves their
    training sequence, and where it is a target-domain item it becomes one more validation case
    (the events before it the history). Validation then has more cases than the held-out list
    alone, and the training data stay the same for every target, so directions share models.
    """
    domains = sorted(dataset.catalogue[DOMAIN].astype(str).unique())
    if target not in domains:
        raise ValueError(f"target domain {target!r} is not in the data set's domains {domains}")
    source = [d for d in domains if d != target] if source is None else list(source)
    unknown = sorted(set(source) - set(domains))
    if unknown or target in source:
        raise ValueError(f"bad source domains {source} (domains: {domains}, target: {target!r})")
    user_ids, item_ids, seqs = _coded_sequences(dataset)
    dom = dataset.catalogue[DOMAIN].astype(str).to_numpy()
    is_target = dom == target
    # The same share of every domain's items is held out, so the training data do not
    # depend on which domain is the target: both directions of a pair share models.
    rng = np.random.default_rng(seed)
    cold = np.sort(np.concatenate([rng.choice(np.flatnonzero(dom == d), replace=False,
                                              size=int(round(cold_item_share * (dom == d).sum())))
                                   for d in domains]))
    target_items = np.flatnonzero(is_target)
    heldout = dataset.meta.get("heldout_users") or {}
    train_seqs, valid, test, protocol = _heldout_cases(seqs, user_ids, heldout, is_target)
    if len(valid) + len(test) == 0:   # no held-out case ends in the target domain
        if extra_valid:
            raise ValueError("extra_valid needs held-out users (dataset.meta['heldout_users']); with "
                             "leave-one-out every user already gives a validation case")
        train_seqs, valid, test, protocol = _leave_one_out_cases(train_seqs, is_target)
    elif extra_valid:
        train_seqs, valid, note = _extra_valid_cases(train_seqs, valid, dom, is_target, extra_valid, seed)
        protocol += note
    removed = np.zeros(len(item_ids), dtype=bool)
    removed[cold] = True
    train_seqs = [s[~removed[s]] for s in train_seqs]
    train = TrainSet(user_ids, item_ids, train_seqs, dataset.catalogue.reset_index(drop=True))
    protocol += (f"; {cold_item_share:.0%} of every domain's items held out of all training data "
                 f"(cold items: {int(is_target[cold].sum())} {target} items); ranking among the "
                 f"{len(target_items)} {target} items")
    return TransferTask(name or f"{'+'.join(source)}-to-{target}", train, valid, test, source, target, cold,
                        protocol)


def _coded_sequences(dataset: Dataset):
    """(user ids, item ids = catalogue order, per-user item-index sequences in time order)."""
    inter = dataset.chronological()
    item_ids = dataset.catalogue[ITEM].to_numpy(dtype=object)
    iidx = pd.Index(item_ids).get_indexer(inter[ITEM])
    if (iidx < 0).any():
        raise DataError("item in the log is not in the catalogue", file=dataset.name, field=ITEM)
    user_ids, uidx = np.unique(inter[USER].to_numpy(dtype=str), return_inverse=True)
    order = np.argsort(uidx, kind="stable")
    counts = np.bincount(uidx, minlength=len(user_ids))
    seqs = np.split(iidx.astype(np.int64)[order], np.cumsum(counts)[:-1])
    return user_ids.astype(object), item_ids, seqs


def _heldout_cases(seqs, user_ids, heldout, is_target):
    index = {u: i for i, u in enumerate(user_ids)}
    out = {}
    held = np.zeros(len(user_ids), dtype=bool)
    for part in ("valid", "test"):
        users = [index[u] for u in heldout.get(part, []) if u in index]
        held[users] = True
        users = [u for u in users if len(seqs[u]) >= 2 and is_target[seqs[u][-1]]]
        out[part] = EvalSet(np.asarray(users, dtype=np.int64), [seqs[u][:-1] for u in users],
                            [seqs[u][-1:] for u in users])
    train_seqs = [s[:0] if h else s for s, h in zip(seqs, held)]   # held-out users never train
    protocol = ("held-out users (the data set's valid/test lists): last event = target, the rest = history; "
                "cases whose target is in the target domain")
    return train_seqs, out["valid"], out["test"], protocol


def _extra_valid_cases(seqs, valid: EvalSet, dom: np.ndarray, is_target: np.ndarray, n: int, seed: int):
    """n training users with events in two or more domains give up their last event (see make_task)."""
    if n < 0:
        raise ValueError(f"extra_valid must be >= 0, got {n}")
    eligible = np.flatnonzero([len(s) >= 2 and len(np.unique(dom[s])) >= 2 for s in seqs])
    if n > len(eligible):
        raise ValueError(f"extra_valid={n}, but only {len(eligible)} training users have events in two or more "
                         "domains")
    drawn = np.sort(np.random.default_rng([seed, 1]).choice(eligible, size=n, replace=False))
    seqs = list(seqs)
    users, histories, targets = list(valid.users), list(valid.histories), list(valid.targets)
    for u in drawn:
        s = seqs[u]
        seqs[u] = s[:-1]
        if is_target[s[-1]]:
            users.append(u)
            histories.append(s[:-1])
            targets.append(s[-1:])
    added = len(users) - len(valid)
    note = (f"; plus {added} validation cases from {n} training users with events in two or more domains (drawn "
            f"with the seed, whatever the target): each one's last event left training, and is a case where it "
            f"is a target-domain item ({len(valid)} held-out and {added} such validation cases)")
    return seqs, EvalSet(np.asarray(users, dtype=np.int64), histories, targets), note


def _leave_one_out_cases(seqs, is_target):
    train_seqs, cases = [], {"valid": ([], [], []), "test": ([], [], [])}
    for u, s in enumerate(seqs):
        pos = np.flatnonzero(is_target[s])
        if len(pos) < 3:   # needs a training event, a validation target and a test target
            train_seqs.append(s)
            continue
        v, t = pos[-2], pos[-1]
        train_seqs.append(s[:v])
        for part, cut in (("valid", v), ("test", t)):
            cases[part][0].append(u)
            cases[part][1].append(s[:cut])
            cases[part][2].append(s[cut:cut + 1])
    valid, test = (EvalSet(np.asarray(c[0], dtype=np.int64), c[1], c[2]) for c in cases.values())
    protocol = "leave-one-out within the target domain (last target event = test, the one before = valid)"
    return train_seqs, valid, test, protocol
