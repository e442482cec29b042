"""The pipeline in one place: data set -> split -> item text vectors -> models -> evaluation.

The registry tables (migrec.registry) map the short names the CLI and benchmarks use to
loaders and models, so a run is described by plain strings and numbers (what a config
file would hold).
"""
from __future__ import annotations

import logging
from pathlib import Path

from .data import Dataset, Split, leave_one_out
from .data.download import resolve_movielens
from .models.base import Recommender
from .registry import LOADERS, MODELS, SEQUENTIAL, TEXT_MODELS

log = logging.getLogger(__name__)
__all__ = ["LOADERS", "MODELS", "SEQUENTIAL", "TEXT_MODELS", "load_dataset", "build_model", "attach_item_vectors",
           "attach_item_states", "prepare_split", "cache_dir_for"]


def load_dataset(kind: str, path: str | None = None, **kw) -> Dataset:
    """Load a data set by loader name; MovieLens paths fall back to ../shared/data or a download."""
    if kind not in LOADERS:
        raise ValueError(f"unknown data set kind {kind!r}; choose from {sorted(LOADERS)}")
    if kind in ("ml-100k", "ml-1m"):
        path = resolve_movielens(path, kind)
    elif path is None:
        raise ValueError(f"data set kind {kind!r} needs a path")
    return LOADERS[kind](path, **kw)


def build_model(name: str, **params) -> Recommender:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    model = MODELS[name](**params)
    model.name = name
    return model


def attach_item_vectors(split: Split, encoder: str = "st", cache_dir=True, template: str | None = None) -> Split:
    """Encode the catalogue's item text once (cached on disk) and hand it to the split."""
    from .encoders import encode_catalogue, make_encoder

    enc = make_encoder(encoder)
    log.info("encoding %d items with %s", split.train.n_items, enc.model_id)
    split.train.item_vectors = encode_catalogue(split.train.catalogue, enc, template=template, cache_dir=cache_dir)
    split.train.encoder = enc.model_id
    return split


def attach_item_states(split: Split, layers: int, encoder: str = "st", template: str | None = None) -> Split:
    """The sentence model's lower-layer token states, for an interest model that fine-tunes its top
    `layers` layers (InterestModel(text_layers=layers)); one pass of the lower layers, not cached."""
    from .encoders.tuning import encode_lower_states

    log.info("lower-layer states of %d items below the top %d layers of %s", split.train.n_items, layers, encoder)
    split.train.item_states = encode_lower_states(split.train.catalogue, encoder, layers=layers, template=template)
    return split


def prepare_split(dataset: Dataset, encoder: str | None = "st", cache_dir=True, template: str | None = None,
                  min_history: int = 3) -> Split:
    split = leave_one_out(dataset, min_history=min_history)
    if encoder:
        attach_item_vectors(split, encoder, cache_dir, template)
    return split


def cache_dir_for(root: str | Path | None) -> Path | bool:
    return Path(root) if root else True
