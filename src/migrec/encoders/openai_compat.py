"""Client for any OpenAI-compatible ``POST /embeddings`` endpoint.

Works with the OpenAI API and with local servers that mimic it (vLLM, Ollama,
text-embeddings-inference, LiteLLM, ...). Transient failures (connection
errors, 429, 5xx) are retried with exponential backoff, honouring
``Retry-After``; other 4xx answers fail at once with the server's message.
"""
from __future__ import annotations

import email.utils
import os
import time

import numpy as np
import requests

from .base import TextEncoder, norm_suffix

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Dimensions of well-known OpenAI models, so `dim` needs no request for them.
_KNOWN_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
_MAX_BACKOFF = 60.0


class EmbeddingAPIError(RuntimeError):
    """The embeddings endpoint refused the request (or kept failing)."""

    def __init__(self, message: str, status: int | None = None, body: str = ""):
        self.status, self.body = status, body
        super().__init__(message)


def _retry_after(response: requests.Response) -> float | None:
    """Seconds asked for by a Retry-After header (delta-seconds or HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _snippet(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


class OpenAICompatibleEncoder(TextEncoder):
    """Embeddings from an OpenAI-compatible HTTP API, sent in batches."""

    def __init__(self, model: str, base_url: str = DEFAULT_BASE_URL, api_key: str | None = None,
                 batch_size: int = 128, max_retries: int = 5, timeout: float = 60,
                 dimensions: int | None = None, normalize: bool = True, backoff: float = 1.0):
        self.model, self.base_url = model, base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.batch_size, self.max_retries, self.timeout = int(batch_size), int(max_retries), timeout
        self.dimensions, self.normalize, self.backoff = dimensions, normalize, float(backoff)
        self._dim = dimensions or _KNOWN_DIMS.get(model)
        self._session = requests.Session()
        self._sleep = time.sleep  # swapped out by tests to observe delays
        self.requests_sent = 0

    @property
    def model_id(self) -> str:
        dims = f":d{self.dimensions}" if self.dimensions else ""
        # The URL is part of the id: two servers may serve different weights under one name.
        return f"openai:{self.model}@{self.base_url}{dims}:{norm_suffix(self.normalize)}"

    @property
    def dim(self) -> int:
        if self._dim is None:  # unknown model: ask the server once
            self._dim = int(self._request(["dimension probe"]).shape[1])
        return self._dim

    def _encode(self, texts: list[str]) -> np.ndarray:
        # The OpenAI API rejects empty strings; a space embeds "nothing" just as well.
        texts = [t if t.strip() else " " for t in texts]
        parts = [self._request(texts[i:i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        out = np.concatenate(parts, axis=0)
        self._dim = out.shape[1]
        return out

    # -- HTTP -----------------------------------------------------------------------
    def _request(self, batch: list[str]) -> np.ndarray:
        payload = {"model": self.model, "input": batch}
        if self.dimensions:
            payload["dimensions"] = int(self.dimensions)
        headers = {"Content-Type": "application/json"}
        if self.api_key:  # local servers often need no key at all
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = f"{self.base_url}/embeddings"
        for attempt in range(self.max_retries + 1):
            wait = min(_MAX_BACKOFF, self.backoff * 2 ** attempt)
            try:
                self.requests_sent += 1
                resp = self._session.post(url, json=payload, headers=headers, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                failure = EmbeddingAPIError(f"cannot reach {url}: {exc}")
            else:
                if resp.status_code == 200:
                    return self._parse(resp, len(batch))
                failure = EmbeddingAPIError(
                    f"{url} answered HTTP {resp.status_code}: {_snippet(resp.text)}", resp.status_code, resp.text)
                if resp.status_code != 429 and resp.status_code < 500:
                    raise failure  # bad request, bad key, unknown model: retrying will not help
                asked = _retry_after(resp)
                if asked is not None:
                    wait = min(asked, _MAX_BACKOFF * 5)
            if attempt == self.max_retries:
                raise EmbeddingAPIError(f"gave up after {attempt + 1} attempts; last error: {failure}",
                                        failure.status, failure.body) from failure
            self._sleep(wait)
        raise AssertionError("unreachable")

    def _parse(self, resp: requests.Response, expected: int) -> np.ndarray:
        try:
            items = resp.json()["data"]
            items = sorted(items, key=lambda d: d["index"])  # servers may answer out of order
            out = np.asarray([d["embedding"] for d in items], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingAPIError(f"unexpected response from {self.base_url}: {_snippet(resp.text)}",
                                    resp.status_code, resp.text) from exc
        if out.ndim != 2 or out.shape[0] != expected:
            raise EmbeddingAPIError(f"asked for {expected} embeddings, got array of shape {out.shape}",
                                    resp.status_code, resp.text)
        return out
