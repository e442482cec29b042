"""The interest model: a causal transformer over language-model item vectors.

Each item is its frozen text vector (from a sentence encoder) passed through a learnt
mixture-of-experts whitening adapter, optionally plus an item-ID embedding. The user's
interest vector f(u) is the transformer output at the newest position and an item's
score is f(u)·e(i) / temperature. Items with no training events keep a zero ID part, so
they are scored from their text alone — a new catalogue item is recommendable at once.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from .sequential import SequentialRecommender, _Shape


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
                 centre_domains: bool = False):
        super().__init__()
        self.id_dropout = id_dropout
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
        text = self.text[index]
        table = self.adapter(text)
        if self.domain_adapter is not None:
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
        return table * (index > 0)[:, None].to(table.dtype)

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
        if self.ids is not None:
            grown = nn.Embedding(len(self.text), self.ids.embedding_dim).to(self.text.device)
            with torch.no_grad():
                grown.weight.zero_()
                grown.weight[: self.ids.num_embeddings] = self.ids.weight
            self.ids = grown


class InterestModel(SequentialRecommender):
    """Language-model interest model; `use_id=False` is the text-only variant.

    Needs `train.item_vectors` (one text vector per catalogue item), set by
    `migrec.encoders.encode_catalogue`.
    """

    name = "interest"

    def __init__(self, use_id: bool = True, experts: int = 8, adapter_dropout: float = 0.2,
                 temperature: float = 0.07, normalize: bool = True, domain_adapters: bool = False,
                 id_dropout: float = 0.0, softmax_over: str = "seen", centre_domains: bool = False, **kw):
        super().__init__(temperature=temperature, normalize=normalize, softmax_over=softmax_over, **kw)
        self.use_id, self.experts, self.adapter_dropout = use_id, experts, adapter_dropout
        self.domain_adapters = domain_adapters  # per-domain residual adapter + embedding (catalogue "domain")
        self.id_dropout = id_dropout  # share of items trained without their ID part (cold-item robustness)
        self.centre_domains = centre_domains  # subtract each domain's mean text vector (domain_adapters only)

    def _build_items(self, train) -> nn.Module:
        if getattr(train, "item_vectors", None) is None:
            raise ValueError("InterestModel needs train.item_vectors: encode the catalogue first "
                             "(migrec.encoders.encode_catalogue)")
        if len(train.item_vectors) != train.n_items:
            raise ValueError(f"item_vectors has {len(train.item_vectors)} rows for {train.n_items} items")
        self.text_vectors_ = np.asarray(train.item_vectors, dtype=np.float32)
        self.seen_ = getattr(train, "seen", None)
        if self.seen_ is None:
            self.seen_ = (train.item_counts() > 0).astype(np.float32)
        codes = None
        if self.domain_adapters:
            if getattr(train, "item_domains", None) is not None:   # rebuilding from disk
                self.domain_names_, codes = list(train.domain_names), np.asarray(train.item_domains)
            else:
                if "domain" not in train.catalogue.columns:
                    raise ValueError("domain_adapters=True needs a 'domain' column in the catalogue")
                names, codes = np.unique(train.catalogue["domain"].astype(str).to_numpy(), return_inverse=True)
                self.domain_names_ = names.tolist()
            self.item_domains_ = codes.astype(np.int64)
        return TextItemTable(self.text_vectors_, self.seen_, self.hidden, self.experts, self.adapter_dropout,
                             self.use_id, codes, len(getattr(self, "domain_names_", [])), self.id_dropout,
                             self.centre_domains)

    def _trainable(self, trainable: str) -> tuple:
        if trainable == "adapter":
            return ("item_table.adapter", "item_table.domain_adapter", "item_table.domain_embedding")
        return super()._trainable(trainable)

    def _refresh_items(self, train, trainable: str) -> None:
        # Items first seen now get their ID part switched on, unless only adapters train
        # (their IDs would stay untrained noise).
        if trainable == "adapter" or self.net_["item_table"].ids is None:
            return
        newly = (train.item_counts() > 0).astype(np.float32)
        self.seen_ = np.maximum(self.seen_, newly)
        table = self.net_["item_table"]
        table.seen = torch.cat([torch.zeros(1), torch.from_numpy(self.seen_)]).to(table.seen)

    def _extra_state(self):
        extra = {"text_vectors": self.text_vectors_, "seen": self.seen_}
        if self.domain_adapters:
            extra.update(domain_names=self.domain_names_, item_domains=self.item_domains_)
        return extra

    def _restore_extra(self, state):
        self.text_vectors_, self.seen_ = state["text_vectors"], state["seen"]
        if "domain_names" in state:
            self.domain_names_, self.item_domains_ = state["domain_names"], state["item_domains"]

    def _shape_for_load(self, state):
        return _Shape(n_items=len(state["item_ids"]), item_vectors=state["text_vectors"], seen=state["seen"],
                      domain_names=state.get("domain_names"), item_domains=state.get("item_domains"))

    # -- new items, known by text only --------------------------------------------------
    def add_items(self, item_ids, vectors: np.ndarray, domains=None) -> None:
        """Add catalogue items after training; they are scored from their text at once.

        With domain adapters, `domains` names each new item's domain (one already known).
        """
        self._check_fitted()
        item_ids = [str(i) for i in item_ids]
        self.item_index(self.item_ids_[0])  # makes sure the id map exists (also after load)
        clash = [i for i in item_ids if i in self._iindex]
        if clash:
            raise ValueError(f"items already known: {clash[:5]}")
        vectors = np.asarray(vectors, dtype=np.float32)
        codes = None
        if self.domain_adapters:
            if domains is None or len(domains) != len(item_ids):
                raise ValueError("this model has domain adapters: give one domain per new item")
            unknown = sorted({str(d) for d in domains} - set(self.domain_names_))
            if unknown:
                raise ValueError(f"unknown domains {unknown}; the model knows {self.domain_names_}")
            codes = np.asarray([self.domain_names_.index(str(d)) for d in domains], dtype=np.int64)
            self.item_domains_ = np.concatenate([self.item_domains_, codes])
            codes = torch.from_numpy(codes).to(self.device_)
        self.net_["item_table"].add_items(torch.from_numpy(vectors).to(self.device_), codes)
        self.text_vectors_ = np.vstack([self.text_vectors_, vectors])
        self.seen_ = np.concatenate([self.seen_, np.zeros(len(item_ids), np.float32)])
        self.item_ids_ = np.concatenate([self.item_ids_, np.asarray(item_ids, dtype=object)])
        self._iindex.update({it: len(self._iindex) + k for k, it in enumerate(item_ids)})

    # -- explanation --------------------------------------------------------------------
    def explain(self, user, item, steps: int = 64, catalogue: pd.DataFrame | None = None) -> pd.DataFrame:
        """Which history items drove the score of `item` for `user`.

        Integrated gradients over the history's item vectors, from an all-zero history
        (positions kept) to the real one: the attributions add up to the model's own
        score minus the empty-history score (completeness), so they are faithful to the
        score rather than a separate heuristic. The frame's attrs hold both scores.
        """
        u, target = self.user_index(user), self.item_index(item)
        history = self.histories_[u][-self.max_len:]
        if len(history) == 0:
            raise ValueError(f"user {user!r} has no history to explain from")
        self.net_.eval()
        table = self.net_["item_table"]().detach()
        x = table[torch.as_tensor(history + 1, device=self.device_)][None]  # [1, n, H], no padding
        alphas = (torch.arange(steps, device=self.device_) + 0.5) / steps  # midpoint rule: error O(1/steps^2)
        path = (alphas[:, None, None] * x).requires_grad_(True)  # [steps, n, H]
        scores = self._logits(self.net_["encoder"](path)[:, -1], table)[:, target]
        grads, = torch.autograd.grad(scores.sum(), path)
        attribution = (x[0] * grads.mean(0)).sum(-1).detach().cpu().numpy()
        with torch.no_grad():
            zero = self._logits(self.net_["encoder"](torch.zeros_like(x))[:, -1], table)[0, target]
        full = float(self._logits(self.net_["encoder"](x)[:, -1], table)[0, target].detach())
        items = self.item_ids_[history]
        frame = pd.DataFrame({"position": np.arange(len(history)) - len(history), "item_id": items,
                              "attribution": attribution})
        if catalogue is not None:
            frame["title"] = catalogue.set_index("item_id").reindex(items)["title"].to_numpy()
        frame.attrs.update(score=full, baseline_score=float(zero), item_id=str(item), user_id=str(user))
        return frame.sort_values("attribution", ascending=False, key=abs).reset_index(drop=True)
