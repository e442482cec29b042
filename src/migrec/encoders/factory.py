"""Build encoders from short spec strings and encode whole catalogues."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .base import TextEncoder
from .cache import CachedEncoder, EmbeddingCache, default_cache_dir
from .hashing import HashingEncoder
from .openai_compat import DEFAULT_BASE_URL, OpenAICompatibleEncoder
from .sentence import DEFAULT_MODEL, SentenceTransformerEncoder
from .text import ItemTextTemplate

SPEC_HELP = ('"hashing", "hashing:512", "st", "st:all-MiniLM-L6-v2", "st:/path/to/model", '
             '"openai:text-embedding-3-small"')


def make_encoder(spec: str, **kw) -> TextEncoder:
    """Encoder from a spec string; keyword arguments go to the encoder's constructor.

    ``cache_dir=`` (path, or True for the default directory) wraps the result in a
    CachedEncoder. For "openai:..." the base URL and key default to the
    environment variables MIGREC_EMBEDDINGS_URL and OPENAI_API_KEY.
    """
    cache_dir = kw.pop("cache_dir", None)
    kind, _, arg = spec.strip().partition(":")  # split once: "st:/a/b" and "st:C:\\m" keep their paths
    kind = kind.lower()
    if kind == "hashing":
        if arg:
            try:
                kw["dim"] = int(arg)
            except ValueError:
                raise ValueError(f"bad spec {spec!r}: the hashing dimension must be an integer") from None
        encoder: TextEncoder = HashingEncoder(**kw)
    elif kind in ("st", "sentence-transformers"):
        encoder = SentenceTransformerEncoder(model=arg or DEFAULT_MODEL, **kw)
    elif kind == "openai":
        if not arg:
            raise ValueError(f"bad spec {spec!r}: name the model, e.g. openai:text-embedding-3-small")
        kw.setdefault("base_url", os.environ.get("MIGREC_EMBEDDINGS_URL") or DEFAULT_BASE_URL)
        encoder = OpenAICompatibleEncoder(arg, **kw)
    else:
        raise ValueError(f"unknown encoder spec {spec!r}; use one of {SPEC_HELP}")
    return _with_cache(encoder, cache_dir)


def _with_cache(encoder: TextEncoder, cache_dir) -> TextEncoder:
    if cache_dir is None or cache_dir is False or isinstance(encoder, CachedEncoder):
        return encoder
    directory = default_cache_dir() if cache_dir is True else Path(cache_dir)
    return CachedEncoder(encoder, EmbeddingCache(directory))


def encode_catalogue(catalogue: pd.DataFrame, encoder: TextEncoder | str,
                     template: ItemTextTemplate | str | None = None,
                     cache_dir: str | os.PathLike | bool | None = None) -> np.ndarray:
    """float32 ``[n_items, dim]`` item vectors, rows in catalogue order.

    ``encoder`` may be an encoder or a spec string (see make_encoder); ``template``
    an ItemTextTemplate or a template string. ``cache_dir``: None = no cache,
    True = default directory ($MIGREC_CACHE or ~/.cache/migrec/embeddings), or a path.
    """
    if isinstance(encoder, str):
        encoder = make_encoder(encoder)
    return _with_cache(encoder, cache_dir).encode(item_texts(catalogue, template))


def item_texts(catalogue: pd.DataFrame, template: ItemTextTemplate | str | None = None) -> list[str]:
    """The catalogue's item texts as `template` (an ItemTextTemplate, a template string or None for
    the default) renders them: what every encoder is given."""
    if template is None or isinstance(template, str):
        template = ItemTextTemplate(template) if template else ItemTextTemplate()
    return template.render(catalogue)
