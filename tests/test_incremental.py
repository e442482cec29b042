"""Incremental updates (partial_fit), replay evaluation and the adaptive blend, on tiny synthetic data.

The "cycle" data of test_models: items in a ring, each user steps to the next item. A
new user who walks the ring must be recommended the next item after one update; a new
item planted after i05 must climb once it is trained on.
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from test_models import SMALL, cycle_split

from migrec.data.schema import Dataset, make_catalogue, make_interactions
from migrec.encoders import HashingEncoder
from migrec.evaluation import evaluate
from migrec.evaluation.replay import replay_evaluate, time_steps
from migrec.models.base import Recommender
from migrec.models.interest import InterestModel
from migrec.models.itemknn import ItemKNN
from migrec.models.matrix_factorization import ALS
from migrec.models.popularity import Popularity
from migrec.models.sasrec import SASRec

MAKERS = {
    "sasrec": lambda: SASRec(epochs=25, patience=25, **SMALL),
    "interest": lambda: InterestModel(use_id=True, experts=2, epochs=20, patience=20, **SMALL),
}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def cycle():
    return cycle_split()


@pytest.fixture(scope="module")
def fitted(cycle):
    return {name: make().fit(cycle.train, cycle.valid) for name, make in MAKERS.items()}


def ring(user, start, n, t0=0.0):
    items = [f"i{(start + t) % 40:02d}" for t in range(n)]
    return pd.DataFrame({"user_id": user, "item_id": items, "timestamp": t0 + np.arange(n, dtype=float)})


def ndcg(model, split):
    return evaluate(model, split.test, split.train, ks=(10,), beyond=False, segments=False).metrics["NDCG@10"]


NEW_VECTOR = {"inew": HashingEncoder().encode(["alpha5 beta5 newcomer"])[0]}


def planted(users, start=0.0):
    """Users who go i03 -> i04 -> i05 -> inew (a new item after i05)."""
    return pd.concat([pd.DataFrame({"user_id": u, "item_id": ["i03", "i04", "i05", "inew"],
                                    "timestamp": start + np.arange(4.0)}) for u in users])


# -- partial_fit ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MAKERS))
def test_new_user_is_recommendable(fitted, name):
    model = copy.deepcopy(fitted[name])
    n_users = len(model.user_ids_)
    with pytest.raises(KeyError):
        model.recommend(["walker"])
    model.partial_fit(ring("walker", 10, 6), epochs=1, lr=1e-3)
    assert len(model.user_ids_) == n_users + 1 and model.user_ids_[-1] == "walker"
    assert model.histories_[-1].tolist() == [model.item_index(f"i{j}") for j in range(10, 16)]
    ids, _ = model.recommend(["walker"], k=3)
    assert ids[0][0] == "i16"                        # the ring's next item
    assert model.partial_history_[-1]["new_users"] == 1


@pytest.mark.parametrize("name", list(MAKERS))
def test_new_item_score_rises_after_training(fitted, name):
    model = copy.deepcopy(fitted[name])
    n_items = len(model.item_ids_)
    # lr=0: the item is added (SASRec: fresh ID row; interest: text vector) but nothing trains
    model.partial_fit(planted(["p0"]), item_vectors=NEW_VECTOR, lr=0.0)
    assert len(model.item_ids_) == n_items + 1 and model.item_ids_[-1] == "inew"
    probe = np.array([model.item_index(i) for i in ("i03", "i04", "i05")])
    new = model.item_index("inew")

    def rank_and_score():
        s = model.score_histories(np.array([0]), [probe])[0]
        return int((s > s[new]).sum()), float(s[new])

    rank0, score0 = rank_and_score()
    model.partial_fit(planted([f"p{k}" for k in range(1, 9)], 10.0), item_vectors=NEW_VECTOR, epochs=5)
    rank1, score1 = rank_and_score()
    assert score1 > score0 and rank1 < rank0 and rank1 <= 2, (rank0, rank1)
    if name == "interest":                           # its ID part is now switched on and trained
        assert model.seen_[new] == 1


@pytest.mark.parametrize("name", list(MAKERS))
def test_replay_keeps_old_knowledge(fitted, cycle, name):
    model = fitted[name]
    before = ndcg(model, cycle)
    weights = {k: v.clone() for k, v in model.net_["encoder"].state_dict().items()}
    moved = {}
    for replay in (0.0, 8.0):
        m = copy.deepcopy(model)
        m.partial_fit(ring("walker", 3, 12), epochs=3, replay=replay, lr=1e-3)
        after = m.net_["encoder"].state_dict()
        moved[replay] = sum(float((after[k] - w).norm()) for k, w in weights.items()) / \
            sum(float(w.norm()) for w in weights.values())
        assert m.partial_history_[-1]["replay_windows"] == round(replay * m.partial_history_[-1]["new_windows"])
        assert ndcg(m, cycle) >= before - 0.05       # the old users' next items are still found
    assert 0 < moved[8.0] < 0.05 and 0 < moved[0.0] < 0.05, moved


@pytest.mark.parametrize("name", list(MAKERS))
def test_save_load_after_partial_fit(fitted, tmp_path, name):
    model = copy.deepcopy(fitted[name])
    model.partial_fit(pd.concat([planted(["p0", "p1"]), ring("walker", 20, 5)]), item_vectors=NEW_VECTOR)
    model.save(tmp_path / name)
    loaded = Recommender.load(tmp_path / name)
    users, items = ["p0", "walker", "u01"], ["inew", "i25", "i00"]
    np.testing.assert_allclose(loaded.score(users, items), model.score(users, items), rtol=1e-5, atol=1e-5)
    loaded.partial_fit(ring("walker", 25, 2, 10.0))                # and it keeps learning after loading
    assert len(loaded.histories_[loaded.user_index("walker")]) == 7


def test_bad_input_is_named(fitted):
    model = copy.deepcopy(fitted["interest"])
    with pytest.raises(ValueError, match="'item_id'"):
        model.partial_fit(pd.DataFrame({"user_id": ["a"]}))
    with pytest.raises(ValueError, match="empty"):
        model.partial_fit(ring("a", 0, 0))
    with pytest.raises(ValueError, match="text vectors.*inew"):
        model.partial_fit(planted(["p0"]))
    with pytest.raises(ValueError, match="dimensions"):
        model.partial_fit(planted(["p0"]), item_vectors={"inew": np.ones(3)})
    with pytest.raises(TypeError, match="DataFrame"):
        model.partial_fit([("a", "i00")])
    n = len(model.item_ids_)
    frame = pd.DataFrame({"item_id": ["inew"], **{f"d{j}": [v] for j, v in enumerate(NEW_VECTOR["inew"])}})
    model.partial_fit(planted(["p0"]), item_vectors=frame)       # vectors as a DataFrame work too
    assert len(model.item_ids_) == n + 1


def test_classic_baselines_update(cycle):
    pop = Popularity().fit(cycle.train)
    before = pop.counts_[pop.item_index("i07")]
    pop.partial_fit(ring("walker", 5, 4))                          # i05..i08
    assert pop.counts_[pop.item_index("i07")] == before + 1 and "walker" in pop.user_ids_

    als = ALS(factors=8, iterations=5, threads=1).fit(cycle.train)
    old = als.item_factors_.copy()
    als.partial_fit(ring("walker", 5, 4))
    touched = [als.item_index(f"i{j:02d}") for j in range(5, 9)]
    changed = np.flatnonzero(np.abs(als.item_factors_ - old).max(1) > 0)
    assert set(changed) == set(touched)
    assert als.recommend(["walker"], k=5)[0].shape == (1, 5)
    with pytest.raises(ValueError, match="outside its catalogue"):
        als.partial_fit(planted(["p0"]))
    with pytest.raises(TypeError, match="no incremental update"):
        ItemKNN().fit(cycle.train).partial_fit(ring("walker", 5, 4))


# -- replay evaluation ---------------------------------------------------------------------------
def drifting_log():
    """Ring walkers over 6 'days'; from day 3 on a new cohort walks the ring backwards."""
    rng = np.random.default_rng(0)
    users, items, times = [], [], []
    for u in range(30):
        start, day0 = rng.integers(40), rng.integers(0, 5)
        step = 1 if u < 20 else -1
        for t in range(12):
            users.append(f"u{u}")
            items.append(f"i{(start + step * t) % 40:02d}")
            times.append((day0 + t / 6) * 86400.0)
    catalogue = make_catalogue([f"i{j:02d}" for j in range(40)], [f"alpha{j} beta{j}" for j in range(40)])
    return Dataset(make_interactions(users, items, timestamp=times), catalogue, "drift")


def test_replay_gives_per_step_results_for_all_strategies():
    data = drifting_log()
    results = replay_evaluate(data, lambda: SASRec(epochs=8, patience=8, **SMALL), start=3 * 86400.0,
                              period=86400.0, partial_fit_kw=dict(epochs=2))
    assert set(results) == {"no-update", "incremental", "full-retrain"}
    for strategy, res in results.items():
        assert [s["step"] for s in res.steps] == [1, 2, 3]
        scored = [s for s in res.steps if s["cases"]]
        assert scored and all(0 <= s["metrics"]["NDCG@10"] <= 1 for s in scored)
        summary = res.summary()
        assert {"NDCG@10", "HR@10", "update_seconds"} <= set(summary)
        updates = [s["update_seconds"] for s in res.steps[:-1]]
        if strategy == "no-update":
            assert updates == [None, None]
        else:
            assert all(u is not None and u > 0 for u in updates)
    # identical start, identical first step; the histories grow for everyone
    first = {s: r.steps[0]["metrics"]["NDCG@10"] for s, r in results.items()}
    assert len(set(first.values())) == 1
    assert time_steps(0.0, 10.0, 5.0)[-1] == (10.0, 15.0)      # the newest event falls in a step
    with pytest.raises(ValueError, match="unknown strategies"):
        replay_evaluate(data, Popularity, start=3 * 86400.0, strategies=("nightly",))
    with pytest.raises(ValueError, match="no event before"):
        replay_evaluate(data, Popularity, start=-1.0)


# -- adaptive blend ------------------------------------------------------------------------------
class CentroidDetector:
    """A small stand-in with the MigrationDetector API: the distance between the mean vector of
    the last `short` events and of the `long` before them; threshold = a high quantile of the
    training sequences' scores."""

    def __init__(self, short=3, long=6, quantile=0.98):
        self.short, self.long, self.quantile = short, long, quantile

    def scores(self, vectors):
        v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        out = np.zeros(len(v))
        for t in range(self.short + self.long - 1, len(v)):
            recent = v[t - self.short + 1:t + 1].mean(0)
            past = v[t - self.short - self.long + 1:t - self.short + 1].mean(0)
            out[t] = 1 - recent @ past / (np.linalg.norm(recent) * np.linalg.norm(past))
        return out

    def fit(self, sequences):
        self.threshold_ = float(np.quantile(np.concatenate([self.scores(s) for s in sequences]), self.quantile))
        return self

    def detect(self, vectors):
        return np.flatnonzero(self.scores(vectors) > self.threshold_).tolist()


