"""The training loop of the sequential models, apart from the network (nanoGPT's model/train split).

One `SequenceTrainer` serves `fit`, `fine_tune` and `partial_fit`: the model says which
windows to learn from and which weights may move; the trainer runs full- or sampled-softmax
cross-entropy epochs with AdamW, early-stops on validation NDCG@10 and restores the best
weights. The model it trains must not serve while it trains: updates run on a `clone()`.

Windows are streamed: `WindowIndex` keeps two numbers per window (sequence id, window end)
and each batch's windows are cut from the sequences when the batch comes up, instead of one
[n_windows, max_len + 1] array of every window of every user.

Distributed (DDP): inside a torch.distributed process group of W > 1 processes (see
models.distributed; torchrun or `migrec train --nproc W`), every rank draws the same batches
from the same seeded stream and trains on rows rank, rank + W, ... of each global batch of
`batch_size` windows. Each rank's loss is its shard's summed cross-entropy times W / (targets
in the whole global batch), so DDP's gradient average equals the one-process gradient of the
batch mean exactly, however the targets fall between the shards. Sampled-softmax negatives
come from the shared stream and the candidate set holds the whole global batch's targets, as
in one process. Rank 0 evaluates, decides early stopping and broadcasts the decision; at the
end every rank gets rank 0's best weights.
"""
from __future__ import annotations

import copy
import logging
import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import hardware
from . import distributed
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


