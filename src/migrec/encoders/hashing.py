"""Feature-hashing encoder: a deterministic lexical baseline that needs no model.

Word n-grams are hashed into ``dim`` buckets with a sign bit (signed hashing
keeps collisions unbiased). The hash is blake2b keyed by ``seed`` rather than
Python's ``hash()``, which is salted per process and would make vectors change
between runs.
"""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import numpy as np

from .base import TextEncoder, norm_suffix

_TOKEN = re.compile(r"\w+", re.UNICODE)


@lru_cache(maxsize=1 << 18)
def _bucket(token: str, dim: int, seed: int) -> tuple[int, float]:
    """(bucket, sign) of one n-gram; cached because catalogues repeat words a lot."""
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8, key=seed.to_bytes(8, "little")).digest()
    h = int.from_bytes(digest, "little")
    return h % dim, (-1.0 if h >> 63 else 1.0)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (unicode letters/digits/underscore)."""
    return _TOKEN.findall(text.lower())


class HashingEncoder(TextEncoder):
    """Signed feature hashing of word n-grams (unigrams and bigrams by default)."""

    def __init__(self, dim: int = 256, ngram: tuple[int, int] = (1, 2), seed: int = 0, normalize: bool = True):
        lo, hi = ngram
        if dim < 1 or not 1 <= lo <= hi:
            raise ValueError(f"need dim >= 1 and 1 <= ngram[0] <= ngram[1], got dim={dim}, ngram={ngram}")
        self._dim, self.ngram, self.seed, self.normalize = int(dim), (int(lo), int(hi)), int(seed), normalize

    @property
    def model_id(self) -> str:
        lo, hi = self.ngram
        return f"hashing:{self._dim}:ng{lo}-{hi}:s{self.seed}:{norm_suffix(self.normalize)}"

    @property
    def dim(self) -> int:
        return self._dim

    def _ngrams(self, text: str) -> list[str]:
        words = tokenize(text)
        lo, hi = self.ngram
        return [" ".join(words[i:i + n]) for n in range(lo, hi + 1) for i in range(len(words) - n + 1)]

    def _encode(self, texts: list[str]) -> np.ndarray:
        rows, cols, vals = [], [], []
        for r, text in enumerate(texts):
            for gram in self._ngrams(text):
                col, sign = _bucket(gram, self._dim, self.seed)
                rows.append(r)
                cols.append(col)
                vals.append(sign)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        np.add.at(out, (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)),
                  np.asarray(vals, dtype=np.float32))
        return out
