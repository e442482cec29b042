"""The training loop of the sequential models, apart from the network (nanoGPT's model/train split).

One `SequenceTrainer` serves `fit`, `fine_tune` and `partial_fit`: the model says which
windows to learn from and which weights may move; the trainer runs full- or sampled-softmax
cross-entropy epochs with AdamW, early-stops on validation NDCG@10 and restores the best
weights. The model it trains must not serve while it trains: updates run on a `clone()`.
"""
from __future__ import annotations

import copy
import logging
import time

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from .transformer import right_pad

log = logging.getLogger(__name__)


# -- windows ----------------------------------------------------------------------------------
def training_windows(sequences, max_len: int) -> np.ndarray:
    """Cut each sequence, from its newest end, into windows of max_len+1 (input + shifted target).

    Long histories give several windows instead of only their last max_len events.
    """
    windows = []
    for s in sequences:
        end = len(s)
        while end >= 2:
            start = max(0, end - max_len - 1)
            windows.append(s[start:end])
            end = start + 1 if start > 0 else 0
    return right_pad(windows, max_len + 1)


def new_event_windows(sequences, n_new, max_len: int) -> np.ndarray:
    """Windows (max_len + 1) of each sequence whose targets cover its last n_new[i] events."""
    windows = []
    for h, new in zip(sequences, n_new):
        end = len(h)
        while end >= 2 and end > len(h) - new:   # a window is needed while new targets remain
            windows.append(h[max(0, end - max_len - 1):end])
            end -= max_len
    return right_pad(windows, max_len + 1) if windows else np.zeros((0, max_len + 1), dtype=np.int64)


def replay_windows(histories, n: int, max_len: int, to_index, rng) -> np.ndarray:
    """n windows drawn from a `Histories` container: a user in proportion to their number of
    targets (events after the first), then a uniform end position in that user's history.

    The cost is O(users + n * max_len): nothing is re-windowed, however long the log.
    """
    if n <= 0 or histories is None or len(histories) == 0:
        return np.zeros((0, max_len + 1), dtype=np.int64)
    users = histories.users()
    targets = np.maximum(histories.lengths() - 1, 0).astype(np.float64)
    if targets.sum() == 0:
        return np.zeros((0, max_len + 1), dtype=np.int64)
    picks = rng.choice(len(users), size=n, p=targets / targets.sum())
    windows = []
    for u in picks:
        h = histories[users[u]]
        end = int(rng.integers(2, len(h) + 1))
        idx = to_index(h[max(0, end - max_len - 1):end])
        if len(idx) >= 2:
            windows.append(idx)
    return right_pad(windows, max_len + 1) if windows else np.zeros((0, max_len + 1), dtype=np.int64)


