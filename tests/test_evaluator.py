"""The evaluator, driven by a fake model whose scores are a fixed matrix."""
import math

import numpy as np
import pandas as pd
import pytest

from migrec.data.split import EvalSet, TrainSet
from migrec.evaluation import evaluate
from migrec.evaluation.evaluator import MISSED
from migrec.models.base import Recommender


class FixedScores(Recommender):
    name = "fixed"

    """Row i of `matrix` for the history keys[i] (the history decides the row, as for any model);
    without keys, rows in call order (tests that score in one call)."""

    def __init__(self, matrix, keys=None):
        self.matrix = np.asarray(matrix, dtype=np.float32)
        self.keys = keys

    def fit(self, train, valid=None):
        return self

    def score_histories(self, histories):
        if self.keys is None:
            return self.matrix[: len(histories)]     # a view: the evaluator must not edit it
        index = {np.asarray(k, dtype=np.int64).tobytes(): i for i, k in enumerate(self.keys)}
        return self.matrix[[index[np.asarray(h, dtype=np.int64).tobytes()] for h in histories]]


def make_train(n_users, n_items, sequences, vectors=None):
    cat = pd.DataFrame({"item_id": [f"i{j}" for j in range(n_items)], "domain": "default",
                        "title": [f"item {j}" for j in range(n_items)]})
    return TrainSet(np.array([f"u{u}" for u in range(n_users)], dtype=object), cat["item_id"].to_numpy(object),
                    [np.asarray(s, dtype=np.int64) for s in sequences], cat, item_vectors=vectors)


def arr(*x):
    return np.array(x, dtype=np.int64)


def test_seen_items_excluded():
    scores = np.array([[5, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5]], dtype=np.float32)
    train = make_train(2, 6, [arr(0, 1), arr(5)])
    # user 0: items 0,1 seen and scored above target 3 -> only item 2 outranks it (rank 1)
    # user 1: 5 is masked, target 4 is outranked by nothing else (rank 0)
    ev = EvalSet(arr(0, 1), [arr(0, 1), arr(5, 2)], [arr(3), arr(4)])
    model = FixedScores(scores, ev.histories)
    res = evaluate(model, ev, train, ks=(1, 3))
    assert res.repeats == "exclude" and res.to_dict()["repeats"] == "exclude"
    assert res.per_user["ranks"][:, 0].tolist() == [1, 0]
    assert res.metrics["NDCG@3"] == pytest.approx((1 / math.log2(3) + 1) / 2)
    assert res.metrics["MRR@3"] == pytest.approx((1 / 2 + 1) / 2)
    assert res.metrics["HR@1"] == 0.5
    top = res.per_user["topk"]
    assert top[0].tolist() == [2, 3, 4] and top[1].tolist() == [4, 3, 1]
    for row, h in enumerate(ev.histories):          # a seen item is never recommended
        assert not set(top[row]) & set(h)
    np.testing.assert_array_equal(model.matrix, scores)   # the model's own array is untouched


# -- the history policy: explicit, and blind to the targets ---------------------------------------
def repeat_case():
    """User 1's target 2 is also in its history, and the model scores it first among the rest."""
    scores = np.array([[5, 4, 3, 2, 1, 0], [0, 1, 9, 3, 4, 5]], dtype=np.float32)
    train = make_train(2, 6, [arr(0, 1), arr(5)])
    ev = EvalSet(arr(0, 1), [arr(0, 1), arr(5, 2)], [arr(3), arr(2)])
    return FixedScores(scores, ev.histories), ev, train


