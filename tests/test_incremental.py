"""Incremental updates (partial_fit) and the adaptive blend, on tiny synthetic data.

The "cycle" data of test_models: items in a ring, each user steps to the next item. A
new user who walks the ring must be recommended the next item after one update; a new
item planted after i05 must climb once it is trained on. The models hold no user data:
the caller keeps a `Histories` and passes the histories *before* the new events.
(Replay evaluation is tested in test_replay_adaptation.py.)
"""
from __future__ import annotations

import dataclasses
import numpy as np
import pandas as pd
import pytest
from test_models import SMALL, als_fold_in, cycle_split

from migrec.data import Histories
from migrec.data.schema import Dataset, make_catalogue, make_interactions
from migrec.encoders import HashingEncoder
from migrec.evaluation import evaluate
from migrec.models.interest import InterestModel
from migrec.models.itemknn import ItemKNN
from migrec.models.matrix_factorization import ALS, BPR
from migrec.models.popularity import Popularity
from migrec.models.sasrec import SASRec
from migrec.registry import load_model

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
    """Fitted once per module: tests update clones, never these."""
    return {name: make().fit(cycle.train, cycle.valid) for name, make in MAKERS.items()}


def train_histories(split) -> Histories:
    t = split.train
    return Histories.from_sequences(t.user_ids, t.item_ids, t.sequences, t.timestamps)


def ring(user, start, n, t0=0.0, step=1):
    items = [f"i{(start + step * t) % 40:02d}" for t in range(n)]
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
def test_new_user_is_recommendable(fitted, cycle, name):
    model = fitted[name].clone()
    hist = train_histories(cycle)
    events = ring("walker", 10, 6)
    model.partial_fit(events, histories=hist, epochs=1, lr=1e-3)
    record = model.partial_history_[-1]
    assert record["new_users"] == 1 and record["events"] == 6 and record["new_items"] == 0
    assert "walker" not in hist                      # the model does not write the caller's histories
    hist.extend(events)
    assert hist["walker"].tolist() == [f"i{j}" for j in range(10, 16)]
    ids, _ = model.recommend_history(hist["walker"], k=3)
    assert ids[0] == "i16"                           # the ring's next item
    assert not hasattr(model, "histories_") and not hasattr(model, "user_ids_")
    # a known user's events are not a new user
    model.partial_fit(ring(cycle.train.user_ids[0], 0, 2, 100.0), histories=hist, epochs=1, lr=1e-3)
    assert model.partial_history_[-1]["new_users"] == 0
    assert fitted[name].__dict__.get("partial_history_") == []      # the original is untouched


@pytest.mark.parametrize("name", list(MAKERS))
def test_new_item_score_rises_after_training(fitted, cycle, name):
    model = fitted[name].clone()
    hist = train_histories(cycle)
    n_items = len(model.item_ids_)
    # lr=0: the item is added (SASRec: fresh ID row; interest: text vector) but nothing trains
    first = planted(["p0"])
    model.partial_fit(first, histories=hist, item_vectors=NEW_VECTOR, lr=0.0)
    hist.extend(first)
    assert len(model.item_ids_) == n_items + 1 and model.item_ids_[-1] == "inew"
    assert model.partial_history_[-1]["new_items"] == 1
    probe = model.item_index(["i03", "i04", "i05"])
    new = model.item_index("inew")[0]

    def rank_and_score():
        s = model.score_histories([probe])[0]
        return int((s > s[new]).sum()), float(s[new])

    rank0, score0 = rank_and_score()
    model.partial_fit(planted([f"p{k}" for k in range(1, 9)], 10.0), histories=hist, item_vectors=NEW_VECTOR,
                      epochs=5)
    rank1, score1 = rank_and_score()
    assert score1 > score0 and rank1 < rank0 and rank1 <= 2, (rank0, rank1)
    if name == "interest":                           # its ID part is now switched on and trained
        assert model.seen_[new] == 1