class WindowIndex:
    """The windows `training_windows` cuts, as (sequence id, window end) pairs; cut per batch.

    Same windows, same order: sequence by sequence, each from its newest end back, a window
    every max_len events. The sequences are held once, concatenated (int32 when the item
    indices fit); a window costs 8 bytes instead of 8 * (max_len + 1).
    """

    def __init__(self, sequences, max_len: int):
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, not {max_len}")
        self.max_len = max_len
        sizes = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if len(sizes) \
            else np.zeros(0, np.int64)
        small = len(flat) == 0 or int(flat.max()) < np.iinfo(np.int32).max - 1
        self.items = flat.astype(np.int32 if small else np.int64)
        counts = np.where(sizes >= 2, (sizes - 2) // max_len + 1, 0)
        self.seq = np.repeat(np.arange(len(sizes), dtype=np.int32 if len(sizes) < 2 ** 31 else np.int64), counts)
        k = np.arange(len(self.seq), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        end = sizes[self.seq] - k * max_len             # window ends, newest first within a sequence
        self.end = end.astype(np.int32 if len(end) == 0 or end.max() < 2 ** 31 else np.int64)

    def __len__(self) -> int:
        return len(self.seq)

    def lengths(self) -> np.ndarray:
        """Events in each window (input + shifted target)."""
        return np.minimum(self.end, self.max_len + 1)

    def cut(self, rows, width: int | None = None) -> np.ndarray:
        """Windows `rows` as right-padded table indices (item + 1), [len(rows), width or the longest]."""
        rows = np.asarray(rows)
        end = self.end[rows].astype(np.int64)
        length = np.minimum(end, self.max_len + 1)
        width = int(length.max(initial=0)) if width is None else width
        stop = self.offsets[self.seq[rows]] + end
        pos = (stop - length)[:, None] + np.arange(width)
        real = np.arange(width) < length[:, None]
        return np.where(real, self.items[np.where(real, pos, 0)].astype(np.int64) + 1, 0) if len(self.items) \
            else np.zeros((len(rows), width), np.int64)


class WindowArray:
    """Windows already cut ([n, max_len + 1] table indices, as `new_event_windows` gives), WindowIndex's face."""

    def __init__(self, windows: np.ndarray):
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def lengths(self) -> np.ndarray:
        return (self.windows > 0).sum(1)

    def cut(self, rows, width: int | None = None) -> np.ndarray:
        batch = self.windows[rows]
        return batch[:, : int((batch > 0).sum(1).max(initial=0)) if width is None else width]


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
class _Objective(nn.Module):
    """The summed cross-entropy of a batch's targets: the module DDP wraps (it holds the network)."""

    def __init__(self, trainer):
        super().__init__()
        self.net = trainer.model.net_
        self.trainer = trainer

    def forward(self, batch, all_targets=None, drawn=None):
        """batch: [b, L] right-padded windows; all_targets / drawn (sampled softmax): the global
        batch's targets and the negatives, which make up the candidate set."""
        m, t = self.trainer.model, self.trainer
        seq, target = batch[:, :-1], batch[:, 1:]
        keep = target > 0  # right padding: a real target always follows a real input
        with torch.autocast(m.device_.type, dtype=torch.bfloat16, enabled=t.precision == "bf16"):
            if m.negatives:
                queries, candidates, labels = t._sampled(seq, target[keep], keep, drawn, all_targets)
                bias = None
            else:
                table = m.net_["item_table"]()
                queries = m.training_queries(table[seq], keep, table[target[keep]])
                candidates, labels, bias = table[1:], target[keep] - 1, t.excluded
            # the fused loss: logits never whole (queries [n, H], or [n, K, H] scored by the best)
            return fused_cross_entropy(*m.factors(queries, candidates), labels, bias)


class _FusedCrossEntropy(torch.autograd.Function):
    """sum_i CE(logits_i + bias, label_i), and its gradients, a block of rows at a time, where
    logits_i = q_i @ w.T for queries q [n, H], or max_k q_ik @ w.T for several per row [n, K, H]
    (each item scored by its best query, as a multi-interest model trains).

    The [n, items] logits, their softmax and its gradient (the largest tensors of a training step,
    three to five copies of 4 * n * items bytes, K times more for several queries) never exist whole:
    each block's gradients are formed in the forward pass (as fused linear cross-entropy kernels do)
    and backward scales them. Same matmuls as autograd's; peak memory is a block's, not the batch's.
    """

    @staticmethod
    def forward(ctx, q, w, labels, bias, rows):
        grad_q = torch.empty(q.shape, dtype=torch.float32, device=q.device)
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        total = torch.zeros((), dtype=torch.float32, device=q.device)
        for start in range(0, len(q), rows):
            qb, yb = q[start:start + rows], labels[start:start + rows]
            if q.dim() == 2:
                logits = (qb @ w.T).float()
            else:
                logits, best = (qb @ w.T).float().max(1)            # [b, K, items] -> [b, items]
            if bias is not None:
                logits += bias
            lse = torch.logsumexp(logits, 1)
            at = torch.arange(len(yb), device=q.device)
            total += (lse - logits[at, yb]).sum()
            grad = logits.sub_(lse[:, None]).exp_()                # softmax, in place
            grad[at, yb] -= 1.0
            if q.dim() == 2:
                grad = grad.to(w.dtype)
                grad_q[start:start + rows] = grad @ w
                grad_w += grad.T @ qb
            else:                  # each item's gradient goes to the query that scored it
                for k in range(q.shape[1]):
                    part = torch.where(best == k, grad, 0.0).to(w.dtype)
                    grad_q[start:start + rows, k] = part @ w
                    grad_w += part.T @ qb[:, k]
        ctx.save_for_backward(grad_q, grad_w)
        ctx.dtypes = (q.dtype, w.dtype)
        return total

    @staticmethod
    def backward(ctx, upstream):
        grad_q, grad_w = ctx.saved_tensors
        return (grad_q * upstream).to(ctx.dtypes[0]), (grad_w * upstream).to(ctx.dtypes[1]), None, None, None


def fused_cross_entropy(q, w, labels, bias=None, block_bytes: int = 2 ** 26):
    """Summed softmax cross-entropy of logits q @ w.T (q [n, H]; or [n, K, H] scored by the best of
    the K) plus `bias` (e.g. -inf on excluded items) against `labels`, without holding the logits:
    blocks of rows of about `block_bytes` of logits each."""
    per_row = 4 * max(len(w), 1) * (q.shape[1] if q.dim() == 3 else 1)
    rows = max(16, block_bytes // per_row)
    return _FusedCrossEntropy.apply(q, w, labels, bias, rows)


class SequenceTrainer:
    """Cross-entropy training of a SequentialRecommender's network (see the module doc)."""

    def __init__(self, model):
        self.model = model
        self.pool = None        # table indices negatives are drawn from (sampled softmax)
        self.excluded = None    # -inf on items outside the softmax (full softmax, softmax_over="seen")
        self.rank, self.world = distributed.world()
        self.precision = hardware.resolve_precision(model.precision, model.device_)   # "fp32" or "bf16"

    def fit(self, train, valid=None, trainable: str = "all"):
        """Train on every window of `train` with early stopping on `valid` (if given; rank 0's counts)."""
        m = self.model
        if m.lr_decay is not None and not (isinstance(m.lr_decay, (int, float)) and 0 < m.lr_decay < 1):
            raise ValueError(f"lr_decay must be None or a factor in (0, 1), not {m.lr_decay!r}")
        windows = WindowIndex(train.sequences, m.max_len)
        if len(windows) == 0:
            raise ValueError("no training sequence has 2 or more events: nothing to learn from")
        self._softmax_items(train.item_counts() > 0)   # items with events in this training set
        if self.world > 1 and self.rank > 0:
            torch.manual_seed(m.seed + 100_003 * self.rank)   # own dropout masks per rank
        with self._only(trainable) as params:
            opt = self._optimizer(params, m.lr)
            rng = np.random.default_rng(m.seed)
            self._loop(windows, self._step(), opt, rng, train, valid)
        return m

    def update(self, windows: np.ndarray, epochs: int, lr: float | None, trainable: str, rng) -> list:
        """A few epochs over given windows (new events + replay) with a fresh AdamW; no early stopping.

        In a process group every rank must call it with the same windows and rng state.
        """
        m = self.model
        losses = []
        if len(windows) == 0:
            return losses
        self._softmax_items(m.seen_ > 0)
        # dropout draws from torch's generator: seed it from rng (and leave the global stream as it was)
        with self._only(trainable) as params, torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2 ** 31)) + 100_003 * self.rank)
            opt = self._optimizer(params, m.lr if lr is None else lr)
            step = self._step()
            try:
                for _ in range(epochs):
                    losses.append(self._epoch(WindowArray(windows), step, opt, rng))
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

    def _optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        """AdamW, fused (one kernel per step for all parameters instead of a few ops per tensor); the
        model may give some parameters their own learning rate (`optimizer_groups`)."""
        return torch.optim.AdamW(self.model.optimizer_groups(params, lr), lr=lr,
                                 weight_decay=self.model.weight_decay, fused=True)

    def _only(self, trainable: str):
        return self._Only(self.model.net_, self.model.trainable_groups(trainable))

    def _step(self) -> nn.Module:
        """The loss module, under DDP in a process group (built after `_only` chose the trainable weights)."""
        step = _Objective(self)
        return distributed.data_parallel(step, self.model.device_) if self.world > 1 else step

    def _softmax_items(self, seen: np.ndarray) -> None:
        m = self.model
        pool = np.flatnonzero(seen) if m.softmax_over == "seen" else np.arange(len(seen))
        self.pool = torch.from_numpy(pool + 1).to(m.device_)
        self.excluded = None
        if len(pool) < len(seen):
            self.excluded = torch.zeros(len(seen), device=m.device_)
            self.excluded[np.flatnonzero(~seen)] = -torch.inf

    def _loop(self, windows, step, opt, rng, train, valid) -> None:
        m = self.model
        main = self.rank == 0
        best, best_state, stale, started = -1.0, None, 0, time.time()
        m.history_, stopped_by = [], "epochs"
        plateau = None if m.lr_decay is None else torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=m.lr_decay, patience=0, threshold=0.0)
        bar = tqdm(range(1, m.epochs + 1), desc=f"fit {m.name}", disable=not (m.progress and main), leave=False)
        for epoch in bar:
            loss = self._epoch(windows, step, opt, rng)
            m.net_.eval()
            m.weights_changed()
            record = {"epoch": epoch, "loss": loss, "seconds": time.time() - started,
                      "lr": opt.param_groups[0]["lr"]}
            # rank 0 evaluates and watches the clock; every rank follows its numbers
            score, over_time = np.nan, False
            if main:
                if valid is not None and len(valid) and epoch % m.eval_every == 0:
                    score = self._valid_ndcg(train, valid)
                over_time = bool(m.max_train_seconds) and time.time() - started > m.max_train_seconds
            if self.world > 1:
                score, over_time = distributed.broadcast_values([score, float(over_time)], m.device_)
            if not np.isnan(score):
                record["valid_NDCG@10"] = score
                if score > best:
                    best, stale = score, 0
                    if main:
                        best_state = copy.deepcopy(m.net_.state_dict())
                else:
                    stale += 1
                if plateau is not None:            # every rank holds the same broadcast score
                    plateau.step(score)
            m.history_.append(record)
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
            if main:
                log.info("%s epoch %d %s", m.name, epoch, record)
            if stale >= m.patience:
                stopped_by = "patience"
                break
            if over_time:
                if main:
                    log.warning("%s stopped by the max_train_seconds cap (%s s) after epoch %d, before "
                                "converging", m.name, m.max_train_seconds, epoch)
                stopped_by = "max_train_seconds"
                break
        bar.close()
        if best_state is not None:
            m.net_.load_state_dict(best_state)
        if self.world > 1:
            distributed.broadcast_module(m.net_)   # rank 0's best weights on every rank
        m.best_valid_ndcg_ = best
        # what the latest fit / fine_tune ran: results say how training ended and in which precision
        m.training_ = {**getattr(m, "training_", {}), "precision": self.precision, "stopped_by": stopped_by,
                       "epochs_run": len(m.history_), "train_seconds": round(time.time() - started, 2)}
        m.net_.eval()
        m.weights_changed()

    def _valid_ndcg(self, train, valid) -> float:
        from ..evaluation.evaluator import evaluate

        return float(evaluate(self.model, valid, train, ks=(10,), beyond=False, segments=False).metrics["NDCG@10"])

    def _batches(self, windows, rng) -> list:
        """Shuffled batches (window numbers) of similar-length windows.

        Sorting within large shuffled pools keeps batches random while cutting the
        padding the transformer would otherwise process (often 40 % of the slots).
        """
        size = self.model.batch_size
        lengths = windows.lengths()
        order = rng.permutation(len(windows))
        pool = size * 32
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start:start + pool]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches += [chunk[i:i + size] for i in range(0, len(chunk), size)]
        rng.shuffle(batches)
        return batches

    def _epoch(self, windows, step, opt, rng) -> float:
        """One epoch; the mean cross-entropy over its targets (all ranks')."""
        m = self.model
        step.train()
        total, count = 0.0, 0
        for rows in self._batches(windows, rng):
            batch = windows.cut(rows)                       # the global batch, trimmed to its longest row
            n_all = int((batch[:, 1:] > 0).sum())           # targets in the whole global batch
            drawn = all_targets = None
            if m.negatives:
                drawn = self.pool[torch.from_numpy(rng.integers(0, len(self.pool), m.negatives)).to(m.device_)]
            mine = batch[self.rank::self.world] if self.world > 1 else batch
            empty = len(mine) == 0                          # fewer rows than ranks: a zero-weight pass
            if m.negatives:
                full = torch.from_numpy(batch[:, 1:]).to(m.device_)
                all_targets = full[full > 0]
            mine = torch.from_numpy(batch[:1] if empty else mine).to(m.device_)
            summed = step(mine, all_targets, drawn)
            loss = summed * (0.0 if empty else self.world / max(n_all, 1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not empty:
                total += float(summed.detach())
                count += int((mine[:, 1:] > 0).sum())
        if self.world > 1:
            total, count = distributed.all_sum([total, count], m.device_)
        return total / max(count, 1)

    def _sampled(self, seq, target, keep, drawn, all_targets=None):
        """The queries, the candidate rows (the global batch's targets + the drawn negatives; only
        their table rows are built) and each target's place among them.

        Table indices are item+1 (0 = padding). The adapter then runs on a few thousand
        rows per batch instead of the whole catalogue.
        """
        m = self.model
        cand = torch.unique(torch.cat([target if all_targets is None else all_targets, drawn]))  # sorted
        rows = torch.unique(torch.cat([seq.flatten(), cand]))             # everything the batch touches
        local = m.net_["item_table"](rows)
        interest = m.training_queries(local[torch.searchsorted(rows, seq.contiguous())], keep,
                                      local[torch.searchsorted(rows, target)])
        return interest, local[torch.searchsorted(rows, cand)], torch.searchsorted(cand, target)
