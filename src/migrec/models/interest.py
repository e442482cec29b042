"""The interest model: a causal transformer over language-model item vectors.

Each item is its frozen text vector (from a sentence encoder) passed through a learnt
mixture-of-experts whitening adapter, optionally plus an item-ID embedding. The user's
interest vector f(u) is the transformer output at the newest position and an item's
score is f(u)·e(i) / temperature. Items with no training events have no ID part of their
own, so a new catalogue item is recommendable at once: from its text alone, or, with
`cold_neighbours=k`, its text plus the mean ID part of its k nearest seen items by text
(same domain), so that it competes with known items on their footing instead of sinking
below every item that has an ID part.

With `text_layers=k` the sentence model's top k layers train too (models.text_tower, over
the lower layers' token states kept once: `train.item_states`, from
migrec.encoders.encode_lower_states). A step refreshes at most `text_rows` items' vectors
with gradients; the others come from a table refreshed before each evaluation. After `fit`
the tuned vectors replace the frozen ones (the fitted model stays a plain text table), and
`text_encoder()` encodes new items into that tuned space.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from .artifact import check_encoder
from .incremental import vectors_for
from .sequential import SequentialRecommender
from .text_tower import TextTower


class MoEAdapter(nn.Module):
    """Mixture of whitening projections: sum_e g_e(x) (x - b_e) W_e, gate g = softmax(x G)."""

    def __init__(self, in_dim: int, out_dim: int, experts: int, dropout: float):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(experts, in_dim))
        self.weight = nn.Parameter(torch.empty(experts, in_dim, out_dim))
        nn.init.xavier_uniform_(self.weight.view(-1, out_dim))
        self.gate = nn.Linear(in_dim, experts, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        projected = torch.einsum("nd,edo->neo", x, self.weight) - torch.einsum("ed,edo->eo", self.bias, self.weight)
        gate = torch.softmax(self.gate(x), dim=-1)
        return (gate.unsqueeze(-1) * projected).sum(1)


class TextItemTable(nn.Module):
    """Item table = adapter(text) [+ domain adapter + domain embedding] [+ ID embedding if seen].

    With `domains` (one domain code per item), each domain gets a residual linear adapter
    and an embedding, both starting at zero: a model pre-trained on one domain scores a
    new domain through the shared adapter (zero-shot), and fine-tuning a domain's adapter
    is cheap (parameter-efficient transfer).
    """

    def __init__(self, text: np.ndarray, seen: np.ndarray, hidden: int, experts: int, dropout: float,
                 use_id: bool, domains: np.ndarray | None = None, n_domains: int = 0, id_dropout: float = 0.0,
                 centre_domains: bool = False, tower: TextTower | None = None, tower_rows: int = 64,
                 cold_neighbours: int = 0, domain_dropout: float = 0.0, as_new_domain: bool = False):
        super().__init__()
        self.id_dropout, self.cold_neighbours, self.domain_dropout = id_dropout, cold_neighbours, domain_dropout
        self.as_new_domain = as_new_domain
        # tower: the sentence model's trainable top; `text` then holds its latest output per row
        self.tower, self.tower_rows, self.stale = tower, tower_rows, False
        text = torch.as_tensor(text, dtype=torch.float32)
        self.centred = domains is not None and centre_domains
        if self.centred:
            # Centre each domain's text vectors on its own mean, so the domain offset in the
            # sentence space does not dominate cross-domain similarity; it needs only the
            # target catalogue's text, no target interactions.
            codes = torch.as_tensor(domains, dtype=torch.long)
            means = torch.zeros(n_domains, text.shape[1])
            for d in torch.unique(codes).tolist():
                means[d] = text[codes == d].mean(0)
            self.register_buffer("domain_mean", means)   # new items are centred the same way
            text = text - means[codes]
        self.register_buffer("text", torch.cat([torch.zeros(1, text.shape[1]), text]))
        self.register_buffer("seen", torch.cat([torch.zeros(1), torch.as_tensor(seen, dtype=torch.float32)]))
        self.adapter = MoEAdapter(text.shape[1], hidden, experts, dropout)
        self.ids = nn.Embedding(len(text) + 1, hidden) if use_id else None
        if self.ids is not None:
            nn.init.normal_(self.ids.weight, std=0.01)  # start from the text: IDs learn a residual
        self.domain_adapter = self.domain_embedding = None
        if domains is not None:
            self.register_buffer("domain", torch.cat([torch.zeros(1, dtype=torch.long), torch.as_tensor(domains, dtype=torch.long)]))
            self.domain_adapter = nn.Parameter(torch.zeros(n_domains, text.shape[1], hidden))
            self.domain_embedding = nn.Parameter(torch.zeros(n_domains, hidden))

    def forward(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Rows for table indices `index` (all rows if None); row 0 (padding) is zero."""
        if index is None:
            index = torch.arange(len(self.text), device=self.text.device)
        text = self.text[index] if self.tower is None else self._tuned_text(index)
        table = self.adapter(text)
        # domain_dropout: a training batch goes without the domain parts at this rate, so the shared
        # adapter alone must rank too, as it has to for a domain the model has never seen
        dropped = self.training and self.domain_dropout > 0 and float(torch.rand(())) < self.domain_dropout
        # as_new_domain (inference only): every row as an item of a domain the model never saw,
        # the shared adapter alone, without domain or ID parts
        if self.as_new_domain and not self.training:
            return table * (index > 0)[:, None].to(table.dtype)
        if self.domain_adapter is not None and not dropped:
            dom = self.domain[index]
            residual = torch.zeros_like(table)
            for d in torch.unique(dom).tolist():  # one matmul per domain, not one matrix per row
                rows = dom == d
                residual[rows] = text[rows] @ self.domain_adapter[d].to(text.dtype)
            table = table + residual + self.domain_embedding[dom]
        if self.ids is not None:
            seen = self.seen[index]
            if self.training and self.id_dropout > 0:
                # Hide some items' IDs while training, so the model also learns to rank
                # text-only rows; without it, new (text-only) items sink below known ones.
                seen = seen * (torch.rand_like(seen) >= self.id_dropout)
            table = table + self.ids(index) * seen[:, None]
            if not self.training and self.cold_neighbours > 0:
                table = table + self.borrowed_ids(index).to(table.dtype)
        return table * (index > 0)[:, None].to(table.dtype)

    def borrowed_ids(self, index: torch.Tensor) -> torch.Tensor:
        """[len(index), hidden]: for each unseen item of `index`, the cosine-weighted mean ID part of
        its `cold_neighbours` nearest seen items by text (within its domain when domains are known);
        zero for seen items and padding. Inference only: training leaves unseen rows alone."""
        rows, weight = self.neighbours()
        out = torch.zeros(len(index), self.ids.embedding_dim, device=index.device)
        cold = torch.nonzero(weight[index, 0] > 0).squeeze(1)      # places in index that borrow
        for lo in range(0, len(cold), 16384):                     # bounded [block, k, hidden] gathers
            block = cold[lo:lo + 16384]
            part = index[block]
            out[block] = torch.einsum("nk,nkh->nh", weight[part], self.ids.weight[rows[part]].float())
        return out

    @torch.no_grad()
    def neighbours(self, block: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows [n, k], weights [n, k]) per table row: the k nearest seen rows by text cosine (same
        domain) of each unseen row, weights the cosines clipped at 0 and summing to 1; seen rows and
        padding get weight 0. Kept until the items, the seen set, the text or k change."""
        k = int(self.cold_neighbours)
        cached = self.__dict__.get("_neighbours")
        if cached is not None and cached[0] == k:
            return cached[1], cached[2]
        n, device = len(self.text), self.text.device
        rows = torch.zeros(n, k, dtype=torch.long, device=device)
        weight = torch.zeros(n, k, device=device)
        every = torch.arange(n, device=device)
        groups = self.domain if self.domain_adapter is not None else torch.zeros_like(every)
        cold = every[(self.seen == 0) & (every > 0)]
        for g in torch.unique(groups[cold]).tolist():
            mine = cold[groups[cold] == g]
            warm = every[(groups == g) & (self.seen > 0) & (every > 0)]
            if not len(warm):
                continue
            unit_warm = nn.functional.normalize(self.text[warm].float(), dim=-1)
            top = min(k, len(warm))
            for lo in range(0, len(mine), block):
                part = mine[lo:lo + block]
                sim, at = (nn.functional.normalize(self.text[part].float(), dim=-1) @ unit_warm.T).topk(top, dim=1)
                w = sim.clamp(min=0)
                rows[part, :top] = warm[at]
                weight[part, :top] = w / w.sum(1, keepdim=True).clamp(min=1e-12)
        self._neighbours = (k, rows, weight)
        return rows, weight

    def forget_neighbours(self) -> None:
        self.__dict__.pop("_neighbours", None)

    def set_seen(self, seen: torch.Tensor) -> None:
        """Replace the seen flags (row 0 = padding): items with events get their ID part."""
        self.seen = seen.to(self.seen)
        self.forget_neighbours()

    def _tuned_text(self, index: torch.Tensor) -> torch.Tensor:
        """Text rows from the tower: while training, up to `tower_rows` of the rows asked for are
        recomputed (with gradients) and the rest read from `text`; in eval, `text` is brought up
        to date first."""
        if not self.training:
            if self.stale:
                with torch.no_grad():
                    self.text[1:] = self.tower.all_rows().to(self.text.dtype)
                self.stale = False
                self.forget_neighbours()
            return self.text[index]
        self.stale = True
        rows = torch.unique(index)
        rows = rows[rows > 0]
        if len(rows) > self.tower_rows:
            rows = rows[torch.randperm(len(rows), device=rows.device)[: self.tower_rows]]
        fresh = self.tower(rows).to(self.text.dtype)
        slot = torch.full((len(self.text),), -1, dtype=torch.long, device=index.device)
        slot[rows] = torch.arange(len(rows), device=index.device)
        at = slot[index]                       # each asked-for row's place among the fresh ones, or -1
        text = torch.where((at >= 0)[:, None], fresh[at.clamp(min=0)], self.text[index])
        with torch.no_grad():
            self.text[rows] = fresh.detach()
        return text

    def add_items(self, text: torch.Tensor, domains: torch.Tensor | None = None) -> None:
        """Append text-only items (no ID part) without touching the learnt weights."""
        if self.domain_adapter is not None:
            if domains is None:
                raise ValueError("this model has domain adapters: give each new item's domain")
            self.domain = torch.cat([self.domain, domains.to(self.domain)])
            if self.centred:
                text = text.to(self.text) - self.domain_mean[domains.to(self.domain.device)]
        self.text = torch.cat([self.text, text.to(self.text)])
        self.seen = torch.cat([self.seen, torch.zeros(len(text), device=self.seen.device)])
        self.forget_neighbours()
        if self.ids is not None:
            grown = nn.Embedding(len(self.text), self.ids.embedding_dim).to(self.text.device)
            with torch.no_grad():
                grown.weight.zero_()
                grown.weight[: self.ids.num_embeddings] = self.ids.weight
            self.ids = grown


class InterestModel(SequentialRecommender):
    """Language-model interest model; `use_id=False` is the text-only variant.

    Needs `train.item_vectors` (one text vector per catalogue item), set by
    `migrec.encoders.encode_catalogue`; `train.encoder` names the encoder that made them.
    """

    name = "interest"
    registry = "interest"

    def __init__(self, use_id: bool = True, experts: int = 8, adapter_dropout: float = 0.2,
                 temperature: float = 0.07, normalize: bool = True, domain_adapters: bool = False,
                 id_dropout: float = 0.0, softmax_over: str = "seen", centre_domains: bool = False,
                 text_layers: int = 0, text_lr: float = 1e-4, text_rows: int = 64, cold_neighbours: int = 0,
                 domain_dropout: float = 0.0, as_new_domain: bool = False, **kw):
        super().__init__(temperature=temperature, normalize=normalize, softmax_over=softmax_over, **kw)
        self.use_id, self.experts, self.adapter_dropout = use_id, experts, adapter_dropout
        self.domain_adapters = domain_adapters  # per-domain residual adapter + embedding (catalogue "domain")
        self.id_dropout = id_dropout  # share of items trained without their ID part (cold-item robustness)
        self.centre_domains = centre_domains  # subtract each domain's mean text vector (domain_adapters only)
        # share of training batches scored without the per-domain adapters and embeddings (domain_adapters
        # only): the shared text adapter then learns to rank alone, which a new (zero-shot) domain needs
        self.domain_dropout = domain_dropout
        # text_layers=k: fine-tune the sentence model's top k layers (needs train.item_states) at
        # learning rate text_lr, recomputing at most text_rows items' vectors per step
        self.text_layers, self.text_lr, self.text_rows = text_layers, text_lr, text_rows
        # cold_neighbours=k (use_id only): at inference an item without training events borrows the
        # mean ID part of its k nearest seen items by text; 0 scores it from its text alone
        self.cold_neighbours = cold_neighbours
        # as_new_domain: at inference, score every item (history and candidates) as an item of a domain
        # never trained on: the shared text adapter alone, no ID or domain parts. Zero-shot transfer
        # sets it on the source domains to see how the model ranks where nothing is known but text.
        self.as_new_domain = as_new_domain

    def _prepare_items(self, train) -> None:
        if getattr(train, "item_vectors", None) is None:
            raise ValueError("InterestModel needs train.item_vectors: encode the catalogue first "
                             "(migrec.encoders.encode_catalogue)")
        if len(train.item_vectors) != train.n_items:
            raise ValueError(f"item_vectors has {len(train.item_vectors)} rows for {train.n_items} items")
        self.text_vectors_ = np.asarray(train.item_vectors, dtype=np.float32)
        self.encoder_ = {"model_id": getattr(train, "encoder", None), "dim": int(self.text_vectors_.shape[1])}
        self.__dict__.pop("_lower", None)
        self.__dict__.pop("text_tower_", None)
        if self.text_layers:
            self._lower = self._lower_states(train)
        if self.domain_adapters:
            if "domain" not in train.catalogue.columns:
                raise ValueError("domain_adapters=True needs a 'domain' column in the catalogue")
            names, codes = np.unique(train.catalogue["domain"].astype(str).to_numpy(), return_inverse=True)
            self.domain_names_, self.item_domains_ = names.tolist(), codes.astype(np.int64)

    def _lower_states(self, train):
        states = getattr(train, "item_states", None)
        if states is None:
            raise ValueError(f"text_layers={self.text_layers} needs train.item_states: the sentence model's "
                             "lower-layer states (migrec.encoders.encode_lower_states)")
        if self.centre_domains:
            raise ValueError("text_layers and centre_domains cannot be combined")
        if len(states) != train.n_items or states.layers != self.text_layers:
            raise ValueError(f"train.item_states holds {len(states)} items below {states.layers} layers; "
                             f"this model needs {train.n_items} items below text_layers={self.text_layers}")
        check_encoder(self.encoder_, states.encoder, "train.item_states")
        return states

    def _build_items(self) -> nn.Module:
        codes = self.item_domains_ if self.domain_adapters else None
        lower = self.__dict__.get("_lower")     # only while fitting: a fitted model keeps the tuned vectors
        tower = TextTower(lower, self.text_layers) if lower is not None else None
        return TextItemTable(self.text_vectors_, self.seen_, self.hidden, self.experts, self.adapter_dropout,
                             self.use_id, codes, len(getattr(self, "domain_names_", [])), self.id_dropout,
                             self.centre_domains, tower, self.text_rows, self.cold_neighbours,
                             self.domain_dropout, self.as_new_domain)

    def set_params(self, **params) -> "InterestModel":
        super().set_params(**params)
        if "net_" in self.__dict__:         # settings the fitted item table reads: no refit needed
            table = self.net_["item_table"]
            for name in {"cold_neighbours", "domain_dropout", "as_new_domain"} & set(params):
                setattr(table, name, getattr(self, name))
            if {"cold_neighbours", "as_new_domain"} & set(params):
                table.forget_neighbours()
                self.weights_changed()
        return self

    def optimizer_groups(self, params: list, lr: float) -> list[dict]:
        tower = self.net_["item_table"].tower
        mine = {id(p) for p in tower.parameters()} if tower is not None else set()
        groups = [{"params": [p for p in params if id(p) not in mine], "lr": lr},
                  {"params": [p for p in params if id(p) in mine], "lr": self.text_lr}]
        return [g for g in groups if g["params"]]

    def fit(self, train, valid=None):
        super().fit(train, valid)
        if self.text_layers:
            self._bake_text()
        return self

    def fine_tune(self, train, valid=None, trainable: str = "all"):
        # a tuned model keeps its own (tuned) vectors: training data encoded by the frozen encoder it
        # was tuned from are the same items, so they are accepted
        info = self.encoder_info() or {}
        if info.get("tuned_from") is not None and getattr(train, "encoder", None) == info["tuned_from"]:
            train = dataclasses.replace(train, encoder=info["model_id"])
        return super().fine_tune(train, valid, trainable)

    def _bake_text(self) -> None:
        """Put the tuned sentence vectors in place of the frozen ones and drop the tower and its states."""
        from ..encoders.tuning import tuned_model_id

        table = self.net_["item_table"]
        table.eval()
        text = table.tower.all_rows()
        with torch.no_grad():
            table.text[1:] = text
        table.forget_neighbours()
        weights = {k: v.detach().cpu().float().numpy() for k, v in table.tower.top.layers.state_dict().items()}
        lower = self.__dict__.pop("_lower")
        self.text_vectors_ = text.cpu().numpy()
        self.text_tower_ = weights
        self.encoder_ = {"model_id": tuned_model_id(lower.encoder, self.text_layers, weights),
                         "dim": int(self.text_vectors_.shape[1]), "tuned_from": lower.encoder,
                         "sentence_model": lower.model, "normalize": bool(lower.normalize)}
        table.tower = None
        self.weights_changed()

    def text_encoder(self, **kw):
        """The encoder whose vectors match this model's item vectors: for a model fitted with
        `text_layers`, the sentence model with its tuned top layers (migrec.encoders.TunedSentenceEncoder)."""
        from ..encoders.tuning import TunedSentenceEncoder

        self._check_fitted()
        if getattr(self, "text_tower_", None) is None:
            raise ValueError("this model's item vectors come from a frozen encoder: use that one "
                             f"({self.encoder_['model_id']})")
        return TunedSentenceEncoder(self.encoder_["sentence_model"], self.text_layers, self.text_tower_,
                                    normalize=self.encoder_["normalize"], **kw)

    # -- persistence: the tuned top layers' weights are arrays of their own ------------------------
    _state_apart = SequentialRecommender._state_apart + ("text_tower_",)

    def _state(self):
        state, arrays, children = super()._state()
        for k, v in (getattr(self, "text_tower_", None) or {}).items():
            arrays[f"text_tower.{k}"] = v
        return state, arrays, children

    def _restore(self, state, arrays, children):
        tower = {k[len("text_tower."):]: np.asarray(arrays.pop(k)) for k in list(arrays) if k.startswith("text_tower.")}
        self.text_tower_ = tower or None
        super()._restore(state, arrays, children)

    def trainable_groups(self, trainable: str) -> tuple:
        if trainable == "adapter":
            return ("item_table.adapter", "item_table.domain_adapter", "item_table.domain_embedding")
        return super().trainable_groups(trainable)

    def _mark_seen(self, items) -> None:
        # Items with events now get their ID part switched on.
        super()._mark_seen(items)
        table = self.net_["item_table"]
        if table.ids is not None:
            table.set_seen(torch.cat([torch.zeros(1), torch.from_numpy(self.seen_)]))
        self.weights_changed()

    # -- new items, known by text only --------------------------------------------------
    def _grow_items(self, item_ids, vectors, domains, encoder) -> None:
        """New items are scored from their text at once. With domain adapters, `domains`
        names each new item's domain (one already known)."""
        check_encoder(self.encoder_info(), encoder, "the new items' vectors")
        vectors = vectors_for(item_ids, vectors, self.text_vectors_.shape[1])
        codes = None
        if self.domain_adapters:
            if domains is None or len(domains) != len(item_ids):
                raise ValueError("this model has domain adapters: give one domain per new item")
            unknown = sorted(set(domains) - set(self.domain_names_))
            if unknown:
                raise ValueError(f"unknown domains {unknown}; the model knows {self.domain_names_}")
            codes = np.asarray([self.domain_names_.index(d) for d in domains], dtype=np.int64)
            self.item_domains_ = np.concatenate([self.item_domains_, codes])
            codes = torch.from_numpy(codes).to(self.device_)
        self.net_["item_table"].add_items(torch.from_numpy(vectors).to(self.device_), codes)
        self.text_vectors_ = np.vstack([self.text_vectors_, vectors])
