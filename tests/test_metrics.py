"""Metrics against values computed by hand."""
import math

import numpy as np
import pytest

from migrec.evaluation import metrics as M

INF = np.inf


def test_single_target_hand_values():
    ranks = np.array([[0.0], [2.0], [15.0]])
    per = M.accuracy_per_user(ranks, 10)
    assert per["HR"].tolist() == [1, 1, 0]
    assert per["NDCG"] == pytest.approx([1.0, 0.5, 0.0])          # 1/log2(2), 1/log2(4)
    assert per["MRR"] == pytest.approx([1.0, 1 / 3, 0.0])
    assert per["Recall"].tolist() == [1, 1, 0]
    assert per["Precision"] == pytest.approx([0.1, 0.1, 0.0])
    agg = M.accuracy_metrics(ranks, ks=(1, 10))
    assert agg["NDCG@10"] == pytest.approx(0.5)
    assert agg["HR@10"] == pytest.approx(2 / 3)
    assert agg["MRR@10"] == pytest.approx(4 / 9)
    assert agg["HR@1"] == pytest.approx(1 / 3)
    assert set(agg) == {f"{m}@{k}" for m in M.ACCURACY for k in (1, 10)}


def test_multi_target_recall_ndcg_mrr():
    # user 0: targets at ranks 0, 3, 12 ; user 1: targets at 4, 7 (padded with inf)
    ranks = np.array([[0.0, 3.0, 12.0], [4.0, 7.0, INF]])
    p10 = M.accuracy_per_user(ranks, 10)
    idcg3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert p10["Recall"] == pytest.approx([2 / 3, 1.0])
    assert p10["NDCG"][0] == pytest.approx((1 + 1 / math.log2(5)) / idcg3)          # 0.67139
    assert p10["NDCG"][1] == pytest.approx((1 / math.log2(6) + 1 / math.log2(9)) / (1 + 1 / math.log2(3)))
    assert p10["MRR"] == pytest.approx([1.0, 0.2])
    assert p10["Precision"] == pytest.approx([0.2, 0.2])
    p2 = M.accuracy_per_user(ranks, 2)          # ideal DCG over min(#targets, k) = 2 hits
    assert p2["NDCG"][0] == pytest.approx(1 / (1 + 1 / math.log2(3)))                # 0.61315
    assert p2["Recall"] == pytest.approx([1 / 3, 0.0])
    assert p2["HR"].tolist() == [1, 0]
    p5 = M.accuracy_per_user(ranks, 5)
    assert p5["NDCG"][1] == pytest.approx((1 / math.log2(6)) / (1 + 1 / math.log2(3)))  # 0.23719
    assert p5["MRR"][1] == pytest.approx(0.2)


def test_target_ranks_strictly_greater_with_index_tie_rule():
    s = np.array([[0.1, 0.9, 0.5, 0.5, 0.2]])
    r = M.target_ranks(s, [np.array([3, 2, 0])])
    assert r.tolist() == [[2, 1, 4]]          # item 3 ties with item 2, which has the lower index
    flat = np.zeros((1, 5))
    assert M.target_ranks(flat, [np.array([3])]).tolist() == [[3]]   # constant scores are not "perfect"


def test_target_ranks_sort_path_matches_comparison_path():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 5, size=(7, 40)).astype(np.float32)     # many ties on purpose
    targets = [rng.choice(40, size=rng.integers(1, 6), replace=False) for _ in range(7)]
    a = M.target_ranks(s, targets)
    b = M.target_ranks(s, targets, sort_threshold=0)
    np.testing.assert_array_equal(a, b)
    # ranks equal positions in a stable sort by descending score
    for row, t in enumerate(targets):
        pos = np.argsort(np.argsort(-s[row], kind="stable"), kind="stable")
        np.testing.assert_array_equal(a[row, :len(t)], pos[t])


def test_top_k_order_and_ties():
    s = np.array([[0.3, 0.9, 0.3, 0.1, 0.7]], dtype=np.float32)
    assert M.top_k(s, 3).tolist() == [[1, 4, 0]]
    assert M.top_k(s, 10).tolist() == [[1, 4, 0, 2, 3]]        # k capped at n_items


COUNTS = np.array([10, 5, 3, 1, 0])           # total 19, 5 items -> p = (c+1)/24
VECTORS = np.array([[1, 0], [0, 1], [1, 1], [2, 0], [0, 0]], dtype=np.float32)


def test_beyond_accuracy_toy_by_hand():
    top = np.array([[0, 1], [0, 3]])
    out = M.beyond_accuracy_metrics(top, ks=(2,), item_counts=COUNTS, item_vectors=VECTORS)
    info = [-math.log2(11 / 24), 2.0, -math.log2(4 / 24), -math.log2(2 / 24), -math.log2(1 / 24)]
    assert out["coverage@2"] == pytest.approx(3 / 5)
    assert out["novelty@2"] == pytest.approx(((info[0] + info[1]) / 2 + (info[0] + info[3]) / 2) / 2)
    assert out["avg_pop@2"] == pytest.approx((7.5 + 5.5) / 2)
    assert out["diversity@2"] == pytest.approx(0.5)          # orthogonal pair -> 1, parallel pair -> 0
    assert M.self_information(COUNTS) == pytest.approx(info)


def test_intra_list_diversity_cases():
    assert M.intra_list_diversity(np.array([[0, 1, 2]]), VECTORS) == pytest.approx([1 - 2 * math.sqrt(0.5) / 3])
    assert M.intra_list_diversity(np.array([[0, 4]]), VECTORS) == pytest.approx([1.0])   # zero vector
    assert np.isnan(M.intra_list_diversity(np.array([[0, 1]]), None)).all()
    out = M.beyond_accuracy_metrics(np.array([[0, 1]]), ks=(2,), item_counts=COUNTS)
    assert math.isnan(out["diversity@2"])


def test_top_k_agrees_with_ranks_under_ties():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 4, size=(20, 30)).astype(np.float32)
    top = M.top_k(s, 7)
    all_items = [np.arange(30)] * 20
    ranks = M.target_ranks(s, all_items)
    for row in range(20):
        np.testing.assert_array_equal(top[row], np.argsort(ranks[row])[:7])
