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
    """Item table = adapter(text vectors) [+ ID embedding for items seen in training]."""

    def __init__(self, text: np.ndarray, seen: np.ndarray, hidden: int, experts: int, dropout: float, use_id: bool):
        super().__init__()
        self.register_buffer("text", torch.cat([torch.zeros(1, text.shape[1]), torch.as_tensor(text, dtype=torch.float32)]))
        self.register_buffer("seen", torch.cat([torch.zeros(1), torch.as_tensor(seen, dtype=torch.float32)]))
        self.adapter = MoEAdapter(text.shape[1], hidden, experts, dropout)
        self.ids = nn.Embedding(len(text) + 1, hidden) if use_id else None
        if self.ids is not None:
            nn.init.normal_(self.ids.weight, std=0.01)  # start from the text: IDs learn a residual

    def forward(self) -> torch.Tensor:
        table = self.adapter(self.text)
        if self.ids is not None:
            table = table + self.ids.weight * self.seen[:, None]
        return table * (torch.arange(len(table), device=table.device) > 0)[:, None].to(table.dtype)

    def add_items(self, text: torch.Tensor) -> None:
        """Append text-only items (no ID part) without touching the learnt weights."""
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
                 temperature: float = 0.07, normalize: bool = True, **kw):
        super().__init__(temperature=temperature, normalize=normalize, **kw)
        self.use_id, self.experts, self.adapter_dropout = use_id, experts, adapter_dropout

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
        return TextItemTable(self.text_vectors_, self.seen_, self.hidden, self.experts, self.adapter_dropout, self.use_id)

    def _extra_state(self):
        return {"text_vectors": self.text_vectors_, "seen": self.seen_}

    def _restore_extra(self, state):
        self.text_vectors_, self.seen_ = state["text_vectors"], state["seen"]

    def _shape_for_load(self, state):
        return _Shape(n_items=len(state["item_ids"]), item_vectors=state["text_vectors"], seen=state["seen"])

    # -- new items, known by text only --------------------------------------------------
    def add_items(self, item_ids, vectors: np.ndarray) -> None:
        """Add catalogue items after training; they are scored from their text at once."""
        self._check_fitted()
        item_ids = [str(i) for i in item_ids]
        self.item_index(self.item_ids_[0])  # makes sure the id map exists (also after load)
        clash = [i for i in item_ids if i in self._iindex]
        if clash:
            raise ValueError(f"items already known: {clash[:5]}")
        vectors = np.asarray(vectors, dtype=np.float32)
        self.net_["item_table"].add_items(torch.from_numpy(vectors).to(self.device_))
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
