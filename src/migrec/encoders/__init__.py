"""Text encoders: turn item text into vectors (hashing, sentence-transformers, OpenAI-compatible APIs).

Typical use::

    from migrec.encoders import encode_catalogue, make_encoder
    vectors = encode_catalogue(dataset.catalogue, make_encoder("st"), cache_dir=True)

Heavy dependencies (torch, sentence-transformers) load only when a
SentenceTransformerEncoder first encodes.
"""
from .base import TextEncoder, l2_normalize
from .cache import CachedEncoder, EmbeddingCache, default_cache_dir
from .factory import encode_catalogue, make_encoder
from .hashing import HashingEncoder
from .openai_compat import EmbeddingAPIError, OpenAICompatibleEncoder
from .sentence import SentenceTransformerEncoder, bundled_minilm_path
from .text import DEFAULT_TEMPLATE, ItemTextTemplate

__all__ = [
    "TextEncoder", "l2_normalize",
    "HashingEncoder", "SentenceTransformerEncoder", "OpenAICompatibleEncoder", "EmbeddingAPIError",
    "ItemTextTemplate", "DEFAULT_TEMPLATE",
    "EmbeddingCache", "CachedEncoder", "default_cache_dir",
    "encode_catalogue", "make_encoder", "bundled_minilm_path",
]
