"""User mappings for cross-domain cold start: EMCDRMapping, PersonalizedBridge, EMCDRMF.

Synthetic worlds made here, each with a known answer:
- target vectors are a known linear / nonlinear function of source vectors;
- the source-to-target bridge depends on which item cluster a user's source history
  came from (only a personal bridge can get it right);
- two user types, each loyal to one block of source items and one block of target
  items, so a user seen only in the source domain has a known right target block.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from migrec.data.split import TrainSet
from migrec.registry import load_model
from migrec.transfer import EMCDRMF, EMCDRMapping, PersonalizedBridge


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _r2(pred, y):
    return 1.0 - ((pred - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()


def _pairs(fn, n=1000, d_s=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d_s)).astype(np.float32)
    return x, fn(x).astype(np.float32)


_A = np.random.default_rng(1).normal(size=(16, 8)) / 4.0
_B = np.random.default_rng(2).normal(size=(16, 12))   # large enough for tanh to saturate
_C = np.random.default_rng(3).normal(size=(12, 8)) / 2.0


def _linear(x):
    return x @ _A + 0.5


def _nonlinear(x):
    return np.tanh(x @ _B) @ _C


# -- EMCDRMapping ------------------------------------------------------------------------------
def test_linear_mapping_is_recovered_on_held_out_users():
    x, y = _pairs(_linear)
    m = EMCDRMapping(kind="linear", epochs=200, seed=0).fit(x[:800], y[:800])
    assert m.n_users_ == 800 and m.n_train_users_ == 720 and m.n_valid_users_ == 80
    assert _r2(m.predict(x[800:]), y[800:]) > 0.99


def test_mlp_learns_a_nonlinear_mapping_a_linear_one_cannot():
    x, y = _pairs(_nonlinear)
    mlp = EMCDRMapping(kind="mlp", hidden=64, epochs=300, seed=0).fit(x[:800], y[:800])
    lin = EMCDRMapping(kind="linear", epochs=300, seed=0).fit(x[:800], y[:800])
    r2_mlp, r2_lin = _r2(mlp.predict(x[800:]), y[800:]), _r2(lin.predict(x[800:]), y[800:])
    assert r2_mlp > 0.95                       # measured 0.99; the linear map gets 0.74
    assert r2_mlp > r2_lin + 0.15


def test_cosine_loss_recovers_directions():
    x, y = _pairs(_nonlinear)
    m = EMCDRMapping(kind="mlp", hidden=64, loss="cosine", epochs=300, seed=0).fit(x[:800], y[:800])
    p = m.predict(x[800:])
    cos = (p * y[800:]).sum(1) / np.linalg.norm(p, axis=1) / np.linalg.norm(y[800:], axis=1)
    assert np.median(cos) > 0.9


def test_mapping_is_reproducible_with_a_seed():
    x, y = _pairs(_nonlinear, n=200)
    a = EMCDRMapping(epochs=20, seed=3).fit(x, y).predict(x[:5])
    b = EMCDRMapping(epochs=20, seed=3).fit(x, y).predict(x[:5])
    assert np.array_equal(a, b)


def test_users_without_target_data_are_refused():
    x, y = _pairs(_linear, n=100)
    y[[4, 17]] = 0.0          # what an ALS solve from an empty target history gives
    with pytest.raises(ValueError, match=r"2 user\(s\) have no target-domain data.*\[4, 17\].*overlapping"):
        EMCDRMapping(epochs=5).fit(x, y)
    y[4] = np.nan
    with pytest.raises(ValueError, match="overlapping users only"):
        EMCDRMapping(epochs=5).fit(x, y)
    with pytest.raises(ValueError, match="100 users but target_vectors has 99"):
        EMCDRMapping(epochs=5).fit(x, y[:99])
    with pytest.raises(ValueError, match="kind must be"):
        EMCDRMapping(kind="deep").fit(x, y)
    with pytest.raises(RuntimeError, match="not fitted"):
        EMCDRMapping().predict(x)


# -- PersonalizedBridge ----------------------------------------------------------------------
def _bridge_world(n=1200, d=8, n_src=60, n_tgt=100, seed=0):
    """A user's source history comes from cluster 0 or 1; the cluster picks the bridge."""
    rng = np.random.default_rng(seed)
    centres = np.stack([np.eye(d)[0] * 3, -np.eye(d)[0] * 3])
    src_cluster = np.arange(n_src) % 2
    src_items = (centres[src_cluster] + rng.normal(size=(n_src, d))).astype(np.float32)
    tgt_items = rng.normal(size=(n_tgt, d)).astype(np.float32)
    bridges = rng.normal(size=(2, d, d)) / np.sqrt(d)
    group = rng.integers(0, 2, size=n)
    users = rng.normal(size=(n, d)).astype(np.float32)
    src_hist = [rng.choice(np.flatnonzero(src_cluster == g), size=5, replace=False) for g in group]
    truth = np.einsum("nd,nde->ne", users, bridges[group])
    tgt_hist = [np.argsort(-(t @ tgt_items.T))[:3] for t in truth]   # each user's 3 best target items
    return users, src_hist, src_items, tgt_hist, tgt_items


