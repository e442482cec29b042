"""SASRec with ID embeddings only, trained with full-softmax cross-entropy.

This is the strong ID-based reference (Kang & McAuley 2018; cross-entropy loss as in
Klenitskiy & Vasilev 2023): the same transformer as the interest model, but each item is
a free embedding learnt from interactions, so an item never seen in training has no
meaningful vector.
"""
from __future__ import annotations

import torch
from torch import nn

from .sequential import SequentialRecommender


class IDTable(nn.Module):
    def __init__(self, n_items: int, hidden: int):
        super().__init__()
        self.embedding = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=hidden ** -0.5)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def forward(self, index: torch.Tensor | None = None):
        return self.embedding.weight if index is None else self.embedding(index)


class SASRec(SequentialRecommender):
    name = "sasrec"

    def _build_items(self, train) -> nn.Module:
        return IDTable(train.n_items, self.hidden)
