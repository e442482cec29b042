"""Fine-tuning a sentence model's top layers on the recommendation objective.

A frozen encoder gives each item one vector. To fine-tune the language model as well, its
lower layers run once per catalogue and their token states are kept (half precision,
ragged: no padding); only the top `layers` transformer layers and the mean pooling run
while a model trains (models.text_tower, fed from `LowerStates`). That fits a CPU for catalogues
of a few thousand items; larger ones train a sample of rows per step (models.interest).

After training, `TunedSentenceEncoder` is the whole sentence model with the tuned top
layers put back: it encodes new items into the same space, under a model id of its own,
so vectors from the frozen encoder are refused where tuned ones are needed.

Only BERT-architecture sentence models with mean pooling (all-MiniLM-L6-v2, the default,
among them) can be split this way; others raise a ValueError that says so.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .sentence import SentenceTransformerEncoder


def _bert_parts(st_model):
    """(transformer module, BertModel) of a loaded SentenceTransformer, or a ValueError."""
    first, pooling = st_model[0], (st_model[1] if len(st_model) > 1 else None)
    bert = getattr(first, "auto_model", None)
    mode = getattr(pooling, "pooling_mode", None) or (pooling.get_config_dict().get("pooling_mode")
                                                      if hasattr(pooling, "get_config_dict") else None)
    if bert is None or getattr(bert.config, "model_type", None) != "bert" or mode != "mean":
        raise ValueError("only BERT sentence models with mean pooling (e.g. all-MiniLM-L6-v2) can have "
                         f"their top layers fine-tuned; this one is {type(bert).__name__} with {mode} pooling")
    return first, bert


def tower_digest(weights: dict) -> str:
    """A short digest of tuned top-layer weights: part of the tuned encoder's model id."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(weights[name], dtype=np.float32).tobytes())
    return digest.hexdigest()[:12]


def tuned_model_id(base_id: str, layers: int, weights: dict) -> str:
    return f"{base_id}+tuned{layers}:{tower_digest(weights)}"


@dataclass
class LowerStates:
    """Token states below a sentence model's top `layers` layers, for every catalogue item.

    tokens: float16 [total tokens, dim], item i's tokens at offsets[i]:offsets[i + 1];
    config: the BERT configuration (a dict); weights: the top layers' initial weights
    (their state dict as arrays, keys "0.attention..."); model: the sentence model's name or path;
    encoder: the frozen encoder's model id (whose vectors these reproduce); normalize.
    """

    tokens: np.ndarray
    offsets: np.ndarray
    layers: int
    config: dict
    weights: dict
    model: str
    encoder: str
    normalize: bool

    def __len__(self) -> int:
        return len(self.offsets) - 1


def lower_states(texts: list[str], encoder: SentenceTransformerEncoder | None = None, layers: int = 1,
                 max_tokens: int = 64, batch_size: int = 64, progress: bool = True) -> LowerStates:
    """Run the sentence model's lower layers over `texts` once; keep their token states.

    max_tokens: texts are cut to this many tokens (the frozen encoder's own limit is
    usually 256 or 512); item titles and short descriptions fit in 64.
    """
    import torch
    from tqdm.auto import tqdm

    encoder = encoder or SentenceTransformerEncoder()
    if not isinstance(encoder, SentenceTransformerEncoder):
        raise ValueError(f"top-layer fine-tuning needs a sentence-transformers encoder, not {type(encoder).__name__}")
    first, bert = _bert_parts(encoder.model)
    n_layers = len(bert.encoder.layer)
    if not 1 <= layers <= n_layers:
        raise ValueError(f"layers must be in 1..{n_layers} for this model, not {layers}")
    device = next(bert.parameters()).device
    order = np.argsort([len(t) for t in texts], kind="stable")   # similar lengths per batch: less padding
    states = [None] * len(texts)
    bert.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(texts), batch_size), desc="lower layers", leave=False,
                          disable=not (progress and len(texts) > 256)):
            rows = order[start:start + batch_size]
            batch = first.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                    max_length=min(max_tokens, first.max_seq_length), return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            out = bert(**batch, output_hidden_states=True)
            hidden = out.hidden_states[n_layers - layers].float().cpu().numpy().astype(np.float16)
            counts = batch["attention_mask"].sum(1).cpu().numpy()
            for j, i in enumerate(rows):
                states[i] = hidden[j, : counts[j]]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in states])]).astype(np.int64)
    config = bert.config.to_dict()
    stack = torch.nn.ModuleList(bert.encoder.layer[n_layers - layers:])
    weights = {k: v.detach().cpu().float().numpy() for k, v in stack.state_dict().items()}
    return LowerStates(np.concatenate(states) if states else np.zeros((0, bert.config.hidden_size), np.float16),
                       offsets, layers, config, weights, encoder.model_name, encoder.model_id, encoder.normalize)


def encode_lower_states(catalogue, encoder: SentenceTransformerEncoder | str = "st", layers: int = 1,
                        template=None, max_tokens: int = 64) -> LowerStates:
    """`lower_states` of a catalogue's item texts, rendered as `encode_catalogue` renders them."""
    from .factory import item_texts, make_encoder

    if isinstance(encoder, str):
        encoder = make_encoder(encoder)
    return lower_states(item_texts(catalogue, template), encoder, layers, max_tokens)


class TunedSentenceEncoder(SentenceTransformerEncoder):
    """The sentence model with its top layers replaced by tuned ones (`InterestModel.text_encoder()`).

    Its model id is the frozen encoder's plus the tuned weights' digest, so a fitted model
    takes new items' vectors only from the encoder that matches its tuned text space.
    """

    def __init__(self, model: str, layers: int, weights: dict, device: str | None = None, batch_size: int = 64,
                 normalize: bool = True, show_progress: bool = True):
        super().__init__(model, device, batch_size, normalize, show_progress)
        self.layers, self.weights = int(layers), weights

    @property
    def model_id(self) -> str:
        return tuned_model_id(super().model_id, self.layers, self.weights)

    @property
    def model(self):
        if self._model is None:
            import torch

            loaded = super().model
            _, bert = _bert_parts(loaded)
            stack = torch.nn.ModuleList(bert.encoder.layer[len(bert.encoder.layer) - self.layers:])
            stack.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in self.weights.items()})
        return self._model


__all__ = ["LowerStates", "TunedSentenceEncoder", "encode_lower_states", "lower_states",
           "tuned_model_id"]