# -- the trainer --------------------------------------------------------------------------------
class SequenceTrainer:
    """Cross-entropy training of a SequentialRecommender's network (see the module doc)."""

    def __init__(self, model):
        self.model = model
        self.pool = None        # table indices negatives are drawn from (sampled softmax)
        self.excluded = None    # -inf on items outside the softmax (full softmax, softmax_over="seen")

    def fit(self, train, valid=None, trainable: str = "all"):
        """Train on every window of `train` with early stopping on `valid` (if given)."""
        m = self.model
        windows = training_windows(train.sequences, m.max_len)
        if len(windows) == 0:
            raise ValueError("no training sequence has 2 or more events: nothing to learn from")
        self._softmax_items(train.item_counts() > 0)   # items with events in this training set
        with self._only(trainable) as params:
            opt = torch.optim.AdamW(params, lr=m.lr, weight_decay=m.weight_decay)
            rng = np.random.default_rng(m.seed)
            self._loop(windows, opt, rng, train, valid)
        return m

    def update(self, windows: np.ndarray, epochs: int, lr: float | None, trainable: str, rng) -> list:
        """A few epochs over given windows (new events + replay) with a fresh AdamW; no early stopping."""
        m = self.model
        losses = []
        if len(windows) == 0:
            return losses
        self._softmax_items(m.seen_ > 0)
        # dropout draws from torch's generator: seed it from rng (and leave the global stream as it was)
        with self._only(trainable) as params, torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2 ** 31)))
            opt = torch.optim.AdamW(params, lr=m.lr if lr is None else lr, weight_decay=m.weight_decay)
            try:
                for _ in range(epochs):
                    losses.append(self._epoch(windows, opt, rng))
            finally:
                m.net_.eval()
                m.weights_changed()
        return losses

    # -- internals ----------------------------------------------------------------------------
    class _Only:
        def __init__(self, net, groups):
            self.net, self.groups = net, groups

        def __enter__(self):
            for name, p in self.net.named_parameters():
                p.requires_grad_(any(name.startswith(g) for g in self.groups))
            return [p for p in self.net.parameters() if p.requires_grad]

        def __exit__(self, *exc):
            for p in self.net.parameters():
                p.requires_grad_(True)

    def _only(self, trainable: str):
        return self._Only(self.model.net_, self.model.trainable_groups(trainable))

    def _softmax_items(self, seen: np.ndarray) -> None:
        m = self.model
        pool = np.flatnonzero(seen) if m.softmax_over == "seen" else np.arange(len(seen))
        self.pool = torch.from_numpy(pool + 1).to(m.device_)
        self.excluded = None
        if len(pool) < len(seen):
            self.excluded = torch.zeros(len(seen), device=m.device_)
            self.excluded[np.flatnonzero(~seen)] = -torch.inf

    def _loop(self, windows, opt, rng, train, valid) -> None:
        m = self.model
        best, best_state, stale, started = -1.0, None, 0, time.time()
        m.history_ = []
        bar = tqdm(range(1, m.epochs + 1), desc=f"fit {m.name}", disable=not m.progress, leave=False)
        for epoch in bar:
            loss = self._epoch(windows, opt, rng)
            m.net_.eval()
            m.weights_changed()
            record = {"epoch": epoch, "loss": loss, "seconds": time.time() - started}
            if valid is not None and len(valid) and epoch % m.eval_every == 0:
                record["valid_NDCG@10"] = score = self._valid_ndcg(train, valid)
                if score > best:
                    best, best_state, stale = score, copy.deepcopy(m.net_.state_dict()), 0
                else:
                    stale += 1
            m.history_.append(record)
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
            log.info("%s epoch %d %s", m.name, epoch, record)
            if stale >= m.patience:
                break
            if m.max_train_seconds and time.time() - started > m.max_train_seconds:
                log.warning("%s stopped by max_train_seconds after epoch %d", m.name, epoch)
                break
        bar.close()
        if best_state is not None:
            m.net_.load_state_dict(best_state)
        m.best_valid_ndcg_ = best
        m.net_.eval()
        m.weights_changed()

    def _valid_ndcg(self, train, valid) -> float:
        from ..evaluation.evaluator import evaluate

        return float(evaluate(self.model, valid, train, ks=(10,), beyond=False, segments=False).metrics["NDCG@10"])

    def _batches(self, windows: np.ndarray, rng) -> list:
        """Shuffled batches of similar-length windows, each trimmed to its longest row.

        Sorting within large shuffled pools keeps batches random while cutting the
        padding the transformer would otherwise process (often 40 % of the slots).
        """
        size = self.model.batch_size
        lengths = (windows > 0).sum(1)
        order = rng.permutation(len(windows))
        pool = size * 32
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start:start + pool]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches += [chunk[i:i + size] for i in range(0, len(chunk), size)]
        rng.shuffle(batches)
        return [windows[b][:, : lengths[b].max()] for b in batches]

    def _epoch(self, windows: np.ndarray, opt, rng) -> float:
        m = self.model
        m.net_.train()
        total, count = 0.0, 0
        for batch in self._batches(windows, rng):
            batch = torch.from_numpy(batch).to(m.device_)
            seq, target = batch[:, :-1], batch[:, 1:]
            keep = target > 0  # right padding: a real target always follows a real input
            with torch.autocast(m.device_.type, dtype=torch.bfloat16, enabled=bool(m.bf16)):
                if m.negatives:
                    logits, labels = self._sampled_logits(seq, target[keep], keep, rng)
                else:
                    table = m.net_["item_table"]()
                    logits, labels = m.logits(m.states(seq, table)[keep], table), target[keep] - 1
            logits = logits.float()
            if self.excluded is not None and not m.negatives:
                logits = logits + self.excluded
            loss = F.cross_entropy(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n = int(keep.sum())
            total += float(loss.detach()) * n
            count += n
        return total / max(count, 1)

    def _sampled_logits(self, seq, target, keep, rng):
        """Logits over the batch's targets + `negatives` items of the pool; only their table rows are built.

        Table indices are item+1 (0 = padding). The adapter then runs on a few thousand
        rows per batch instead of the whole catalogue.
        """
        m = self.model
        drawn = self.pool[torch.from_numpy(rng.integers(0, len(self.pool), m.negatives)).to(seq.device)]
        cand = torch.unique(torch.cat([target, drawn]))                  # sorted table indices
        rows = torch.unique(torch.cat([seq.flatten(), cand]))             # everything the batch touches
        local = m.net_["item_table"](rows)
        interest = m.net_["transformer"](local[torch.searchsorted(rows, seq.contiguous())])[keep]
        logits = m.similarity(interest, local[torch.searchsorted(rows, cand)])
        return logits, torch.searchsorted(cand, target)
