"""Full-ranking evaluation of any Recommender, plus optional sampled metrics and segments.

Protocol: each evaluation case's target(s) are ranked against *all* items. What happens to
the items in the case's history is one explicit policy, `repeats`, that never looks at the
targets (a rule such as "mask the history except the targets" would tell the ranking where
the answer is):

  repeats="exclude"  (default; data without repeat consumption) every history item is masked
                     (scored -inf, never recommended). A target that is also in the history
                     cannot be recommended, so it counts as a miss: rank `MISSED`, a miss at
                     every cut-off that still counts as one of the case's targets.
  repeats="allow"    nothing is masked: history items compete with the rest, and a repeated
                     target can be a hit (data where users consume items again).

Every result says which policy ran (`EvalResult.repeats`, `to_dict()["repeats"]`).

Memory: users are scored `batch_size` at a time, so the peak is a small multiple of
batch_size x n_items x 4 bytes (the model's output, our masked copy, one boolean mask
for comparisons), whatever the number of users: e.g. 512 x 50k items = 100 MB per copy,
about 0.5 GB measured in all. Lower batch_size to trade speed for memory.

Speed (2 CPU cores, random scores, 50k items): about 1.5 s per 1000 users with
diversity on 384-d vectors and 100 sampled negatives; the sampled metrics loop over users
in Python (about 0.3 s per 1000 users).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..data.split import EvalSet, TrainSet
from . import metrics as M

REPEATS = ("exclude", "allow")
MISSED = float(2 ** 40)         # rank of a target the policy excluded: beyond every list, a miss at any k
HIST_STARTS = (1, 6, 21, 51)    # -> hist:1-5, hist:6-20, hist:21-50, hist:51+
POP_STARTS = (0, 1, 5, 20)      # -> item-pop:0 (cold), item-pop:1-4, item-pop:5-19, item-pop:20+


@dataclass
class EvalResult:
    metrics: dict                     # "NDCG@10" -> value (sampled ones prefixed "sampled:")
    segments: dict                    # "hist:1-5" -> {"n": ..., "NDCG@10": ...}
    n_users: int
    seconds: float
    per_user: dict = field(default_factory=dict, repr=False)   # "ranks", "topk", "sampled_ranks", ...
    repeats: str = "exclude"          # the history policy that ran (see the module docstring)

    def to_dict(self) -> dict:
        """JSON-ready summary (per-user arrays left out: they can be large)."""
        return {"metrics": dict(self.metrics), "segments": {k: dict(v) for k, v in self.segments.items()},
                "n_users": self.n_users, "seconds": self.seconds, "repeats": self.repeats}


def check_repeats(repeats: str) -> str:
    """`repeats` if it is a known policy, else ValueError."""
    if repeats not in REPEATS:
        raise ValueError(f"repeats must be one of {list(REPEATS)}, not {repeats!r}")
    return repeats


def repeats_note(repeats: str) -> str:
    """One line for a results file's protocol: which history policy ran."""
    return {"exclude": "repeats=exclude (every history item masked; a target already in the history is a miss)",
            "allow": "repeats=allow (nothing masked; a target already in the history can be a hit)"}[
        check_repeats(repeats)]