def topic_log(n_users=40, seed=0, length=(10, 13), switched=5):
    """Users listen to one topic (jazz or rock); the last 4 users switch topic for `switched` events."""
    from test_models import TOPIC_WORDS

    rng = np.random.default_rng(seed)
    ids = [f"{t}{k}" for t in TOPIC_WORDS for k in range(12)]
    titles = [f"{TOPIC_WORDS[t]} {t}{k}" for t in TOPIC_WORDS for k in range(12)]
    users, items = [], []
    for u in range(n_users):
        topic = "jazz" if u % 2 == 0 else "rock"
        seq = [f"{topic}{k}" for k in rng.integers(0, 12, rng.integers(*length))]
        if u >= n_users - 4:     # planted migration: the last 3 events are of the other topic
            other = "rock" if topic == "jazz" else "jazz"
            seq += [f"{other}{k}" for k in rng.integers(0, 12, switched)]
        users += [f"u{u:02d}"] * len(seq)
        items += seq
    data = Dataset(make_interactions(users, items, timestamp=np.arange(len(users), dtype=float)),
                   make_catalogue(ids, titles), "topics")
    from migrec.data.split import leave_one_out
    from migrec.encoders import encode_catalogue

    split = leave_one_out(data)
    split.train.item_vectors = encode_catalogue(split.train.catalogue, HashingEncoder())
    return split


