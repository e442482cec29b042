"""A readable interest space: the catalogue's categories, or named clusters of item text vectors.

`TopicSpace.item_topics` is an [n_items, n_topics] matrix whose rows sum to one (an item with
three genres gives each a third), so a user's interest distribution is just the mean of the
rows of the items they touched.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Words that name no topic; title years and articles would otherwise win every cluster.
_STOP = set("""a an and the of in on at to for with from by is it its as or be are was this that
my your his her our their me you he she we they i not no so do de la le les el du des der die das il
ii iii iv part vol edition new one two""".split())


@dataclass
class TopicSpace:
    """Topics with names, and each catalogue item's share in each topic."""

    names: list[str]
    item_topics: np.ndarray          # [n_items, n_topics], rows sum to one (catalogue order)
    kind: str                        # "categories" or "text-clusters"

    @property
    def n_topics(self) -> int:
        return len(self.names)

    def one_hot(self, item_index) -> np.ndarray:
        """Topic rows of the given catalogue positions, [n_events, n_topics]."""
        return self.item_topics[np.asarray(item_index, dtype=int)]


def category_topics(catalogue: pd.DataFrame, column: str = "category", sep: str = ",",
                    min_items: int = 1) -> TopicSpace:
    """Topics = the catalogue's categories (e.g. MovieLens genres in `category`, "A, B").

    Items without a category go to an "(unknown)" topic so every row still sums to one;
    categories with fewer than `min_items` items fold into it too.
    """
    if column not in catalogue.columns:
        raise ValueError(f"catalogue has no {column!r} column; columns are {list(catalogue.columns)}")
    labels = [[c.strip() for c in str(v).split(sep) if c.strip()] for v in catalogue[column].fillna("")]
    counts = Counter(c for row in labels for c in row)
    names = sorted(c for c, k in counts.items() if k >= min_items and c.lower() != "unknown")
    if not names:
        raise ValueError(f"column {column!r} holds no categories")
    index = {c: i for i, c in enumerate(names)}
    unknown = len(names)
    m = np.zeros((len(labels), len(names) + 1))
    for r, row in enumerate(labels):
        cols = [index[c] for c in row if c in index] or [unknown]
        m[r, cols] = 1.0 / len(cols)
    if not m[:, unknown].any():            # no item needs the fallback topic
        m = m[:, :unknown]
    else:
        names = names + ["(unknown)"]
    return TopicSpace(names, m, "categories")


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z']+", str(text).lower()) if w not in _STOP and len(w) > 2]


def name_topics(texts, labels, n_topics: int | None = None, n_words: int = 3) -> list[str]:
    """Name each cluster by its most distinctive words: high share inside the cluster relative
    to the whole catalogue (a smoothed log ratio weighted by in-cluster frequency)."""
    labels = np.asarray(labels, dtype=int)
    texts = list(texts)
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    k = int(labels.max()) + 1 if n_topics is None else n_topics
    docs = [set(_words(t)) for t in texts]          # document frequency: one vote per item
    total = Counter(w for d in docs for w in d)
    n = len(docs)
    names = []
    for c in range(k):
        members = [docs[i] for i in np.flatnonzero(labels == c)]
        inside = Counter(w for d in members for w in d)
        m = max(len(members), 1)
        scored = sorted(((f / m) * np.log((f / m + 1e-3) / (total[w] / n + 1e-3)), w)
                        for w, f in inside.items() if f >= 2 or len(members) < 5)
        words = [w for _, w in sorted(scored, reverse=True)[:n_words]]
        names.append(" / ".join(words) if words else f"topic {c}")
    return names


class TextTopics:
    """Topics found by k-means over item text vectors, each named from its items' text."""

    def __init__(self, n_topics: int = 20, n_words: int = 3, seed: int = 0):
        self.n_topics = n_topics
        self.n_words = n_words
        self.seed = seed

    def fit(self, item_vectors: np.ndarray, texts) -> "TextTopics":
        from sklearn.cluster import KMeans

        x = np.asarray(item_vectors, dtype=np.float64)
        if x.ndim != 2 or len(x) < self.n_topics:
            raise ValueError(f"item_vectors must be [n_items >= n_topics={self.n_topics}, d]; got {x.shape}")
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)   # cosine geometry
        km = KMeans(self.n_topics, n_init=4, random_state=self.seed).fit(x)
        self.labels_ = km.labels_
        self.centers_ = km.cluster_centers_
        self.names_ = name_topics(texts, self.labels_, self.n_topics, self.n_words)
        return self

    def topic_space(self) -> TopicSpace:
        m = np.zeros((len(self.labels_), self.n_topics))
        m[np.arange(len(self.labels_)), self.labels_] = 1.0
        return TopicSpace(list(self.names_), m, "text-clusters")


def topic_space(catalogue: pd.DataFrame, item_vectors: np.ndarray | None = None, column: str = "category",
                n_topics: int = 20, seed: int = 0) -> TopicSpace:
    """Categories where the catalogue has them, else named k-means topics of item text vectors."""
    if column in catalogue.columns and catalogue[column].fillna("").str.strip().ne("").any():
        return category_topics(catalogue, column)
    if item_vectors is None:
        raise ValueError(f"catalogue has no {column!r} categories; pass item_vectors to cluster item text")
    return TextTopics(n_topics, seed=seed).fit(item_vectors, catalogue["title"]).topic_space()
