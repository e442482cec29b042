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
    leans towards its newest events, as much as training finds useful (a slope can go to 0).
    window: the first half of the heads (at least one) attend only to the newest `window` events
    up to each position, the others to the whole prefix: short- and long-term interest in every
    layer, mixed by the layers' own weights (0 = every head sees the whole prefix)."""

    def __init__(self, hidden: int, layers: int, heads: int, dropout: float, max_len: int, recency: bool = False,
                 window: int = 0):
        super().__init__()
        if window < 0:
            raise ValueError(f"window must be >= 0, not {window}")
        self.heads, self.window = heads, window
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
        h = dropout(self.input_norm(x + self.position.weight[:length][None]), self.dropout.p, self.training)
        bias = None
        if hasattr(self, "slope") or self.window:
            pos = torch.arange(length, device=x.device)
            distance = (pos[:, None] - pos[None, :]).to(h.dtype)                             # query - key
            bias = torch.zeros(self.heads, length, length, dtype=h.dtype, device=x.device)
            if hasattr(self, "slope"):
                bias = bias - F.softplus(self.slope).to(h.dtype)[:, None, None] * distance.clamp(min=0)
            if self.window:       # local heads: keys more than window-1 events back are masked
                local = torch.arange(self.heads, device=x.device) < max(1, self.heads // 2)
                far = (distance >= self.window)[None] & local[:, None, None]
                bias = bias.masked_fill(far, -torch.inf)
            bias = bias.masked_fill((distance < 0)[None], -torch.inf)                        # causal
        for layer in self.blocks.layers:
            h = self._block(layer, h, bias)
        return self.norm(h)

    def _block(self, layer: nn.TransformerEncoderLayer, h: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """One pre-LN layer, written out over nn.TransformerEncoderLayer's own weights (so its
        initialisation and state_dict names stay): attention, then the GELU feed-forward."""
        p, train = self.dropout.p, self.training
        attn = layer.self_attn
        b, length, hidden = h.shape
        qkv = F.linear(layer.norm1(h), attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.view(b, length, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        if train and p > 0:       # attention dropout: the weights are formed here (as the math kernel does)
            scores = q @ k.transpose(-1, -2) * (hidden // self.heads) ** -0.5
            if bias is None:
                causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=h.device), 1)
                scores = scores.masked_fill(causal, -torch.inf)
            else:
                scores = scores + bias
            y = dropout(torch.softmax(scores, -1), p, True) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=bias is None)
        h = h + dropout(attn.out_proj(y.transpose(1, 2).reshape(b, length, hidden)), p, train)
        ff = layer.linear2(dropout(F.gelu(layer.linear1(layer.norm2(h))), p, train))
        return h + dropout(ff, p, train)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout. On CPU the keep mask comes from 16 random bits per element (64-bit draws
    viewed as int16), about 8x faster than torch's per-element Bernoulli sampling there, which took
    over a third of a training step; the drop rate is p rounded to a multiple of 1/65536. Elsewhere
    (CUDA) torch's own dropout."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    n = x.numel()
    bits = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 3) // 4,), dtype=torch.int64).view(torch.int16)[:n]
    keep = bits.view(x.shape) >= round(p * 65536) - 32768
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


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
