"""Shared machinery of the causal-transformer models (SASRec and the interest model).

A subclass only says how to build the item table (one vector per item); this module
owns the transformer, the full-softmax cross-entropy training loop with early stopping
on validation NDCG@10, scoring, and saving. Item index i is row i+1 of the table;
row 0 is padding. Sequences are right-padded: position j is the j-th event of the window,
so with a plain causal mask no real event ever attends to padding (and the fast fused
attention kernel applies).
"""
from __future__ import annotations

import copy
import logging
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .base import Recommender

log = logging.getLogger(__name__)
FFN_MULT = 4  # feed-forward width as a multiple of the hidden size


class CausalTransformer(nn.Module):
    """Pre-LN transformer over a left-padded sequence of item vectors, causal attention."""

    def __init__(self, hidden: int, layers: int, heads: int, dropout: float, max_len: int):
        super().__init__()
        self.heads = heads
        self.position = nn.Embedding(max_len, hidden)
        nn.init.normal_(self.position.weight, std=0.02)
        self.input_norm = nn.LayerNorm(hidden)  # makes training indifferent to the item table's scale
        block = nn.TransformerEncoderLayer(hidden, heads, FFN_MULT * hidden, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, L, H] right-padded item vectors -> [B, L, H] (padding outputs are junk)."""
        length = x.shape[1]
        h = self.dropout(self.input_norm(x + self.position.weight[:length][None]))
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=x.device), 1)
        return self.norm(self.blocks(h, mask=causal, is_causal=True))


def right_pad(histories, max_len: int) -> np.ndarray:
    """Last `max_len` items of each history as table indices (item+1), right-padded with 0."""
    out = np.zeros((len(histories), max_len), dtype=np.int64)
    for row, h in enumerate(histories):
        h = np.asarray(h[-max_len:], dtype=np.int64)
        out[row, :len(h)] = h + 1
    return out


def last_position(seq: torch.Tensor) -> torch.Tensor:
    """Index of the newest real event in each right-padded row (0 for an empty history)."""
    return ((seq > 0).sum(1) - 1).clamp(min=0)


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


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class SequentialRecommender(Recommender):
    """Causal transformer + full-softmax cross-entropy; subclasses provide the item table."""

    def __init__(self, hidden: int = 64, layers: int = 2, heads: int = 2, dropout: float = 0.2,
                 max_len: int = 200, epochs: int = 200, batch_size: int = 128, lr: float = 1e-3,
                 weight_decay: float = 0.0, temperature: float = 1.0, normalize: bool = False,
                 patience: int = 5, eval_every: int = 1, device: str = "auto", seed: int = 0,
                 progress: bool = True, max_train_seconds: float | None = None, bf16: bool = False,
                 negatives: int | None = None, softmax_over: str = "all"):
        self.hidden, self.layers, self.heads, self.dropout = hidden, layers, heads, dropout
        self.max_len, self.epochs, self.batch_size, self.lr = max_len, epochs, batch_size, lr
        self.weight_decay, self.temperature, self.normalize = weight_decay, temperature, normalize
        self.patience, self.eval_every, self.device = patience, eval_every, device
        self.seed, self.progress, self.max_train_seconds = seed, progress, max_train_seconds
        self.bf16 = bf16  # bfloat16 autocast for training matmuls: ~25 % faster on AVX512-BF16 CPUs
        # negatives=N: sampled softmax over the batch's targets + N uniform items, instead of the
        # full softmax; needed when the catalogue is large (tens of thousands of items on CPU).
        self.negatives = negatives
        # "seen": the softmax ranges only over items with training events. An item unseen in
        # training is never a positive, so as a negative it would only be pushed down; a
        # text-based model must leave such (new) items where their text puts them.
        if softmax_over not in ("all", "seen"):
            raise ValueError(f"softmax_over must be 'all' or 'seen', not {softmax_over!r}")
        self.softmax_over = softmax_over

    # -- subclass hooks ---------------------------------------------------------------
    def _build_items(self, train) -> nn.Module:
        """A module whose forward() returns the [n_items + 1, hidden] item table (row 0 = pad)."""
        raise NotImplementedError

    # -- network -------------------------------------------------------------------------
    def _build(self, train):
        torch.manual_seed(self.seed)
        self.net_ = nn.ModuleDict({
            "item_table": self._build_items(train),
            "encoder": CausalTransformer(self.hidden, self.layers, self.heads, self.dropout, self.max_len),
        })
        self.device_ = resolve_device(self.device)
        self.net_.to(self.device_)

    def _interest(self, seq: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Per-position interest vectors for table-index sequences [B, L] -> [B, L, H]."""
        return self.net_["encoder"](table[seq])

    def _newest(self, seq: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """f(u): the interest vector at the newest event of each sequence -> [B, H]."""
        out = self._interest(seq, table)
        return out[torch.arange(len(seq), device=seq.device), last_position(seq)]

    def _logits(self, interest: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return self._similarity(interest, table[1:])

    def _similarity(self, interest: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            interest, items = F.normalize(interest, dim=-1), F.normalize(items, dim=-1)
        return interest @ items.T / self.temperature

    # -- training ----------------------------------------------------------------------
    def fit(self, train, valid=None):
        self._remember(train)
        self._build(train)
        return self._train(train, valid)

    def fine_tune(self, train, valid=None, trainable: str = "all"):
        """Continue training the fitted network on `train` (same item universe), e.g. a target domain.

        trainable: "all" (full fine-tuning), "items" (the item table only, encoder frozen) or
        "adapter" (the text adapters only: parameter-efficient; InterestModel). The users and
        histories become those of `train`.
        """
        self._check_fitted()
        if train.n_items != len(self.item_ids_):
            raise ValueError(f"fine_tune needs the same item universe: {train.n_items} items, "
                             f"the model has {len(self.item_ids_)}")
        groups = self._trainable(trainable)
        for name, p in self.net_.named_parameters():
            p.requires_grad_(any(name.startswith(g) for g in groups))
        self._remember(train)
        self._refresh_items(train, trainable)
        try:
            return self._train(train, valid)
        finally:
            for p in self.net_.parameters():
                p.requires_grad_(True)

    def partial_fit(self, new_interactions, item_vectors=None, epochs: int = 1, replay: float = 1.0,
                    lr: float | None = None, **kw):
        """Continue training on new events (new users/items welcome); see models.incremental."""
        from .incremental import partial_fit_sequential

        return partial_fit_sequential(self, new_interactions, item_vectors=item_vectors, epochs=epochs,
                                      replay=replay, lr=lr, **kw)

    def _trainable(self, trainable: str) -> tuple:
        groups = {"all": ("",), "items": ("item_table.",)}
        if trainable not in groups:
            raise ValueError(f"trainable must be one of {sorted(groups)}, not {trainable!r}")
        return groups[trainable]

    def _refresh_items(self, train, trainable: str) -> None:
        """Hook: update item bookkeeping (e.g. which items have trained IDs) before fine-tuning."""

    def _train(self, train, valid=None):
        rng = np.random.default_rng(self.seed)
        windows = training_windows(train.sequences, self.max_len)
        if len(windows) == 0:
            raise ValueError("no training sequence has 2 or more events: nothing to learn from")
        counts = train.item_counts()
        pool = np.flatnonzero(counts > 0) if self.softmax_over == "seen" else np.arange(len(counts))
        self._pool = torch.from_numpy(pool + 1).to(self.device_)            # table indices negatives come from
        self._excluded = None
        if len(pool) < len(counts):                                          # full softmax: mask the others
            self._excluded = torch.zeros(len(counts), device=self.device_)
            self._excluded[np.flatnonzero(counts == 0)] = -torch.inf
        params = [p for p in self.net_.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        best, best_state, stale, started = -1.0, None, 0, time.time()
        self.history_ = []
        bar = tqdm(range(1, self.epochs + 1), desc=f"fit {self.name}", disable=not self.progress, leave=False)
        for epoch in bar:
            loss = self._epoch(windows, opt, rng)
            record = {"epoch": epoch, "loss": loss, "seconds": time.time() - started}
            if valid is not None and len(valid) and epoch % self.eval_every == 0:
                record["valid_NDCG@10"] = score = self._valid_ndcg(train, valid)
                if score > best:
                    best, best_state, stale = score, copy.deepcopy(self.net_.state_dict()), 0
                else:
                    stale += 1
            self.history_.append(record)
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
            log.info("%s epoch %d %s", self.name, epoch, record)
            if stale >= self.patience:
                break
            if self.max_train_seconds and time.time() - started > self.max_train_seconds:
                log.warning("%s stopped by max_train_seconds after epoch %d", self.name, epoch)
                break
        bar.close()
        if best_state is not None:
            self.net_.load_state_dict(best_state)
        self.best_valid_ndcg_ = best
        self.net_.eval()
        return self

    def _batches(self, windows: np.ndarray, rng) -> list:
        """Shuffled batches of similar-length windows, each trimmed to its longest row.

        Sorting within large shuffled pools keeps batches random while cutting the
        padding the transformer would otherwise process (often 40 % of the slots).
        """
        lengths = (windows > 0).sum(1)
        order = rng.permutation(len(windows))
        pool = self.batch_size * 32
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start:start + pool]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return [windows[b][:, : lengths[b].max()] for b in batches]

    def _epoch(self, windows: np.ndarray, opt, rng) -> float:
        self.net_.train()
        total, count = 0.0, 0
        for batch in self._batches(windows, rng):
            batch = torch.from_numpy(batch).to(self.device_)
            seq, target = batch[:, :-1], batch[:, 1:]
            keep = target > 0  # right padding: a real target always follows a real input
            with torch.autocast(self.device_.type, dtype=torch.bfloat16, enabled=bool(self.bf16)):
                if self.negatives:
                    logits, labels = self._sampled_logits(seq, target[keep], keep, rng)
                else:
                    table = self.net_["item_table"]()
                    logits, labels = self._logits(self._interest(seq, table)[keep], table), target[keep] - 1
            logits = logits.float()
            if self._excluded is not None and not self.negatives:
                logits = logits + self._excluded
            loss = F.cross_entropy(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n = int(keep.sum())
            total += float(loss.detach()) * n
            count += n
        return total / max(count, 1)

    def _sampled_logits(self, seq, target, keep, rng):
        """Logits over the batch's targets + `negatives` uniform items; only their table rows are built.

        Table indices are item+1 (0 = padding). The adapter then runs on a few thousand
        rows per batch instead of the whole catalogue.
        """
        drawn = self._pool[torch.from_numpy(rng.integers(0, len(self._pool), self.negatives)).to(seq.device)]
        cand = torch.unique(torch.cat([target, drawn]))                  # sorted table indices
        rows = torch.unique(torch.cat([seq.flatten(), cand]))             # everything the batch touches
        local = self.net_["item_table"](rows)
        interest = self.net_["encoder"](local[torch.searchsorted(rows, seq.contiguous())])[keep]
        logits = self._similarity(interest, local[torch.searchsorted(rows, cand)])
        return logits, torch.searchsorted(cand, target)

    def _valid_ndcg(self, train, valid) -> float:
        from ..evaluation.evaluator import evaluate

        self.net_.eval()
        return float(evaluate(self, valid, train, ks=(10,), beyond=False, segments=False).metrics["NDCG@10"])

    # -- scoring -----------------------------------------------------------------------
    @torch.no_grad()
    def score_histories(self, users, histories):
        self.net_.eval()
        table = self.net_["item_table"]()
        seq = torch.from_numpy(right_pad(histories, self.max_len)).to(self.device_)
        return self._logits(self._newest(seq, table), table).float().cpu().numpy()

    @torch.no_grad()
    def interest_vectors(self, histories) -> np.ndarray:
        """The user interest vector f(u): the transformer output at the newest position."""
        self.net_.eval()
        seq = torch.from_numpy(right_pad(histories, self.max_len)).to(self.device_)
        return self._newest(seq, self.net_["item_table"]()).cpu().numpy()

    # -- persistence: torch state dict + plain arrays ------------------------------------
    def _extra_state(self) -> dict:
        return {}

    def _save_state(self, path):
        torch.save({
            "net": {k: v.cpu() for k, v in self.net_.state_dict().items()},
            "user_ids": self.user_ids_, "item_ids": self.item_ids_, "histories": self.histories_,
            "history": self.history_, "best_valid_ndcg": self.best_valid_ndcg_, **self._extra_state(),
        }, path / "state.pt")

    def _load_state(self, path):
        state = torch.load(path / "state.pt", weights_only=False, map_location="cpu")
        self.user_ids_, self.item_ids_, self.histories_ = state["user_ids"], state["item_ids"], state["histories"]
        self.history_, self.best_valid_ndcg_ = state["history"], state["best_valid_ndcg"]
        self._restore_extra(state)
        self._build(self._shape_for_load(state))
        self.net_.load_state_dict(state["net"])
        self.net_.eval()

    def _restore_extra(self, state: dict) -> None:
        pass

    def _shape_for_load(self, state):
        """An object with what _build_items needs (n_items, ...) when rebuilding from disk."""
        return _Shape(n_items=len(state["item_ids"]))


class _Shape:
    def __init__(self, **kw):
        self.__dict__.update(kw)
