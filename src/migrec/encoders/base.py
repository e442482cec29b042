"""The one interface every text encoder implements.

An encoder turns a list of strings into a float32 matrix ``[n, dim]``. Its
``model_id`` names the model *and* every setting that changes the numbers, so
that caches keyed by it never mix vectors from different encoders.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

import numpy as np


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Row-wise unit length; all-zero rows (e.g. empty text) stay zero instead of NaN."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0).astype(np.float32)


class TextEncoder(ABC):
    """Base class: subclasses implement ``_encode``, ``model_id`` and ``dim``.

    ``encode`` handles the shared chores (empty input, dtype, shape checks and
    optional L2 normalisation) so every backend behaves the same.
    """

    normalize: bool = True

    @property
    @abstractmethod
    def model_id(self) -> str:
        """Stable identifier of model + output-changing settings (used as cache key)."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of each output vector."""

    @abstractmethod
    def _encode(self, texts: list[str]) -> np.ndarray:
        """Raw vectors for a non-empty list of strings, before normalisation."""

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        """Encode ``texts`` into a float32 array ``[len(texts), dim]``."""
        if isinstance(texts, str):  # a bare string would otherwise be encoded per character
            raise TypeError("encode() takes a list of strings, not a single string")
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.asarray(self._encode(texts), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise RuntimeError(f"{self.model_id}: expected {len(texts)} vectors, got shape {out.shape}")
        return l2_normalize(out) if self.normalize else out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_id!r})"


def norm_suffix(normalize: bool) -> str:
    """Shared model-id suffix so normalised and raw vectors never share cache entries."""
    return "norm" if normalize else "raw"