@pytest.mark.parametrize("name", list(MAKERS))
def test_replay_keeps_old_knowledge(fitted, cycle, name):
    """A cohort walking the ring backwards, trained hard: without replay the model forgets the
    old users' forward walk; replaying old histories keeps it.

    Measured (seeds 0-2): SASRec test NDCG@10 0.99 -> 0.72-0.74 without replay, 0.97-1.0 with
    replay=4; interest 1.0 -> 0.78-0.92 without, 0.97-1.0 with (seed 0: 0.74 vs 0.99, 0.78 vs 1.0).
    """
    import torch

    model = fitted[name]
    hist = train_histories(cycle)
    before = ndcg(model, cycle)
    backwards = pd.concat([ring(f"back{u}", 5 * u, 12, 100.0, step=-1) for u in range(16)])
    after = {}
    for replay in (0.0, 4.0):
        m = model.clone()
        torch.manual_seed(0)            # dropout draws from torch's RNG, which `seed=` does not set
        m.partial_fit(backwards, histories=hist, epochs=10, replay=replay, lr=0.03, seed=0)
        record = m.partial_history_[-1]
        assert record["new_windows"] == 16
        assert record["replay_windows"] == round(replay * 16)
        after[replay] = ndcg(m, cycle)
        # both learnt the new habit: a backwards walker is sent backwards
        assert m.recommend_history(["i20", "i19", "i18", "i17"], k=1)[0][0] == "i16", replay
    assert before >= 0.95
    assert after[0.0] <= before - 0.1, (before, after)             # forgetting is real here
    assert after[4.0] >= before - 0.05, (before, after)            # replay keeps the old knowledge
    assert after[4.0] >= after[0.0] + 0.1, (before, after)         # replay against none: a real margin


