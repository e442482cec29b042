"""The trainable top of a sentence model: its top BERT layers + mean pooling over cached token states.

`TextTower` turns the kept lower-layer token states of catalogue items (migrec.encoders.tuning's
`LowerStates`) into sentence vectors, exactly as the frozen encoder does before training, and
learns from the recommendation loss. Items are table rows (item + 1; row 0 is padding).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class TopLayers(nn.Module):
    """The top BERT layers + mean pooling (+ unit length): token states -> sentence vectors."""

    def __init__(self, config: dict, layers: int, normalize: bool):
        from transformers import BertConfig
        from transformers.models.bert.modeling_bert import BertLayer

        super().__init__()
        cfg = BertConfig(**{k: v for k, v in config.items() if k not in ("architectures", "transformers_version")})
        cfg._attn_implementation = "sdpa"
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(layers))
        self.normalize = normalize

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """states [b, T, d], mask [b, T] (True on real tokens) -> [b, d]."""
        additive = torch.zeros(mask.shape, dtype=states.dtype, device=states.device)
        additive = additive.masked_fill(~mask, torch.finfo(states.dtype).min)[:, None, None, :]
        h = states
        for layer in self.layers:
            out = layer(h, additive)
            h = out[0] if isinstance(out, tuple) else out
        weights = mask.to(h.dtype)[..., None]
        pooled = (h * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


class TextTower(nn.Module):
    """Sentence vectors of table rows from ragged cached token states (item i at offsets[i]:offsets[i+1])."""

    def __init__(self, states, layers: int = 1, chunk: int = 256):
        super().__init__()
        self.top = TopLayers(states.config, layers, states.normalize)
        self.top.layers.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in states.weights.items()})
        # not saved with the weights: a fitted model keeps only the tuned vectors (InterestModel bakes them)
        self.register_buffer("tokens", torch.from_numpy(np.ascontiguousarray(states.tokens)), persistent=False)
        self.register_buffer("offsets", torch.from_numpy(np.asarray(states.offsets, dtype=np.int64)), persistent=False)
        self.chunk = chunk

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """Sentence vectors of table rows `rows` (>= 1) -> [len(rows), d] (float32)."""
        items = rows - 1
        start, stop = self.offsets[items], self.offsets[items + 1]
        length = stop - start
        width = int(length.max()) if len(rows) else 0
        pos = start[:, None] + torch.arange(width, device=rows.device)
        mask = torch.arange(width, device=rows.device) < length[:, None]
        states = self.tokens[torch.where(mask, pos, 0)].float() * mask[..., None]
        return self.top(states, mask).float()

    @torch.no_grad()
    def all_rows(self) -> torch.Tensor:
        """Vectors of every item ([n_items, d]), a chunk of similar-length items at a time."""
        n = len(self.offsets) - 1
        out = torch.empty(n, self.tokens.shape[1], device=self.tokens.device)
        order = torch.argsort(self.offsets[1:] - self.offsets[:-1])
        for s in range(0, n, self.chunk):
            rows = order[s:s + self.chunk]
            out[rows] = self(rows + 1)
        return out
