"""The sequential models' estimator: a causal transformer (models.transformer) over an item
table, trained by models.training, scored read-only.

A subclass only says how to build the item table (one vector per item). f(h), the
interest vector of a history h, is the transformer output at its newest event; an item's
score is sim(f(h), e(i)) / temperature. Scoring reads a cached inference item table, built
once after each change of weights or items (`weights_changed()`), under a lock, so
several threads can score at once; `score_histories` never changes the model.
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from . import artifact
from .base import Recommender
from .incremental import coerce_events, new_item_ids
from .retrieval import DEFAULT_THRESHOLD
from .training import SequenceTrainer, new_event_windows, replay_windows
from .transformer import CausalTransformer, last_position, resolve_device, right_pad

INFERENCE_ROWS = 128      # histories per transformer pass when scoring (bounds the attention's memory)

log = logging.getLogger(__name__)


class SequentialRecommender(Recommender):
    """Causal transformer + full-softmax cross-entropy; subclasses provide the item table."""

    _state_apart = ("net_", "device_")

    def __init__(self, hidden: int = 64, layers: int = 2, heads: int = 2, dropout: float = 0.2,
                 max_len: int = 200, epochs: int = 200, batch_size: int = 128, lr: float = 1e-3,
                 weight_decay: float = 0.0, temperature: float = 1.0, normalize: bool = False,
                 patience: int = 5, eval_every: int = 1, device: str = "auto", seed: int = 0,
                 progress: bool = True, max_train_seconds: float | None = None, precision: str = "fp32",
                 negatives: int | None = None, softmax_over: str = "all",
                 ann_threshold: int | None = DEFAULT_THRESHOLD, recency: bool = False, window: int = 0,
                 lr_decay: float | None = None):
        self.hidden, self.layers, self.heads, self.dropout = hidden, layers, heads, dropout
        self.max_len, self.epochs, self.batch_size, self.lr = max_len, epochs, batch_size, lr
        self.weight_decay, self.temperature, self.normalize = weight_decay, temperature, normalize
        self.patience, self.eval_every, self.device = patience, eval_every, device
        # max_train_seconds: a safety cap on the wall clock; training stops by patience or epochs,
        # and training_["stopped_by"] says which ended it ("max_train_seconds" when the cap fired)
        self.seed, self.progress, self.max_train_seconds = seed, progress, max_train_seconds
        # training matmuls: "fp32", "bf16" (autocast) or "auto" (bf16 only where native, see
        # migrec.hardware; ~25 % faster there, ~3x slower where emulated); training_["precision"]
        self.precision = precision
        # negatives=N: sampled softmax over the batch's targets + N items, instead of the
        # full softmax; needed when the catalogue is large (tens of thousands of items on CPU).
        self.negatives = negatives
        # "seen": the softmax ranges only over items with training events. An item unseen in
        # training is never a positive, so as a negative it would only be pushed down; a
        # text-based model must leave such (new) items where their text puts them.
        self.softmax_over = softmax_over
        # catalogue size from which recommend answers from a FAISS index (models.retrieval); None = never
        self.ann_threshold = ann_threshold
        # recency=True: attention leans towards the newest events by learnt per-head slopes (ALiBi)
        self.recency = recency
        # window=w: half the heads see only the newest w events (short-term interest inside the model)
        self.window = window
        # lr_decay=f: after an epoch whose validation NDCG@10 is not a new best, the learning rate is
        # multiplied by f (torch's ReduceLROnPlateau, patience 0); None keeps it constant
        self.lr_decay = lr_decay

    # -- subclass hooks -------------------------------------------------------------------
    def _prepare_items(self, train) -> None:
        """Read the item data the table needs from `train` into fitted attributes."""

    def _build_items(self) -> nn.Module:
        """A module whose forward(index=None) returns item-table rows ([n_items + 1, hidden]; row 0 = pad)."""
        raise NotImplementedError

    def _grow_items(self, item_ids: list, vectors, domains) -> None:
        """Append rows for new items to the item table (and the fitted item data)."""
        raise NotImplementedError

    def trainable_groups(self, trainable: str) -> tuple:
        """Parameter-name prefixes that train for `trainable` ("all" or "items"; subclasses add more)."""
        groups = {"all": ("",), "items": ("item_table.",)}
        if trainable not in groups:
            raise ValueError(f"trainable must be one of {sorted(groups)}, not {trainable!r}")
        return groups[trainable]

    def optimizer_groups(self, params: list, lr: float) -> list[dict]:
        """The optimiser's parameter groups for the trainable `params` (one group at `lr` here)."""
        return [{"params": params, "lr": lr}]

    def _mark_seen(self, items: np.ndarray) -> None:
        """Items that now have training events (the softmax pool; InterestModel's ID parts)."""
        seen = self.seen_.copy()
        seen[items] = 1.0
        self.seen_ = seen

    # -- network ------------------------------------------------------------------------------
    def _build(self) -> None:
        torch.manual_seed(self.seed)
        self.net_ = nn.ModuleDict({
            "item_table": self._build_items(),
            "transformer": CausalTransformer(self.hidden, self.layers, self.heads, self.dropout, self.max_len,
                                             recency=self.recency, window=self.window),
        })
        self.device_ = resolve_device(self.device)
        self.net_.to(self.device_)
        self.weights_changed()

    def states(self, seq: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Per-position interest vectors for table-index sequences [B, L] -> [B, L, H]."""
        return self.net_["transformer"](table[seq])

    def newest(self, seq: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """f(h): the interest vector at the newest event of each sequence -> [B, H]."""
        out = self.states(seq, table)
        return out[torch.arange(len(seq), device=seq.device), last_position(seq)]

    def training_queries(self, x: torch.Tensor, keep: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Training: the query vector of each kept position ([n_keep, H]) of the right-padded item
        vectors x [B, L, H]; `targets` [n_keep, H] (the positions' target rows) is there for a model
        that picks one of several interests per target (models.multi_interest). A model may return
        several queries per position ([n_keep, K, H]): the trainer scores each item by the best one."""
        return self.net_["transformer"](x)[keep]

    def states_scores(self, states: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Scores of every item from the per-position states [B, L, H] of unpadded sequences (explain)."""
        return self.logits(states[:, -1], table)

    def logits(self, interest: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return self.similarity(interest, table[1:])

    def similarity(self, interest: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        query, items = self.factors(interest, items)
        return query @ items.T

    def factors(self, interest: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, w) with similarity(interest, items) = q @ w.T for interest vectors [..., H] (several per
        row too: models.multi_interest); the trainer's fused loss uses them. The temperature divides
        the [n, H] queries, not the [n, items] logits."""
        if self.normalize:
            interest, items = F.normalize(interest, dim=-1), self.unit_rows(items)
        return (interest if self.temperature == 1 else interest / self.temperature), items

    def unit_rows(self, items: torch.Tensor) -> torch.Tensor:
        """Unit-length `items`; at inference the inference table's rows are normalised once, not per call."""
        cached = self.__dict__.get("_unit")
        if cached is not None and not torch.is_grad_enabled() and items.data_ptr() == cached[0] \
                and items.shape == cached[1].shape:
            return cached[1]
        return F.normalize(items, dim=-1)

    # -- training (models.training does the work) ------------------------------------------------
    def fit(self, train, valid=None):
        if self.softmax_over not in ("all", "seen"):
            raise ValueError(f"softmax_over must be 'all' or 'seen', not {self.softmax_over!r}")
        self._summarise(train)
        self.seen_ = (train.item_counts() > 0).astype(np.float32)
        self._prepare_items(train)
        self._build()
        self.partial_history_ = []
        return SequenceTrainer(self).fit(train, valid)

    def fine_tune(self, train, valid=None, trainable: str = "all"):
        """Continue training the fitted network on `train` (same item universe), e.g. a target domain.

        trainable: "all" (full fine-tuning), "items" (the item table only, transformer frozen)
        or "adapter" (the text adapters only: parameter-efficient; InterestModel).
        """
        self._check_fitted()
        if train.n_items != len(self.item_ids_):
            raise ValueError(f"fine_tune needs the same item universe: {train.n_items} items, "
                             f"the model has {len(self.item_ids_)}")
        artifact.check_encoder(self.encoder_info(), getattr(train, "encoder", None), "train.item_vectors")
        self.trainable_groups(trainable)              # a bad name fails before anything changes
        if trainable != "adapter":
            self._mark_seen(np.flatnonzero(train.item_counts() > 0))
        self.training_ = {**getattr(self, "training_", {}), "fine_tuned_events": int(train.n_interactions)}
        return SequenceTrainer(self).fit(train, valid, trainable=trainable)

    def partial_fit(self, new_interactions, histories=None, item_vectors=None, epochs: int = 1,
                    replay: float = 1.0, lr: float | None = None, trainable: str = "all", seed: int | None = None,
                    encoder: str | None = None):
        """Continue training on new events; new users and new items are welcome.

        new_interactions: events (user_id, item_id[, timestamp, domain]). histories: every
        user's history *before* these events (a `migrec.data.Histories`; the caller keeps it,
        the model does not); each new event becomes a target predicted from what came
        before it. replay: windows drawn from `histories` per new window, so the weights do
        not drift towards the few users of the update. Cost follows the update: only the
        affected users' histories and the replay sample are read. item_vectors: text vectors
        of new items ({item_id: vector} or a frame), from the encoder named `encoder`.
        Run it on a `clone()` while the original serves, then swap.
        """
        self._check_fitted()
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, not {epochs}")
        if replay < 0:
            raise ValueError(f"replay must be >= 0, not {replay}")
        started = time.perf_counter()
        frame = coerce_events(new_interactions)
        distinct = list(dict.fromkeys(frame["item_id"]))
        new_items = [i for i, known in zip(distinct, self.knows(distinct)) if not known]
        if new_items:
            domains = None
            if "domain" in frame.columns:
                first = frame.drop_duplicates("item_id").set_index("item_id")["domain"].astype(str)
                domains = [first[i] for i in new_items]
            self.add_items(new_items, item_vectors, domains=domains, encoder=encoder)
        codes = self.item_index(frame["item_id"])
        sequences, n_new = [], []
        for user, rows in frame.groupby("user_id", sort=False).indices.items():
            before = np.zeros(0, dtype=np.int64) if histories is None else \
                self.item_index(histories.get(user), "drop")
            sequences.append(np.concatenate([before, codes[rows]]))
            n_new.append(len(rows))
        self._mark_seen(np.unique(codes))
        # a different (reproducible) stream per update, so successive updates replay different windows
        rng = np.random.default_rng([self.seed, len(self.partial_history_)] if seed is None else seed)
        fresh = new_event_windows(sequences, n_new, self.max_len)
        old = replay_windows(histories, round(replay * len(fresh)), self.max_len,
                             lambda h: self.item_index(h, "drop"), rng)
        windows = np.concatenate([fresh, old]) if len(old) else fresh
        losses = SequenceTrainer(self).update(windows, epochs, lr, trainable, rng)
        new_users = None if histories is None else int(sum(u not in histories for u in frame["user_id"].unique()))
        record = {"events": len(frame), "new_users": new_users,
                  "new_items": len(new_items), "new_windows": len(fresh), "replay_windows": len(old),
                  "positions": int((windows[:, 1:] > 0).sum()),            # targets trained on: the work done
                  "losses": losses, "seconds": time.perf_counter() - started}
        self.partial_history_ = list(self.partial_history_) + [record]
        log.info("%s partial_fit %s", self.name, record)
        return self

    def add_items(self, item_ids, vectors=None, domains=None, encoder: str | None = None) -> None:
        """Add catalogue items after training; they are scorable at once (no retraining)."""
        self._check_fitted()
        item_ids = new_item_ids(self, item_ids)
        self._grow_items(item_ids, vectors, domains if domains is None else [str(d) for d in domains],
                         encoder)
        self._set_items(list(self.item_ids_) + item_ids)
        self.seen_ = np.concatenate([self.seen_, np.zeros(len(item_ids), np.float32)])
        self.weights_changed()

    # -- read-only scoring ---------------------------------------------------------------------
    def weights_changed(self) -> None:
        """Drop the cached inference item table (after training steps or new items)."""
        self._cache = self._unit = None
        self.__dict__.pop("_item_matrix", None)    # the ANN index follows the new item matrix

    def _inference_table(self) -> torch.Tensor:
        table = self.__dict__.get("_cache")
        if table is None:
            lock = self.__dict__.setdefault("_lock", threading.Lock())
            with lock:
                table = self.__dict__.get("_cache")
                if table is None:
                    if self.net_.training:
                        raise RuntimeError(f"{type(self).__name__} is training: score a clone, or wait")
                    with torch.inference_mode():
                        table = self.net_["item_table"]()
                        rows = table[1:]
                        self._unit = (rows.data_ptr(), F.normalize(rows, dim=-1)) if self.normalize else None
                    self._cache = table
        return table

    def score_histories(self, histories):
        self._check_fitted()
        table = self._inference_table()
        with torch.inference_mode():
            return torch.cat([self.logits(v, table).float() for v in self._newest_parts(histories, table)]).cpu().numpy()

    def interest_vectors(self, histories) -> np.ndarray:
        """The interest vector f(h) of each item-index history: the transformer output at the newest event."""
        table = self._inference_table()
        with torch.inference_mode():
            return torch.cat([v.float() for v in self._newest_parts(histories, table)]).cpu().numpy()

    def _newest_parts(self, histories, table, rows: int = INFERENCE_ROWS):
        """f(h) of `rows` histories at a time: the attention weights of a pass are [rows, heads, L, L]
        (512 ML-1M histories of 200 events made the evaluator's validation peak 350 MB higher)."""
        for lo in range(0, max(len(histories), 1), rows):     # no history: one empty part, as before
            part = histories[lo:lo + rows]
            yield self.newest(torch.from_numpy(right_pad(part, self.max_len, shortest=True)).to(self.device_), table)

    def score_interests(self, vectors) -> np.ndarray:
        """Scores of every item for given interest vectors (e.g. mapped from another domain)."""
        table = self._inference_table()
        with torch.inference_mode():
            vec = torch.as_tensor(np.asarray(vectors), dtype=table.dtype, device=table.device)
            return self.logits(vec, table).float().cpu().numpy()

    def query_vectors(self, histories) -> np.ndarray:
        """f(h) / temperature (unit-length first when normalize): score = query · item_matrix row."""
        vec = torch.from_numpy(self.interest_vectors(histories))
        if self.normalize:
            vec = F.normalize(vec, dim=-1)
        return (vec / self.temperature).numpy()

    def item_matrix(self) -> np.ndarray:
        """The inference item table without its padding row (unit rows when normalize), cached with it."""
        matrix = self.__dict__.get("_item_matrix")
        if matrix is None:       # a copy (the table may be a parameter itself); dropped by weights_changed
            table = self._inference_table()
            with self.__dict__.setdefault("_lock", threading.Lock()), torch.no_grad():
                matrix = self.__dict__.get("_item_matrix")
                if matrix is None:
                    rows = table[1:].detach().float().cpu()
                    if self.normalize:
                        rows = F.normalize(rows, dim=-1)
                    matrix = np.array(rows.numpy(), dtype=np.float32, order="C", copy=True)
                    self._item_matrix = matrix
        return matrix

    # -- explanation ------------------------------------------------------------------------------
    def explain(self, history, item, steps: int = 64, catalogue: pd.DataFrame | None = None,
                unknown: str = "raise") -> pd.DataFrame:
        """Which events of a raw-id history drove the score of `item`.

        Integrated gradients over the history's item vectors, from an all-zero history
        (positions kept) to the real one: the attributions add up to the model's own score
        minus the empty-history score (completeness), so they are faithful to the score
        rather than a separate heuristic. The frame's attrs hold both scores.
        """
        self._check_fitted()
        idx = self.item_index(history, unknown)[-self.max_len:]
        target = int(self.item_index([item])[0])
        if len(idx) == 0:
            raise ValueError("the history is empty: there is nothing to explain from")
        table = self._inference_table()
        x = table[torch.as_tensor(idx + 1, device=self.device_)][None].clone()   # [1, n, H], no padding
        alphas = (torch.arange(steps, device=self.device_) + 0.5) / steps  # midpoint rule: error O(1/steps^2)
        with torch.enable_grad():
            path = (alphas[:, None, None] * x).requires_grad_(True)  # [steps, n, H]
            scores = self.states_scores(self.net_["transformer"](path), table)[:, target]
            grads, = torch.autograd.grad(scores.sum(), path)
        attribution = (x[0] * grads.mean(0)).sum(-1).detach().cpu().numpy()
        with torch.inference_mode():
            zero = float(self.states_scores(self.net_["transformer"](torch.zeros_like(x)), table)[0, target])
            full = float(self.states_scores(self.net_["transformer"](x), table)[0, target])
        items = self.item_ids_[idx]
        frame = pd.DataFrame({"position": np.arange(len(idx)) - len(idx), "item_id": items,
                              "attribution": attribution})
        if catalogue is not None:
            frame["title"] = catalogue.set_index("item_id").reindex(items)["title"].to_numpy()
        frame.attrs.update(score=full, baseline_score=zero, item_id=str(item))
        return frame.sort_values("attribution", ascending=False, key=abs).reset_index(drop=True)

    # -- persistence: weights as arrays, nothing pickled ----------------------------------------
    @classmethod
    def from_artifact(cls, manifest, arrays, children):
        params = dict(manifest["params"])
        if "bf16" in params:          # written before `precision` replaced the `bf16` flag
            params["precision"] = "bf16" if params.pop("bf16") else "fp32"
        return super().from_artifact({**manifest, "params": params}, arrays, children)

    def _state(self):
        state, arrays, children = super()._state()
        arrays.update({f"net.{k}": v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy()
                       for k, v in self.net_.state_dict().items()})
        return state, arrays, children

    def _restore(self, state, arrays, children):
        net = {k[len("net."):]: arrays.pop(k) for k in list(arrays) if k.startswith("net.")}
        super()._restore(state, arrays, children)
        self._build()
        current = self.net_.state_dict()
        self.net_.load_state_dict({k: torch.from_numpy(np.asarray(v)).to(current[k].dtype) for k, v in net.items()})
        self.net_.eval()
        self.weights_changed()

