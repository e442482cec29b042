"""ANN retrieval (models.retrieval): recommend answers from a FAISS index above
`ann_threshold` items; forced here with ann_threshold=0 on small synthetic catalogues and
compared with the exact path (ann_threshold=None) of the same fitted model."""
from __future__ import annotations

import pickle
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from migrec.data.split import TrainSet
from migrec.models.matrix_factorization import ALS
from migrec.models.retrieval import ANNIndex, build, search
from migrec.models.sasrec import SASRec

N_ITEMS, N_TOPICS, N_USERS = 3000, 30, 400


def make_train(seed=0):
    """Users who each follow one or two topics; items of a topic are consecutive indices."""
    rng = np.random.default_rng(seed)
    per = N_ITEMS // N_TOPICS
    seqs = []
    for _ in range(N_USERS):
        topics = rng.choice(N_TOPICS, rng.integers(1, 3), replace=False)
        seqs.append(np.asarray([rng.choice(topics) * per + rng.integers(per) for _ in range(rng.integers(8, 30))],
                               dtype=np.int64))
    cat = pd.DataFrame({"item_id": [f"i{j}" for j in range(N_ITEMS)], "domain": "default",
                        "title": [f"item {j}" for j in range(N_ITEMS)]})
    return TrainSet(np.array([f"u{u}" for u in range(N_USERS)], dtype=object), cat["item_id"].to_numpy(object),
                    seqs, cat)


@pytest.fixture(scope="module")
def train():
    return make_train()


@pytest.fixture(scope="module")
def als(train):
    return ALS(factors=16, iterations=4, threads=1, ann_threshold=None).fit(train)


@pytest.fixture(scope="module")
def sasrec(train, torch_one_thread):
    torch.manual_seed(0)
    return SASRec(hidden=32, layers=1, heads=1, epochs=2, max_len=30, normalize=True, temperature=0.1,
                  progress=False, ann_threshold=None).fit(train)


def raw_histories(train, n=120):
    return [list(train.item_ids[s]) for s in train.sequences[:n]]


def forced(model):
    return model.clone().set_params(ann_threshold=0)


def overlap(a, b):
    return float(np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(a, b)]))


@pytest.mark.parametrize("name", ["als", "sasrec"])
def test_ann_top10_matches_exact(name, request, train):
    model = request.getfixturevalue(name)
    ann = forced(model)
    hists = raw_histories(train)
    exact_ids, exact_scores = model.recommend_histories(hists, k=10)
    ann_ids, ann_scores = ann.recommend_histories(hists, k=10)
    assert model.ann_index() is None and isinstance(ann.ann_index(), ANNIndex)
    assert ann.ann_index().index.ntotal == N_ITEMS
    assert ann.ann_index().nprobe < ann.ann_index().index.nlist       # it is not an exhaustive scan
    recall = overlap(ann_ids, exact_ids)
    assert recall >= 0.98, recall
    # scores are the model's own scores of the returned items
    for row in range(0, len(hists), 20):
        own = model.score([hists[row]], list(ann_ids[row]))[0]
        np.testing.assert_allclose(ann_scores[row], own, rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(ann_scores, axis=1) <= 0)


def test_exclusions_and_candidates_hold(als, train):
    ann = forced(als)
    hists = raw_histories(train, 60)
    rng = np.random.default_rng(1)
    exclude = [list(rng.choice(train.item_ids, 20, replace=False)) for _ in hists]
    ids, scores = ann.recommend_histories(hists, k=10, exclude=exclude)
    assert ids.shape == (60, 10) and np.isfinite(scores).all()
    for row, h in enumerate(hists):
        assert not set(ids[row]) & (set(h) | set(exclude[row]))
    exact_ids, _ = als.recommend_histories(hists, k=10, exclude=exclude)
    assert overlap(ids, exact_ids) >= 0.98

    # a large candidate set goes through the IDSelector, a small one is scored exactly
    for share in (0.5, 0.02):
        cand = list(rng.choice(train.item_ids, int(share * N_ITEMS), replace=False))
        ids, scores = ann.recommend_histories(hists, k=10, candidates=cand)
        assert set(ids.ravel()) <= set(cand) and np.isfinite(scores).all()
        exact_ids, _ = als.recommend_histories(hists, k=10, candidates=cand)
        assert overlap(ids, exact_ids) >= 0.98, share

    # exactly k allowed items left after the history: all k come back
    h = hists[0]
    others = [i for i in train.item_ids if i not in set(h)]
    cand = list(h) + list(rng.choice(others, 10, replace=False))
    got, sc = ann.recommend_history(h, k=10, candidates=cand)
    assert sorted(got) == sorted(set(cand) - set(h)) and len(got) == 10
    # fewer allowed items than k: as on the exact path, the row ends early
    got, _ = ann.recommend_history(h, k=10, candidates=cand[:len(set(h)) + 3] if len(set(h)) == len(h) else cand)
    exact, _ = als.recommend_history(h, k=10, candidates=cand[:len(set(h)) + 3] if len(set(h)) == len(h) else cand)
    assert sorted(got) == sorted(exact)