def test_adaptive_blend_weight_rises_after_a_planted_migration():
    from migrec.drift.adaptation import AdaptiveBlend

    split = topic_log()
    blend = AdaptiveBlend(Popularity(), short=3, detector=CentroidDetector(), recent=3, weight_min=0.1,
                          weight_max=0.7, tune=False, min_events=6).fit(split.train)
    hist = split.test.histories
    w = blend.weights(hist)
    movers = np.arange(len(hist)) >= len(hist) - 4
    assert np.all(w[movers] == 0.7) and np.mean(w[~movers] == 0.1) >= 0.8, w   # few false alarms
    # the blend's scores are the weighted standardised long/short scores of the base
    scores = blend.score_histories(split.test.users[:2], hist[:2])
    assert scores.shape == (2, split.train.n_items) and np.isfinite(scores).all()
    with pytest.raises(ValueError, match="item_vectors"):
        bare = copy.copy(split.train)
        bare.item_vectors = None
        AdaptiveBlend(Popularity(), detector=CentroidDetector()).fit(bare)
    with pytest.raises(ValueError, match="context"):
        AdaptiveBlend(Popularity(), context="season")


def test_adaptive_blend_tuning_and_context():
    from migrec.drift.adaptation import AdaptiveBlend

    split = topic_log()
    base = InterestModel(use_id=True, experts=2, epochs=10, **SMALL)
    blend = AdaptiveBlend(base, short=3, detector=CentroidDetector(), min_events=6).fit(split.train, split.valid)
    assert all(w in np.round(np.arange(0, 0.81, 0.1), 1) for w in blend.weights_)
    plain = evaluate(base, split.valid, split.train, ks=(10,), beyond=False, segments=False).metrics["NDCG@10"]
    assert blend.valid_ndcg_ >= plain - 1e-6      # (0, 0) is the base model itself, so never worse
    ctx = AdaptiveBlend(base, short=3, detector=CentroidDetector(), min_events=6, refit_base=False,
                        context="hour", context_weight=0.5, tune=False).fit(split.train)
    users, hist = split.test.users[:3], split.test.histories[:3]
    times = [np.arange(len(h)) * 3600.0 for h in hist]
    with_ctx = ctx.score_context(users, hist, times, now=np.array([0.0, 3600.0, 7200.0]))
    assert with_ctx.shape == (3, split.train.n_items)
    assert not np.allclose(with_ctx, ctx.score_histories(users, hist))


def test_adaptive_blend_with_the_migration_detector():
    from migrec.drift.adaptation import AdaptiveBlend
    from migrec.drift.detection import MigrationDetector

    split = topic_log(length=(30, 36), switched=6)
    detector = MigrationDetector(short=4, long=20, min_history=10, false_alarm=0.05, seed=0)
    blend = AdaptiveBlend(Popularity(), short=4, detector=detector, recent=4, weight_min=0.0, weight_max=0.6,
                          tune=False, min_events=14).fit(split.train)
    w = blend.weights(split.test.histories)
    movers = np.arange(len(w)) >= len(w) - 4
    assert w[movers].mean() >= 0.45 and w[~movers].mean() <= 0.1, w
