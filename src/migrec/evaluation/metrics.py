"""Ranking metrics as pure, vectorised functions.

Everything starts from the 0-based *rank* of each target item among all candidate
items. Ranks arrive as a float array ``[n_users, max_targets]`` padded with ``inf``
(a user with 2 targets has 2 finite entries), so one code path serves leave-one-out
(one target) and time splits (many targets).

Rank rule (used by `target_ranks`): rank = number of candidates scoring strictly
higher, plus the number of candidates with an *equal* score and a lower item index.
That is the position the item takes in a stable sort by descending score, so:
  * with continuous scores ties are rare and the rule equals "strictly greater";
  * a degenerate model that scores every item the same does not get rank 0 for
    everything (pure "strictly greater" would give it perfect metrics);
  * the ranks of several targets of one user are distinct positions in one list,
    which is what NDCG over that list needs.
"""
from __future__ import annotations

import numpy as np

ACCURACY = ("HR", "Recall", "NDCG", "MRR", "Precision")


# -- from scores to ranks and top-k lists ----------------------------------------------
def pad_ranks(rank_lists) -> np.ndarray:
    """List of per-user rank arrays -> float64 [n_users, max_len] padded with inf."""
    width = max((len(r) for r in rank_lists), default=0)
    out = np.full((len(rank_lists), max(width, 1)), np.inf)
    for i, r in enumerate(rank_lists):
        out[i, :len(r)] = r
    return out


def target_ranks(scores: np.ndarray, targets: list, sort_threshold: int = 16) -> np.ndarray:
    """0-based rank of each target in each row of `scores` (see the module rule).

    Cost: one pass over the row per target (two comparisons). Rows with more than
    `sort_threshold` targets are ranked by one stable argsort instead (n log n),
    which is cheaper when there are many targets.
    """
    scores = np.asarray(scores)
    n_rows, n_items = scores.shape
    n_t = np.array([len(t) for t in targets])
    ranks = np.full((n_rows, max(int(n_t.max(initial=0)), 1)), np.inf)
    many = n_t > sort_threshold
    for row in np.flatnonzero(many):
        order = np.argsort(-scores[row], kind="stable")   # ties -> lower index first
        pos = np.empty(n_items, dtype=np.int64)
        pos[order] = np.arange(n_items)
        ranks[row, :n_t[row]] = pos[targets[row]]
    for j in range(int(n_t[~many].max(initial=0))):
        rows = np.flatnonzero((n_t > j) & ~many)
        t = np.array([targets[r][j] for r in rows], dtype=np.int64)
        block = scores if len(rows) == n_rows else scores[rows]
        s_t = block[np.arange(len(rows)), t][:, None]
        greater = np.count_nonzero(block > s_t, axis=1)
        equal = np.count_nonzero(block == s_t, axis=1)
        # Ties are rare: only rows with another item at the same score pay for the index rule.
        for i in np.flatnonzero(equal > 1):
            greater[i] += np.count_nonzero(block[i, :t[i]] == s_t[i, 0])
        ranks[rows, j] = greater
    return ranks


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Item indices of the k best scores per row, best first; int64 [n_rows, k].

    Selection is O(n_items) per row (torch.topk, multi-threaded and ~10x faster than
    numpy's argpartition; numpy when torch is missing); the k winners are then sorted by
    (score desc, index asc). Ties at the k-th place go to the lower item index, so the
    lists agree with `target_ranks`: an item is in the top k exactly when its rank < k.
    Scores must not contain NaN.
    """
    scores = np.asarray(scores)
    k = min(int(k), scores.shape[1])
    part = _select(scores, k)
    vals = np.take_along_axis(scores, part, 1)
    cut = vals.min(1)
    # argpartition picks arbitrarily among items tied at the cut; redo the (rare) rows where that matters.
    for row in np.flatnonzero(np.count_nonzero(scores >= cut[:, None], axis=1) > k):
        above = np.flatnonzero(scores[row] > cut[row])
        tied = np.flatnonzero(scores[row] == cut[row])[:k - len(above)]   # flatnonzero is index-ordered
        part[row] = np.concatenate([above, tied])
        vals[row] = scores[row, part[row]]
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, 1)


def _select(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of k largest scores per row, in no particular order."""
    try:
        import torch
    except ImportError:
        return np.argpartition(-scores, k - 1, axis=1)[:, :k]
    if scores.dtype not in (np.float32, np.float64) or not scores.flags.writeable:
        scores = scores.astype(np.float32)     # torch.from_numpy needs a writeable float array
    t = torch.from_numpy(np.ascontiguousarray(scores))
    return torch.topk(t, k, dim=1, sorted=False).indices.numpy().astype(np.int64)


# -- accuracy -----------------------------------------------------------------------
def _discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(n) + 2.0)