def test_exclude_a_repeated_target_is_a_miss_at_every_cutoff():
    model, ev, train = repeat_case()
    res = evaluate(model, ev, train, ks=(1, 3, 6, 100), sampled_negatives=3)
    assert res.per_user["ranks"][1, 0] == MISSED and res.per_user["sampled_ranks"][1, 0] == MISSED
    for k in (3, 6, 100):       # user 0 hits (rank 1); user 1 misses even when k covers the whole catalogue
        assert res.metrics[f"HR@{k}"] == 0.5 and res.metrics[f"NDCG@{k}"] <= 0.5
        assert res.metrics[f"sampled:HR@{k}"] == 0.5
    assert res.per_user["topk"][1, :4].tolist() == [4, 3, 1, 0]   # item 2 scores 9, yet it is in the history
    one = evaluate(model, ev.subset([False, True]), train, ks=(10,), sampled_negatives=3)
    assert one.metrics["HR@10"] == 0.0 and one.metrics["NDCG@10"] == 0.0 and one.metrics["sampled:HR@10"] == 0.0


def test_allow_masks_nothing_so_a_repeated_target_can_hit():
    model, ev, train = repeat_case()
    res = evaluate(model, ev, train, ks=(1, 3), repeats="allow", sampled_negatives=3)
    assert res.repeats == "allow" and res.to_dict()["repeats"] == "allow"
    # user 0: items 0, 1, 2 (history 0, 1 included) outrank target 3; user 1: target 2 scores highest
    assert res.per_user["ranks"][:, 0].tolist() == [3, 0]
    assert res.metrics["HR@1"] == 0.5 and res.metrics["HR@3"] == 0.5
    assert res.per_user["sampled_ranks"][1, 0] == 0
    assert res.per_user["topk"][0].tolist() == [0, 1, 2]     # history items stay recommendable