def _hit_rate(mapped, tgt_items, tgt_hist, k=10):
    top = np.argsort(-(mapped @ tgt_items.T), axis=1)[:, :k]
    return float(np.mean([np.isin(h, t).mean() for h, t in zip(tgt_hist, top)]))


def test_personal_bridge_beats_one_shared_bridge_when_the_bridge_depends_on_history():
    users, s_hist, s_items, t_hist, t_items = _bridge_world()
    tr, te = slice(0, 1000), slice(1000, None)
    kw = dict(hidden=32, epochs=40, lr=5e-3, seed=0)
    personal = PersonalizedBridge(**kw).fit(users[tr], s_hist[tr], s_items, t_hist[tr], t_items)
    shared = PersonalizedBridge(personalized=False, **kw).fit(users[tr], s_hist[tr], s_items, t_hist[tr], t_items)
    hr_personal = _hit_rate(personal.predict(users[te], s_hist[te]), t_items, t_hist[te])
    hr_shared = _hit_rate(shared.predict(users[te], s_hist[te]), t_items, t_hist[te])
    assert personal.n_users_ == 1000
    assert hr_personal > 0.9                   # measured 1.0, shared bridge 0.6, random 0.1
    assert hr_personal > hr_shared + 0.2


def test_low_rank_and_cosine_bridges_train_and_refuse_users_without_target_events():
    users, s_hist, s_items, t_hist, t_items = _bridge_world(n=300)
    m = PersonalizedBridge(rank=2, score="cosine", temperature=0.2, epochs=5, seed=0)
    m.fit(users, s_hist, s_items, t_hist, t_items)
    assert m.predict(users[:4], s_hist[:4]).shape == (4, t_items.shape[1])
    t_hist = list(t_hist)
    t_hist[7] = np.array([], dtype=np.int64)
    with pytest.raises(ValueError, match=r"no target-domain events \(target_histories rows \[7\]"):
        PersonalizedBridge(epochs=1).fit(users, s_hist, s_items, t_hist, t_items)
    with pytest.raises(ValueError, match="outside the 100 item vectors"):
        PersonalizedBridge(epochs=1).fit(users, s_hist, s_items, [np.array([100])] * 300, t_items)


# -- EMCDRMF -------------------------------------------------------------------------------------
N_SRC, N_TGT, BLOCK = 40, 40, 20   # items 0..39 source, 40..79 target; each type owns one block per domain


def _two_domain_train(seed=0):
    """Type-k users like source items [20k, 20k+20) and target items [40+20k, 40+20k+20)."""
    rng = np.random.default_rng(seed)
    seqs, ids = [], []

    def block(domain_start, k, n):
        return rng.choice(np.arange(domain_start + BLOCK * k, domain_start + BLOCK * (k + 1)), n, replace=False)

    for u in range(500):
        k, kind = u % 2, ("ab", "ab", "ab", "a", "b")[u % 5]   # 300 overlapping, 100 source-only, 100 target-only
        parts = []
        if "a" in kind:
            parts.append(block(0, k, 8))
        if "b" in kind:
            parts.append(block(N_SRC, k, 8))
        seqs.append(np.concatenate(parts).astype(np.int64))
        ids.append(f"{kind}:{u}")
    items = np.array([str(i) for i in range(N_SRC + N_TGT)], dtype=object)
    catalogue = pd.DataFrame({"item_id": items, "domain": ["food"] * N_SRC + ["kitchen"] * N_TGT,
                              "title": [f"item {i}" for i in items]})
    return TrainSet(np.array(ids, dtype=object), items, seqs, catalogue)


@pytest.fixture(scope="module")
def emcdr():
    train = _two_domain_train()
    return train, EMCDRMF("food", "kitchen", factors=8, iterations=15, epochs=200, seed=0, threads=1).fit(train)