def test_search_widens_when_the_index_returns_too_few():
    """Low-level: a filter whose items the probed lists miss still yields k exact results."""
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((5000, 8)).astype(np.float32)
    ann = build(matrix)
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    allowed = np.sort(rng.choice(5000, 40, replace=False))
    top, scores = search(ann, queries, 10, [np.zeros(0, np.int64)] * 5, allowed, exact_below=0)
    truth = allowed[np.argsort(-(queries @ matrix[allowed].T), axis=1)[:, :10]]
    np.testing.assert_array_equal(top, truth)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ matrix.T, truth, 1), rtol=1e-5)


def test_below_threshold_is_the_exact_path(als, train):
    hists = raw_histories(train, 40)
    below = als.clone().set_params(ann_threshold=N_ITEMS + 1)
    a_ids, a_scores = below.recommend_histories(hists, k=10, exclude=[h[:3] for h in hists])
    b_ids, b_scores = als.recommend_histories(hists, k=10, exclude=[h[:3] for h in hists])
    assert below.ann_index() is None
    np.testing.assert_array_equal(a_ids, b_ids)
    np.testing.assert_array_equal(a_scores, b_scores)


def test_new_items_are_found_and_the_index_is_patched(sasrec, train):
    served = forced(sasrec)
    old = served.ann_index()
    update = served.clone()
    new = [f"new{j}" for j in range(300)]
    update.add_items(new)
    ann = update.ann_index()
    assert ann is not old and ann.index.ntotal == N_ITEMS + 300
    # patched, not rebuilt: same coarse centroids, and the serving model's index is untouched
    np.testing.assert_array_equal(ann.index.quantizer.reconstruct_n(0, ann.index.nlist),
                                  old.index.quantizer.reconstruct_n(0, old.index.nlist))
    assert served.ann_index() is old and old.index.ntotal == N_ITEMS
    hists = raw_histories(train)
    exact_ids, _ = update.clone().set_params(ann_threshold=None).recommend_histories(hists, k=10)
    ann_ids, _ = update.recommend_histories(hists, k=10)
    wanted = [set(r) & set(new) for r in exact_ids]
    assert sum(map(len, wanted)) >= 10, "the test needs new items in the exact top-10"
    found = sum(len(w & set(r)) for w, r in zip(wanted, ann_ids))
    assert found / sum(map(len, wanted)) >= 0.98
    assert overlap(ann_ids, exact_ids) >= 0.98


def test_index_is_a_runtime_cache(als, train, tmp_path):
    ann = forced(als)
    hists = raw_histories(train, 20)
    ids, _ = ann.recommend_histories(hists, k=10)
    assert "_ann" not in pickle.loads(pickle.dumps(ann)).__dict__
    ann.save(tmp_path / "m")
    assert not any("ann" in p.name for p in (tmp_path / "m").rglob("*"))
    back = ALS.load(tmp_path / "m")
    assert back.ann_threshold == 0 and "_ann" not in back.__dict__
    again, _ = back.recommend_histories(hists, k=10)
    assert overlap(again, ids) >= 0.98
    # ALS.partial_fit re-solves a few item rows: the index follows the new factors
    before = back.ann_index()
    back.partial_fit(pd.DataFrame({"user_id": ["x", "x"], "item_id": [train.item_ids[0], train.item_ids[1]]}))
    after = back.ann_index()
    assert after is not before and after.matrix is back.item_factors_


def test_threads_share_one_build(als, train):
    ann = forced(als)
    hists = raw_histories(train, 5)
    seen, errors = [], []

    def work():
        try:
            ann.recommend_histories(hists, k=10)
            seen.append(ann.ann_index())
        except Exception as err:   # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len({id(s) for s in seen}) == 1