def test_a_missed_repeat_still_counts_as_a_target():
    # targets 2 (in the history: a miss) and 4 (scored first): one hit out of two targets
    scores = np.array([[0, 1, 2, 3, 9, 5]], dtype=np.float32)
    train = make_train(1, 6, [arr(2)])
    ev = EvalSet(arr(0), [arr(2)], [arr(2, 4)])
    res = evaluate(FixedScores(scores), ev, train, ks=(1, 5), beyond=False)
    assert res.metrics["Recall@5"] == 0.5 and res.metrics["HR@1"] == 1.0
    assert res.metrics["NDCG@5"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    res = evaluate(FixedScores(scores), ev, train, ks=(5,), beyond=False, repeats="allow")
    assert res.metrics["Recall@5"] == 1.0


@pytest.mark.parametrize("repeats", ["exclude", "allow"])
def test_masking_never_reads_the_target(repeats):
    # Same model, same histories, different targets (in the history or not): the recommended lists
    # must be identical, and every rank must be the target's place in the one target-blind list.
    model, ev, train = random_case(multi=True, seed=3)
    n_items = train.n_items
    moved = EvalSet(ev.users, ev.histories, [np.asarray(h[:2]) for h in ev.histories])   # repeats only
    a = evaluate(model, ev, train, ks=(10,), repeats=repeats)
    b = evaluate(model, moved, train, ks=(10,), repeats=repeats)
    np.testing.assert_array_equal(a.per_user["topk"], b.per_user["topk"])
    for case, res in ((ev, a), (moved, b)):
        for row, (h, targets) in enumerate(zip(case.histories, case.targets)):
            s = model.score_histories([h])[0].astype(np.float64)
            if repeats == "exclude":
                s[h] = -np.inf
            for j, t in enumerate(targets):
                if repeats == "exclude" and t in set(h):
                    want = MISSED
                else:       # stable descending order: ties go to the lower item index
                    want = float(np.flatnonzero(np.argsort(-s, kind="stable") == t)[0])
                assert res.per_user["ranks"][row, j] == want
    assert sum(t in set(h) for h, ts in zip(ev.histories, ev.targets) for t in ts) > 5   # the case has repeats
    if repeats == "exclude":
        assert b.metrics["HR@10"] == 0.0       # a target drawn from the history never hits
    else:
        assert b.metrics["HR@10"] > 0.0
    assert n_items == 80


def test_sampling_every_item_equals_full_ranking_when_nothing_is_masked():
    # "allow": history items are valid negatives too, so N >= n_items gives the full-ranking ranks
    model, ev, train = random_case(multi=True, seed=2)
    res = evaluate(model, ev, train, ks=(10,), sampled_negatives=1000, beyond=False, repeats="allow")
    np.testing.assert_array_equal(res.per_user["sampled_ranks"], res.per_user["ranks"])


def test_repeats_policy_is_checked_and_works_with_candidates():
    model, ev, train = repeat_case()
    with pytest.raises(ValueError, match="repeats"):
        evaluate(model, ev, train, repeats="keep-targets")
    # ranking among items 2..5 only: user 1's target 2 is in its history -> a miss, or rank 0 if allowed
    ex = evaluate(model, ev, train, ks=(1,), candidates=[2, 3, 4, 5], beyond=False)
    al = evaluate(model, ev, train, ks=(1,), candidates=[2, 3, 4, 5], beyond=False, repeats="allow")
    assert ex.per_user["ranks"][1, 0] == MISSED and al.per_user["ranks"][1, 0] == 0


def test_nan_scores_rank_last_not_first():
    scores = np.array([[np.nan, 1, 2, 3]], dtype=np.float32)
    train = make_train(1, 4, [arr(1)])
    res = evaluate(FixedScores(scores), EvalSet(arr(0), [arr(1)], [arr(0)]), train, ks=(2,), beyond=False)
    assert res.per_user["ranks"][0, 0] == 2        # items 3 and 2 above; masked item 1 ties at -inf, higher index


def random_case(n_users=120, n_items=80, seed=0, multi=False):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_users, n_items)).astype(np.float32)
    seqs = [rng.choice(n_items // 2, size=rng.integers(1, 30), replace=False) for _ in range(n_users)]
    train = make_train(n_users, n_items, seqs, vectors=rng.normal(size=(n_items, 8)))
    n_t = [int(rng.integers(1, 4)) if multi else 1 for _ in range(n_users)]
    targets = [rng.choice(n_items, size=t, replace=False) for t in n_t]   # items >= 40 are cold
    ev = EvalSet(np.arange(n_users), seqs, targets)
    return FixedScores(scores, seqs), ev, train


@pytest.mark.parametrize("multi", [False, True])
def test_batch_size_invariance(multi):
    model, ev, train = random_case(multi=multi)
    kw = dict(ks=(5, 10), sampled_negatives=20, seed=7)
    a = evaluate(model, ev, train, batch_size=1, **kw)
    b = evaluate(model, ev, train, batch_size=1000, **kw)
    assert a.metrics == b.metrics
    assert a.segments == b.segments
    np.testing.assert_array_equal(a.per_user["topk"], b.per_user["topk"])
    assert 0 < a.metrics["NDCG@10"] < 1 and 0 < a.metrics["coverage@10"] <= 1


def test_sampled_metrics_present_and_optimistic():
    model, ev, train = random_case(multi=True, seed=1)
    res = evaluate(model, ev, train, ks=(5, 10), sampled_negatives=15)
    for name in ("HR", "Recall", "NDCG", "MRR"):
        for k in (5, 10):
            assert res.metrics[f"sampled:{name}@{k}"] >= res.metrics[f"{name}@{k}"]
    assert res.metrics["sampled:NDCG@10"] > res.metrics["NDCG@10"]     # strictly easier with 15 negatives
    assert np.all(res.per_user["sampled_ranks"] <= res.per_user["ranks"])


def test_sampling_every_unseen_item_equals_full_ranking():
    # With N >= n_items every unseen item is a negative, and no history item may be one:
    # the sampled ranks must then equal the full-ranking ranks exactly.
    model, ev, train = random_case(multi=True, seed=2)
    res = evaluate(model, ev, train, ks=(10,), sampled_negatives=1000, beyond=False)
    np.testing.assert_array_equal(res.per_user["sampled_ranks"], res.per_user["ranks"])


def test_segments_partition_users():
    model, ev, train = random_case(seed=4)
    res = evaluate(model, ev, train, ks=(10,), hist_starts=(1, 6, 21))
    hist = {k: v for k, v in res.segments.items() if k.startswith("hist:")}
    pop = {k: v for k, v in res.segments.items() if k.startswith("item-pop:")}
    assert set(hist) <= {"hist:1-5", "hist:6-20", "hist:21+"}
    assert sum(v["n"] for v in hist.values()) == len(ev)
    assert sum(v["n"] for v in pop.values()) == len(ev)
    counts = train.item_counts()
    n_cold = sum(counts[t[0]] == 0 for t in ev.targets)
    assert n_cold > 0 and pop["item-pop:0"]["n"] == n_cold
    n_short = sum(len(h) <= 5 for h in ev.histories)
    assert hist["hist:1-5"]["n"] == n_short
    # segment metrics are the metrics of exactly those users
    short = ev.subset([len(h) <= 5 for h in ev.histories])
    sub = evaluate(model, short, train, ks=(10,), beyond=False, segments=False)
    assert hist["hist:1-5"]["NDCG@10"] == pytest.approx(sub.metrics["NDCG@10"])


def test_item_pop_segments_count_targets_ranked_alone():
    # one user, targets 2 (warm, count 1) and 3 (cold): scores put 3 first, 2 second
    scores = np.array([[0, 0, 8, 9, 1]], dtype=np.float32)
    train = make_train(1, 5, [arr(2)])
    res = evaluate(FixedScores(scores), EvalSet(arr(0), [arr(0)], [arr(2, 3)]), train, ks=(1,), beyond=False)
    assert res.metrics["NDCG@1"] == 1.0 and res.metrics["Recall@1"] == 0.5
    assert res.segments["item-pop:0"]["n"] == 1 and res.segments["item-pop:1-4"]["n"] == 1
    assert res.segments["item-pop:1-4"]["HR@1"] == 1.0     # item 2 is first among non-targets


def test_bad_inputs():
    train = make_train(1, 4, [arr(1)])
    with pytest.raises(ValueError, match="shape"):
        evaluate(FixedScores(np.zeros((1, 3))), EvalSet(arr(0), [arr(1)], [arr(0)]), train)
    with pytest.raises(ValueError, match="no target"):
        evaluate(FixedScores(np.zeros((1, 4))), EvalSet(arr(0), [arr(1)], [arr()]), train)
    with pytest.raises(ValueError, match="empty"):
        evaluate(FixedScores(np.zeros((1, 4))), EvalSet(arr(), [], []), train)


def test_to_dict_is_small_and_complete():
    model, ev, train = random_case(n_users=10, seed=5)
    d = evaluate(model, ev, train, ks=(10,)).to_dict()
    assert set(d) == {"metrics", "segments", "n_users", "seconds", "repeats"} and d["n_users"] == 10
    assert {"NDCG@10", "HR@10", "MRR@10", "Recall@10", "coverage@10", "diversity@10", "novelty@10",
            "avg_pop@10"} <= set(d["metrics"])


def test_sampled_negatives_come_from_unseen_items_only():
    # 50 items; the user has seen 40 (scored highest, masked), the target 49 scores lowest of the
    # 10 unseen ones. Every valid negative outranks it, so with 5 negatives its rank must be 5.
    n_items = 50
    scores = np.arange(n_items, 0, -1, dtype=np.float32)[None, :]
    hist = np.arange(40)
    train = make_train(1, n_items, [hist])
    ev = EvalSet(arr(0), [hist], [arr(49)])
    for seed in range(5):
        res = evaluate(FixedScores(scores), ev, train, ks=(10,), sampled_negatives=5, seed=seed, beyond=False)
        assert res.per_user["sampled_ranks"][0, 0] == 5
        assert res.per_user["ranks"][0, 0] == 9