def test_emcdr_mf_maps_a_source_only_user_to_the_right_target_block(emcdr):
    train, model = emcdr
    assert model.n_overlap_ == 300 and model.mapping_.n_users_ == 300   # source- and target-only users left out
    cold = [np.arange(0, 6), np.arange(20, 26)]                          # type 0 and type 1, source items only
    factors, how = model.user_factors(cold)
    assert how.tolist() == [1, 1]
    scores = model.score_histories(cold)
    assert np.isneginf(scores[:, :N_SRC]).all() and np.isfinite(scores[:, N_SRC:]).all()
    top = np.argsort(-scores, axis=1)[:, :10]
    assert np.mean((top[0] >= 40) & (top[0] < 60)) >= 0.9
    assert np.mean(top[1] >= 60) >= 0.9


def test_emcdr_mf_uses_target_history_when_there_is_one(emcdr):
    _, model = emcdr
    # Source items say type 0, the target items say type 1: the target history wins.
    hist = [np.concatenate([np.arange(0, 6), np.arange(60, 64)]), np.array([], dtype=np.int64)]
    _, how = model.user_factors(hist)
    assert how.tolist() == [0, 2]
    scores = model.score_histories(hist)
    assert np.mean(np.argsort(-scores[0])[:10] >= 60) >= 0.9


def test_emcdr_mf_default_factor_is_the_mean_folded_in_target_factor(emcdr):
    train, model = emcdr
    tgt = [s[s >= N_SRC] for s in train.sequences if (s >= N_SRC).any()]
    assert len(tgt) == 400                                               # overlapping + target-only users
    assert np.allclose(model.default_factor_, model.target_als_.user_vectors(tgt).mean(0))
    factors, how = model.user_factors([np.array([], dtype=np.int64)])
    assert how.tolist() == [2] and np.array_equal(factors[0], model.default_factor_)
    # no per-user array anywhere: only item-level and aggregate state
    for part in (model, model.source_als_, model.target_als_):
        assert not any(isinstance(v, np.ndarray) and len(v) == train.n_users for v in vars(part).values())


def test_emcdr_mf_save_load_gives_identical_scores_and_keeps_no_user_ids(emcdr, tmp_path):
    train, model = emcdr
    hist = [np.arange(0, 6), np.arange(40, 45), np.array([3, 41, 77]), np.array([], dtype=np.int64)]
    model.save(tmp_path / "emcdr")
    assert sorted(p.name for p in (tmp_path / "emcdr").iterdir() if p.is_dir()) == ["source_als_", "target_als_"]
    again = load_model(tmp_path / "emcdr", expect=EMCDRMF)
    assert again.get_params() == model.get_params() and again.n_overlap_ == 300
    assert np.array_equal(again.score_histories(hist), model.score_histories(hist))
    assert np.array_equal(again.user_factors(hist)[1], [1, 0, 0, 2])
    assert np.array_equal(EMCDRMF.load(tmp_path / "emcdr").score_histories(hist), model.score_histories(hist))
    ids, _ = again.recommend_history(train.item_ids[train.sequences[0]], k=5)
    assert len(ids) == 5 and all(int(i) >= N_SRC for i in ids)
    blobs = [f.read_bytes() for f in (tmp_path / "emcdr").rglob("*") if f.is_file()]
    assert [u for u in train.user_ids if any(u.encode() in b for b in blobs)] == []


def test_emcdr_mapping_round_trips_through_numbers_only():
    x, y = _pairs(_nonlinear, n=200)
    for kind in ("mlp", "linear"):
        m = EMCDRMapping(kind=kind, hidden=16, epochs=20, seed=3).fit(x, y)
        info, arrays = m.to_arrays()
        assert all(a.dtype == np.float32 for a in arrays.values())
        again = EMCDRMapping.from_arrays(info, arrays)
        assert np.array_equal(again.predict(x[:7]), m.predict(x[:7]))
        assert (again.n_users_, again.best_epoch_, again.kind) == (m.n_users_, m.best_epoch_, kind)
    with pytest.raises(RuntimeError, match="not fitted"):
        EMCDRMapping().to_arrays()


def test_emcdr_mf_bad_domains_and_no_overlap_are_explained():
    train = _two_domain_train()
    with pytest.raises(ValueError, match=r"domain\(s\) \['books'\] not in the catalogue"):
        EMCDRMF("books", "kitchen").fit(train)
    with pytest.raises(ValueError, match="also a source domain"):
        EMCDRMF(["food", "kitchen"], "kitchen").fit(train)
    only_one = TrainSet(train.user_ids, train.item_ids,
                        [s[s < N_SRC] if i % 2 else s[s >= N_SRC] for i, s in enumerate(train.sequences)],
                        train.catalogue)
    with pytest.raises(ValueError, match="only 0 training users have events in both"):
        EMCDRMF("food", "kitchen", threads=1).fit(only_one)
