"""The network of the sequential models: a causal transformer over item-table rows.

Item index i is row i+1 of an item table; row 0 is padding. Sequences are right-padded:
position j is the j-th event of the window, so with a plain causal mask no real event ever
attends to padding (and the fused attention kernel applies).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

FFN_MULT = 4  # feed-forward width as a multiple of the hidden size


class CausalTransformer(nn.Module):
    """Pre-LN transformer over a right-padded sequence of item vectors, causal attention.

    recency: each head's attention logits fall by a learnt slope x (query position - key position)
    (ALiBi, Press et al. 2022, with learnt slopes starting at 2^(-8(h+1)/heads)): every position
    leans towards its newest events, as much as training finds useful (a slope can go to 0)."""

    def __init__(self, hidden: int, layers: int, heads: int, dropout: float, max_len: int, recency: bool = False):
        super().__init__()
        self.heads = heads
        if recency:
            start = torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)])
            self.slope = nn.Parameter(torch.log(torch.expm1(start)))      # softplus(slope) = start
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
        if not hasattr(self, "slope"):
            return self.norm(self.blocks(h, mask=causal, is_causal=True))
        pos = torch.arange(length, device=x.device)
        distance = (pos[:, None] - pos[None, :]).clamp(min=0).to(h.dtype)                   # query - key
        bias = -F.softplus(self.slope).to(h.dtype)[:, None, None] * distance                # [heads, L, L]
        bias = bias.masked_fill(causal, -torch.inf).repeat(len(x), 1, 1)                    # [B * heads, L, L]
        return self.norm(self.blocks(h, mask=bias))


class IDTable(nn.Module):
    """A free embedding per item (SASRec's item table); row 0 is padding."""

    def __init__(self, n_items: int, hidden: int):
        super().__init__()
        self.embedding = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=hidden ** -0.5)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def forward(self, index: torch.Tensor | None = None):
        return self.embedding.weight if index is None else self.embedding(index)

    def add_items(self, n_new: int) -> None:
        """Append freshly initialised rows (the fit-time initialisation) for new items."""
        old = self.embedding
        grown = nn.Embedding(old.num_embeddings + n_new, old.embedding_dim, padding_idx=0).to(old.weight.device)
        with torch.no_grad():
            nn.init.normal_(grown.weight, std=old.embedding_dim ** -0.5)
            grown.weight[:old.num_embeddings] = old.weight
        self.embedding = grown


def right_pad(histories, max_len: int, shortest: bool = False) -> np.ndarray:
    """Last `max_len` items of each history as table indices (item+1), right-padded with 0.

    shortest: pad only to the longest history in the batch (at least 1), not to `max_len`. With
    right padding and causal attention the real positions' outputs do not depend on the width,
    so inference pays for the events it has, not for `max_len`.
    """
    if shortest:
        max_len = max(1, min(max_len, max((len(h) for h in histories), default=1)))
    out = np.zeros((len(histories), max_len), dtype=np.int64)
    for row, h in enumerate(histories):
        h = np.asarray(h[-max_len:], dtype=np.int64)
        out[row, :len(h)] = h + 1
    return out


def last_position(seq: torch.Tensor) -> torch.Tensor:
    """Index of the newest real event in each right-padded row (0 for an empty history)."""
    return ((seq > 0).sum(1) - 1).clamp(min=0)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