def evaluate(model, evalset: EvalSet, train: TrainSet, ks=(10, 20, 50), batch_size: int = 512,
             beyond: bool = True, item_vectors=None, sampled_negatives: int | None = None, seed: int = 0,
             segments: bool = True, progress: bool = False, candidates=None,
             hist_starts=HIST_STARTS, pop_starts=POP_STARTS, repeats: str = "exclude") -> EvalResult:
    """Evaluate `model` on `evalset` by full ranking over the `train.n_items` items.

    repeats: the history policy, "exclude" (every history item masked, a target in the history
    is a miss) or "allow" (nothing masked); see the module docstring. Sampled negatives come
    from the items the policy leaves rankable (not targets; under "exclude", not history items).
    ks: cut-offs. beyond: also coverage/diversity/novelty/avg_pop on the top-k lists
    (diversity needs `item_vectors`, else `train.item_vectors`, else NaN).
    sampled_negatives=N: extra metrics "sampled:NDCG@10", ... with each user's targets
    ranked against N items drawn uniformly (per user, reproducibly from `seed`) from the
    items not in that user's history or targets; all of them if fewer than N remain.
    segments: metrics per history-length bucket (`hist_starts`: lower bounds) and per
    target training popularity bucket (`pop_starts`). Item-popularity segments count
    targets, not users: each target is one case ranked against the non-target items.
    candidates: item indices to rank among (e.g. one domain's items in cross-domain
    evaluation); every target must be a candidate. All metrics, sampled negatives,
    coverage and popularity then live in that candidate space.
    """
    t0 = time.perf_counter()
    check_repeats(repeats)
    _check(evalset, train.n_items)
    counts = train.item_counts()
    vectors = item_vectors if item_vectors is not None else train.item_vectors
    model_evalset, local = evalset, None
    if candidates is not None:
        candidates, local = _candidate_space(candidates, train.n_items, evalset)
        evalset = _localise(evalset, local)
        counts = counts[candidates]
        vectors = None if vectors is None else np.asarray(vectors)[candidates]
    n_items = train.n_items if candidates is None else len(candidates)
    ks = tuple(sorted({int(k) for k in ks}))
    k_max = min(ks[-1], n_items)
    n = len(evalset)
    vectors = M.unit_vectors(vectors) if vectors is not None and beyond else None   # once, not per batch

    rank_rows, sampled_rows = [], []
    tops = np.empty((n if beyond else 0, k_max), dtype=np.int64)
    per_k = {k: {"diversity": np.empty(n), "novelty": np.empty(n), "avg_pop": np.empty(n)} for k in ks}
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=f"evaluating {getattr(model, 'name', 'model')}", unit="batch")
    for lo in starts:
        hi = min(lo + batch_size, n)
        hists, targs = evalset.histories[lo:hi], evalset.targets[lo:hi]
        if candidates is None:
            scores = _raw_scores(model, hists, n_items)
        else:  # the model reads the whole (global) history; ranking happens among the candidates
            scores = _raw_scores(model, model_evalset.histories[lo:hi], train.n_items)[:, candidates]
        masked = masked_items(hists, repeats)      # the histories and the policy, never the targets
        scores = mask_items(scores, masked)
        missed = _excluded_targets(masked, targs)
        ranks = _missed(M.target_ranks(scores, targs), missed)
        rank_rows.extend(r[np.isfinite(r)] for r in ranks)
        if sampled_negatives:
            sampled_rows.extend(_missed_rows(_sampled_ranks(scores, masked, targs, sampled_negatives, seed, lo),
                                             missed))
        if beyond:
            top = M.top_k(scores, k_max)
            tops[lo:hi] = top
            for k in ks:
                per_k[k]["diversity"][lo:hi] = M.intra_list_diversity(top[:, :k], vectors, normalized=True)
                per_k[k]["novelty"][lo:hi] = M.novelty(top[:, :k], counts)
                per_k[k]["avg_pop"][lo:hi] = M.average_popularity(top[:, :k], counts)
        del scores

    ranks = M.pad_ranks(rank_rows)
    result = M.accuracy_metrics(ranks, ks)
    per_user = {"users": np.asarray(evalset.users), "ranks": ranks}
    if sampled_negatives:
        per_user["sampled_ranks"] = M.pad_ranks(sampled_rows)
        result.update(M.accuracy_metrics(per_user["sampled_ranks"], ks, prefix="sampled:"))
    if beyond:
        per_user["topk"] = tops
        for k in ks:
            result[f"coverage@{k}"] = M.coverage(tops[:, :k], n_items)
            for name, values in per_k[k].items():
                result[f"{name}@{k}"] = M.nanmean(values)
                per_user[f"{name}@{k}"] = values
    segs = {}
    if segments:
        hist_len = np.array([len(h) for h in evalset.histories])
        segs.update(_segments(ranks, hist_len, hist_starts, "hist", ks))
        t_ranks, t_pop = _per_target(ranks, evalset.targets, counts)
        segs.update(_segments(t_ranks, t_pop, pop_starts, "item-pop", ks))
    return EvalResult(result, segs, n, time.perf_counter() - t0, per_user, repeats=repeats)


# -- helpers ------------------------------------------------------------------------------
def _check(evalset: EvalSet, n_items: int) -> None:
    if len(evalset) == 0:
        raise ValueError("the evaluation set is empty: nothing to evaluate")
    for i, t in enumerate(evalset.targets):
        t = np.asarray(t)
        if len(t) == 0:
            raise ValueError(f"evaluation case {i} (user {evalset.users[i]}) has no target")
        if t.min() < 0 or t.max() >= n_items:
            raise ValueError(f"evaluation case {i} has a target outside 0..{n_items - 1}")


def _candidate_space(candidates, n_items: int, evalset: EvalSet):
    """Sorted unique candidate indices and the global -> local map (-1 = not a candidate)."""
    candidates = np.unique(np.asarray(candidates, dtype=np.int64))
    if len(candidates) == 0 or candidates[0] < 0 or candidates[-1] >= n_items:
        raise ValueError(f"candidates must be non-empty item indices in 0..{n_items - 1}")
    local = np.full(n_items, -1, dtype=np.int64)
    local[candidates] = np.arange(len(candidates))
    for i, t in enumerate(evalset.targets):
        if (local[np.asarray(t, dtype=np.int64)] < 0).any():
            raise ValueError(f"evaluation case {i} (user {evalset.users[i]}) has a target outside the candidates")
    return candidates, local


def _localise(evalset: EvalSet, local: np.ndarray) -> EvalSet:
    """Histories and targets in candidate positions; history items outside the candidates drop out."""
    hists = [local[np.asarray(h, dtype=np.int64)] for h in evalset.histories]
    return EvalSet(evalset.users, [h[h >= 0] for h in hists],
                   [local[np.asarray(t, dtype=np.int64)] for t in evalset.targets])