def test_partial_fit_with_a_seed_is_reproducible(fitted, cycle):
    hist = train_histories(cycle)
    events = ring("walker", 10, 6)
    rows = []
    for _ in range(2):
        m = fitted["sasrec"].clone()
        m.partial_fit(events, histories=hist, epochs=2, replay=1.0, lr=0.03, seed=0)
        rows.append(m.score_histories([np.array([1, 2, 3])])[0])
    np.testing.assert_allclose(rows[0], rows[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list(MAKERS))
def test_save_load_after_partial_fit(fitted, cycle, tmp_path, name):
    model = fitted[name].clone()
    hist = train_histories(cycle)
    events = pd.concat([planted(["p0", "p1"]), ring("walker", 20, 5)])
    model.partial_fit(events, histories=hist, item_vectors=NEW_VECTOR)
    hist.extend(events)
    model.save(tmp_path / name)
    loaded = load_model(tmp_path / name)
    hists, items = [hist["p0"], hist["walker"], hist["u01"]], ["inew", "i25", "i00"]
    np.testing.assert_allclose(loaded.score(hists, items), model.score(hists, items), rtol=1e-5, atol=1e-5)
    assert loaded.partial_history_ == model.partial_history_
    more = ring("walker", 25, 2, 10.0)
    loaded.partial_fit(more, histories=hist)                      # and it keeps learning after loading
    assert len(loaded.partial_history_) == 2 and loaded.partial_history_[-1]["new_users"] == 0
    assert np.abs(loaded.score(hists, items) - model.score(hists, items)).max() > 1e-6


def test_bad_input_is_named(fitted, cycle):
    model = fitted["interest"].clone()
    hist = train_histories(cycle)
    with pytest.raises(ValueError, match="'item_id'"):
        model.partial_fit(pd.DataFrame({"user_id": ["a"]}), histories=hist)
    with pytest.raises(ValueError, match="empty"):
        model.partial_fit(ring("a", 0, 0), histories=hist)
    with pytest.raises(ValueError, match="text vectors.*inew"):
        model.partial_fit(planted(["p0"]), histories=hist)
    with pytest.raises(ValueError, match="dimensions"):
        model.partial_fit(planted(["p0"]), histories=hist, item_vectors={"inew": np.ones(3)})
    with pytest.raises(TypeError, match="DataFrame"):
        model.partial_fit([("a", "i00")], histories=hist)
    with pytest.raises(ValueError, match="epochs"):
        model.partial_fit(ring("a", 0, 3), histories=hist, epochs=0)
    with pytest.raises(ValueError, match="replay"):
        model.partial_fit(ring("a", 0, 3), histories=hist, replay=-1)
    n = len(model.item_ids_)
    assert model.partial_history_ == []                           # refused updates changed nothing
    frame = pd.DataFrame({"item_id": ["inew"], **{f"d{j}": [v] for j, v in enumerate(NEW_VECTOR["inew"])}})
    model.partial_fit(planted(["p0"]), histories=hist, item_vectors=frame)   # vectors as a DataFrame work too
    assert len(model.item_ids_) == n + 1


def test_partial_fit_without_histories_learns_from_the_new_events_alone(fitted):
    model = fitted["sasrec"].clone()
    model.partial_fit(ring("walker", 10, 6), epochs=1, lr=1e-3)
    record = model.partial_history_[-1]
    assert record["replay_windows"] == 0 and record["new_users"] is None and record["new_windows"] == 1


def test_classic_baselines_update(cycle):
    hist = train_histories(cycle)
    events = ring("walker", 5, 4)                                  # i05..i08
    pop = Popularity().fit(cycle.train)
    before = pop.counts_.copy()
    assert pop.partial_fit(events) is pop
    i07 = pop.item_index("i07")[0]
    assert pop.counts_[i07] == before[i07] + 1
    assert (pop.counts_ - before).sum() == 4
    with pytest.raises(KeyError, match="inew"):
        pop.partial_fit(planted(["p0"]))

    als = ALS(factors=8, iterations=5, threads=1).fit(cycle.train)
    old = als.item_factors_.copy()
    assert als.partial_fit(events, histories=hist) is als
    touched = als.item_index([f"i{j:02d}" for j in range(5, 9)])
    changed = np.flatnonzero(np.abs(als.item_factors_ - old).max(1) > 0)
    assert set(changed) == set(touched)
    hist.extend(events)
    ids, scores = als.recommend_history(hist["walker"], k=5)
    # the top-5 of a brute-force score computation: the least-squares fold-in of the walker's history
    # against the updated item factors, the history's own items left out
    walked = als.item_index(hist["walker"])
    expect = als.item_factors_.astype(np.float64) @ als_fold_in(als, walked)
    expect[walked] = -np.inf
    top = np.argsort(-expect, kind="stable")[:5]
    assert list(ids) == list(als.item_ids_[top])
    np.testing.assert_allclose(scores, expect[top], rtol=1e-3, atol=1e-4)
    with pytest.raises(KeyError, match="inew"):
        als.partial_fit(planted(["p0"]), histories=hist)
    with pytest.raises(NotImplementedError, match="no incremental update"):
        ItemKNN().fit(cycle.train).partial_fit(events)
    with pytest.raises(NotImplementedError, match="no incremental update"):
        BPR(factors=8, iterations=5, threads=1).fit(cycle.train).partial_fit(events)


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
    scores = blend.score_histories(hist[:2])
    assert scores.shape == (2, split.train.n_items) and np.isfinite(scores).all()
    with pytest.raises(ValueError, match="item_vectors"):
        bare = dataclasses.replace(split.train, item_vectors=None)
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
    hist = split.test.histories[:3]
    times = [np.arange(len(h)) * 3600.0 for h in hist]
    with_ctx = ctx.score_context(hist, times, now=np.array([0.0, 3600.0, 7200.0]))
    assert with_ctx.shape == (3, split.train.n_items)
    assert not np.allclose(with_ctx, ctx.score_histories(hist))


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
