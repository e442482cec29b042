"""On-disk embedding cache and an encoder wrapper that uses it.

Storage: one SQLite file per model id (``<sha1(model_id)[:16]>.sqlite``) in the
cache directory, table ``vectors(key BLOB UNIQUE, vec BLOB)`` where
``key = sha1(model_id + "\\x00" + text)`` and ``vec`` is the raw float32 bytes.
Why SQLite: it is in the stdlib, appends are transactional, WAL mode lets
several processes read and write the same cache, and lookups of 100k keys
take well under a second. One file per model keeps models isolated and makes
dropping a model a file delete.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .base import TextEncoder

_CHUNK = 500  # keys per "IN (...)" query, safely under SQLite's variable limit


def default_cache_dir() -> Path:
    """$MIGREC_CACHE, else ~/.cache/migrec/embeddings."""
    env = os.environ.get("MIGREC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "migrec" / "embeddings"


def cache_key(model_id: str, text: str) -> bytes:
    return hashlib.sha1(f"{model_id}\x00{text}".encode("utf-8")).digest()


class EmbeddingCache:
    """Vectors keyed by (model_id, text), persisted under ``directory``."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        self.directory.mkdir(parents=True, exist_ok=True)

    def path_for(self, model_id: str) -> Path:
        return self.directory / f"{hashlib.sha1(model_id.encode('utf-8')).hexdigest()[:16]}.sqlite"

    @contextlib.contextmanager
    def _connect(self, model_id: str):
        # A fresh connection per operation: safe across threads and forked workers.
        con = sqlite3.connect(self.path_for(model_id), timeout=60)
        try:
            con.execute("PRAGMA page_size=16384")  # only takes effect on a new file; fits vectors in fewer pages
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            # A plain rowid table: rows are appended in insertion order, and the small
            # unique index on the 20-byte key serves lookups. (WITHOUT ROWID would put
            # kilobyte-sized vectors inside the key B-tree, which is several times slower.)
            con.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB NOT NULL UNIQUE, vec BLOB NOT NULL)")
            con.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
            # Record the full id so a file can be traced back to its model (and hash clashes caught).
            con.execute("INSERT OR IGNORE INTO meta VALUES ('model_id', ?)", (model_id,))
            stored = con.execute("SELECT value FROM meta WHERE name='model_id'").fetchone()[0]
            if stored != model_id:
                raise RuntimeError(f"cache file {self.path_for(model_id)} belongs to {stored!r}, not {model_id!r}")
            yield con
            con.commit()
        finally:
            con.close()

    def get_many(self, model_id: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors for those ``texts`` that are present (text -> float32 vector)."""
        by_key = {cache_key(model_id, t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        if not by_key or not self.path_for(model_id).exists():
            return found
        keys = list(by_key)
        with self._connect(model_id) as con:
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i:i + _CHUNK]
                sql = f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(chunk))})"
                for key, blob in con.execute(sql, chunk):
                    found[by_key[key]] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model_id: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store one vector per text (an existing entry for the same key is kept)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(texts) != len(vectors):
            raise ValueError(f"{len(texts)} texts but {len(vectors)} vectors")
        rows = [(cache_key(model_id, t), v.tobytes()) for t, v in zip(texts, vectors)]
        with self._connect(model_id) as con:
            con.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)", rows)

    def count(self, model_id: str) -> int:
        if not self.path_for(model_id).exists():
            return 0
        with self._connect(model_id) as con:
            return int(con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def clear(self, model_id: str) -> None:
        """Forget every vector of one model."""
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path_for(model_id)) + suffix).unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.directory)!r})"


@contextlib.contextmanager
def _quiet(encoder: TextEncoder):
    """Silence an inner encoder's own progress bar while ours is shown."""
    had = getattr(encoder, "show_progress", None)
    if had is not None:
        encoder.show_progress = False
    try:
        yield
    finally:
        if had is not None:
            encoder.show_progress = had


class CachedEncoder(TextEncoder):
    """Wrap an encoder so that only texts missing from the cache are encoded.

    After each ``encode``: ``last_hits`` unique texts came from the cache,
    ``last_encoded`` unique texts were computed (and stored). ``total_*`` sum
    them over the wrapper's lifetime.
    """

    def __init__(self, encoder: TextEncoder, cache: EmbeddingCache | str | os.PathLike | None = None,
                 chunk_size: int = 1024, show_progress: bool = True, progress_min: int = 300):
        self.encoder = encoder
        self.cache = cache if isinstance(cache, EmbeddingCache) else EmbeddingCache(cache)
        self.chunk_size, self.show_progress, self.progress_min = int(chunk_size), show_progress, progress_min
        self.normalize = encoder.normalize
        self.last_hits = self.last_encoded = self.total_hits = self.total_encoded = 0

    @property
    def model_id(self) -> str:
        return self.encoder.model_id

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def _encode(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - encode() is overridden
        return self.encoder.encode(texts)

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings, not a single string")
        texts = [str(t) for t in texts]
        model_id = self.model_id
        unique = list(dict.fromkeys(texts))
        found = self.cache.get_many(model_id, unique)
        missing = [t for t in unique if t not in found]
        self.last_hits, self.last_encoded = len(found), len(missing)
        self.total_hits += len(found)
        self.total_encoded += len(missing)
        if missing:
            found.update(self._encode_missing(model_id, missing))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[t] for t in texts]).astype(np.float32, copy=False)

    def _encode_missing(self, model_id: str, missing: list[str]) -> dict[str, np.ndarray]:
        """Encode in chunks, storing each chunk at once so an interrupted run keeps its work."""
        out: dict[str, np.ndarray] = {}
        bar = None
        if self.show_progress and len(missing) > self.progress_min:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(missing), desc=f"encoding ({model_id[:40]})", unit="text")
        try:
            with _quiet(self.encoder) if bar is not None else contextlib.nullcontext():
                for i in range(0, len(missing), self.chunk_size):
                    chunk = missing[i:i + self.chunk_size]
                    vectors = self.encoder.encode(chunk)
                    self.cache.put_many(model_id, chunk, vectors)
                    out.update(zip(chunk, vectors))
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return out

    def __repr__(self) -> str:
        return f"CachedEncoder({self.encoder!r}, {self.cache!r})"