def _raw_scores(model, hists, n_items) -> np.ndarray:
    # A copy: the model may hand back an array it keeps, which we must not edit.
    scores = np.array(model.score_histories(hists), dtype=np.float32, copy=True)
    if scores.shape != (len(hists), n_items):
        raise ValueError(f"{getattr(model, 'name', model)}.score_histories returned shape {scores.shape}, "
                         f"expected {(len(hists), n_items)}")
    return scores


def masked_items(hists, repeats: str = "exclude") -> list:
    """Per case, the item indices the policy masks: the whole history ("exclude") or none ("allow")."""
    return list(hists) if check_repeats(repeats) == "exclude" else [np.zeros(0, dtype=np.int64)] * len(hists)


def policy_ranks(scores, hists, targs, repeats: str = "exclude") -> np.ndarray:
    """Ranks [n_cases, max_targets] (inf-padded) of `targs` in `scores` under the policy: the
    masked items at -inf, then each target ranked; a target the policy masked gets `MISSED`.
    `scores` is edited in place when it is a writable contiguous float array."""
    masked = masked_items(hists, repeats)
    scores = mask_items(scores, masked)
    return _missed(M.target_ranks(scores, targs), _excluded_targets(masked, targs))


def mask_items(scores, masked) -> np.ndarray:
    """`scores` (edited in place when writable and contiguous) with each row's `masked[row]` items
    at -inf; NaN counts as -inf. Only the items to mask are read: never the targets."""
    scores = np.ascontiguousarray(scores)
    scores[np.isnan(scores)] = -np.inf     # a NaN would compare false with everything and rank first
    rows = np.repeat(np.arange(len(masked)), [len(h) for h in masked])
    if len(rows):
        scores[rows, np.concatenate([np.asarray(h, dtype=np.int64) for h in masked])] = -np.inf
    return scores


def _excluded_targets(masked, targs) -> list:
    """Per case, which targets the policy masked (bool per target): misses whatever their score."""
    return [np.isin(np.asarray(t, dtype=np.int64), np.asarray(h, dtype=np.int64)) for h, t in zip(masked, targs)]


def _missed(ranks: np.ndarray, missed: list) -> np.ndarray:
    for row, m in enumerate(missed):
        ranks[row, :len(m)][m] = MISSED
    return ranks


def _missed_rows(rows: list, missed: list) -> list:
    for r, m in zip(rows, missed):
        r[m] = MISSED
    return rows


def _sampled_ranks(scores, masked, targs, n_neg, seed, offset) -> list:
    """Rank of each target among its user's targets plus n_neg negatives drawn uniformly from the
    items that are neither targets nor `masked` (the policy's masked history items)."""
    n_items = scores.shape[1]
    out = []
    for i, (h, t) in enumerate(zip(masked, targs)):
        # One generator per case (seeded by its position): results do not depend on batch_size.
        rng = np.random.default_rng([seed, offset + i])
        seen = np.unique(np.concatenate([np.asarray(h, dtype=np.int64), np.asarray(t, dtype=np.int64)]))
        # Draw enough distinct items that n_neg unseen ones survive; the survivors of a
        # uniform draw without replacement are a uniform sample of the unseen items.
        draw = rng.choice(n_items, size=min(n_neg + len(seen), n_items), replace=False)
        neg = draw[~np.isin(draw, seen)][:n_neg]
        # Candidates sorted by item index, so target_ranks' tie rule (lower position first)
        # is the same lower-item-index rule as in full ranking.
        t = np.asarray(t, dtype=np.int64)
        cand = np.sort(np.concatenate([neg, np.unique(t)]))
        r = M.target_ranks(scores[i, cand][None, :], [np.searchsorted(cand, t)])[0]
        out.append(r[:len(t)])
    return out


def _per_target(ranks, targets, counts):
    """One single-target case per (user, target): rank among the non-target items."""
    order = np.argsort(ranks, axis=1)
    ahead = np.empty_like(order)
    np.put_along_axis(ahead, order, np.arange(ranks.shape[1])[None, :], axis=1)  # targets ranked above
    solo = ranks - ahead
    mask = np.isfinite(ranks)
    pops = np.concatenate([counts[np.asarray(t, dtype=np.int64)] for t in targets])
    return solo[mask][:, None], pops   # row-major mask order == concatenation order


def _labels(starts) -> list:
    starts = list(starts)
    return [f"{a}-{b - 1}" if b - 1 > a else f"{a}" for a, b in zip(starts, starts[1:])] + [f"{starts[-1]}+"]


def _segments(ranks, values, starts, prefix, ks) -> dict:
    """Accuracy metrics per bucket of `values`; buckets are [starts[i], starts[i+1])."""
    starts = sorted(starts)
    if starts[0] > 0:
        starts = [0] + starts      # values below the first bound get their own bucket
    which = np.searchsorted(starts, values, side="right") - 1
    out = {}
    for b, label in enumerate(_labels(starts)):
        sel = which == b
        if sel.any():
            out[f"{prefix}:{label}"] = {"n": int(sel.sum()), **M.accuracy_metrics(ranks[sel], ks)}
    return out