def accuracy_per_user(ranks: np.ndarray, k: int) -> dict:
    """Per-user HR, Recall, NDCG, MRR and Precision at cut-off k (binary relevance).

    HR: 1 if any target is in the top k. Recall: share of the user's targets in the top
    k. NDCG: sum of 1/log2(rank+2) over hits, divided by the ideal DCG of
    min(#targets, k) hits at the top. MRR: 1/(rank+1) of the best-ranked target if it is
    within k, else 0. Precision: hits / k.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.ndim == 1:
        ranks = ranks[:, None]
    n_t = np.isfinite(ranks).sum(1)
    hit = ranks < k
    n_hit = hit.sum(1)
    safe = np.where(hit, ranks, 0.0)
    dcg = np.where(hit, 1.0 / np.log2(safe + 2.0), 0.0).sum(1)
    ideal = np.concatenate([[0.0], np.cumsum(_discounts(k))])[np.minimum(n_t, k)]
    best = ranks.min(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "HR": (n_hit > 0).astype(np.float64),
            "Recall": n_hit / n_t,
            "NDCG": dcg / ideal,
            "MRR": np.where(best < k, 1.0 / (np.where(best < k, best, 0.0) + 1.0), 0.0),
            "Precision": n_hit / float(k),
        }


def accuracy_metrics(ranks: np.ndarray, ks=(10, 20, 50), prefix: str = "") -> dict:
    """Means over users of `accuracy_per_user`, keyed like "NDCG@10" (with an optional prefix)."""
    out = {}
    for k in ks:
        for name, values in accuracy_per_user(ranks, k).items():
            out[f"{prefix}{name}@{k}"] = float(np.mean(values)) if len(values) else float("nan")
    return out


# -- beyond accuracy (on the top-k lists) ---------------------------------------------
def coverage(top: np.ndarray, n_items: int) -> float:
    """Share of the whole item universe that appears in at least one list."""
    return len(np.unique(top)) / float(n_items) if n_items else float("nan")


def unit_vectors(item_vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (all-zero rows stay zero), float32."""
    v = np.asarray(item_vectors, dtype=np.float32)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def intra_list_diversity(top: np.ndarray, item_vectors: np.ndarray | None, normalized: bool = False) -> np.ndarray:
    """Per list: mean pairwise cosine distance (1 - cos) of its items' vectors, in [0, 2].

    Items with an all-zero vector count as orthogonal to everything. NaN for lists with
    fewer than two items or when there are no vectors. Pass `normalized=True` with
    `unit_vectors(...)` to skip re-normalising on every call.
    """
    n, k = top.shape
    if item_vectors is None or k < 2:
        return np.full(n, np.nan)
    lists = (item_vectors if normalized else unit_vectors(item_vectors))[top]    # [n, k, d]
    # Sum of cosines over ordered pairs i != j = |sum_i v_i|^2 - sum_i |v_i|^2: O(k d), not O(k^2 d).
    total = lists.sum(1, dtype=np.float64)
    off_diag = (total * total).sum(1) - np.einsum("nkd,nkd->n", lists, lists, dtype=np.float64)
    return 1.0 - off_diag / (k * (k - 1))


def self_information(item_counts: np.ndarray) -> np.ndarray:
    """-log2 p_i with p_i = (count_i + 1) / (total + n_items).

    The +1 (Laplace) smoothing gives never-seen (cold) items a finite, maximal novelty.
    """
    counts = np.asarray(item_counts, dtype=np.float64)
    return -np.log2((counts + 1.0) / (counts.sum() + len(counts)))


def novelty(top: np.ndarray, item_counts: np.ndarray) -> np.ndarray:
    """Per list: mean self-information of its items (higher = less popular items)."""
    return self_information(item_counts)[top].mean(1)


def average_popularity(top: np.ndarray, item_counts: np.ndarray) -> np.ndarray:
    """Per list: mean training interaction count of its items."""
    return np.asarray(item_counts, dtype=np.float64)[top].mean(1)


def beyond_accuracy_metrics(top: np.ndarray, ks, item_counts: np.ndarray,
                            item_vectors: np.ndarray | None = None) -> dict:
    """coverage@k, diversity@k, novelty@k, avg_pop@k from lists `top` [n_users, >=max(ks)]."""
    out = {}
    for k in ks:
        t = top[:, :k]
        out[f"coverage@{k}"] = coverage(t, len(item_counts))
        out[f"diversity@{k}"] = nanmean(intra_list_diversity(t, item_vectors))
        out[f"novelty@{k}"] = float(np.mean(novelty(t, item_counts))) if len(t) else float("nan")
        out[f"avg_pop@{k}"] = float(np.mean(average_popularity(t, item_counts))) if len(t) else float("nan")
    return out


def nanmean(x: np.ndarray) -> float:
    """Mean ignoring NaN; NaN when nothing is left."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x[~np.isnan(x)])) if (~np.isnan(x)).any() else float("nan")
