"""Replay evaluation (models hold no histories: the replay keeps them) and the AdaptiveBlend as
a full model (read-only scoring, safe save/load), on small synthetic logs."""
from __future__ import annotations

import numpy as np
import pytest

from migrec.data.histories import Histories
from migrec.data.schema import Dataset, make_catalogue, make_interactions
from migrec.data.split import leave_one_out
from migrec.drift.adaptation import AdaptiveBlend
from migrec.drift.detection import MigrationDetector
from migrec.encoders import HashingEncoder, encode_catalogue
from migrec.evaluation import evaluate
from migrec.evaluation.replay import EventLog, fit_until, replay_evaluate, time_steps
from migrec.models.itemknn import ItemKNN
from migrec.models.popularity import Popularity
from migrec.models.sasrec import SASRec
from migrec.registry import load_model

DAY = 86400.0
TINY = dict(hidden=16, layers=1, heads=1, max_len=20, dropout=0.1, batch_size=8, lr=0.01,
            device="cpu", progress=False, seed=0)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# -- replay evaluation ---------------------------------------------------------------------------
def trend_log(n_users=20, before=4, after=8, days_after=4, seed=0):
    """Two days of items 0-9 (4 events per user), then `days_after` days of items 20-29 (8 per user
    per day): what is popular changes at day 2, the replay's start. Users consume items again, so
    the replays here evaluate with repeats="allow" (nothing masked)."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        for t in range(before):
            users.append(f"u{u}")
            items.append(f"i{rng.integers(0, 10):02d}")
            times.append((t / before) * 2 * DAY)
        for d in range(days_after):
            for t in range(after):
                users.append(f"u{u}")
                items.append(f"i{rng.integers(20, 30):02d}")
                times.append((2 + d + t / after) * DAY + u)
    catalogue = make_catalogue([f"i{j:02d}" for j in range(40)], [f"alpha{j} beta{j}" for j in range(40)])
    return Dataset(make_interactions(users, items, timestamp=times), catalogue, "trend")


class Recording(Popularity):
    """Popularity that records what each partial_fit was given (the contract's inputs)."""

    def partial_fit(self, new_interactions, histories=None, **kw):
        calls = list(self.__dict__.get("calls_", []))
        calls.append({"events": len(new_interactions), "history_events": histories.n_events,
                      "history_users": len(histories), "latest": max(float(np.nanmax(histories.times(u)))
                                                                     for u in histories.users()),
                      "first_new": float(new_interactions["timestamp"].min()), "kw": kw,
                      "is_histories": isinstance(histories, Histories)})
        self.calls_ = calls
        return super().partial_fit(new_interactions, histories, **kw)


def test_updating_beats_not_updating_when_popularity_moves():
    data = trend_log()
    results = replay_evaluate(data, Popularity, start=2 * DAY, period=DAY, repeats="allow")
    assert set(results) == {"no-update", "incremental", "full-retrain"}
    assert {r.repeats for r in results.values()} == {"allow"}
    ndcg = {s: [step["metrics"]["NDCG@10"] for step in r.steps] for s, r in results.items()}
    assert [len(v) for v in ndcg.values()] == [4, 4, 4]
    # step 1 is scored before any update: the same model, the same score for everyone
    assert len({v[0] for v in ndcg.values()}) == 1
    # frozen: the new items (no training events) rank behind the 30 others; updated: they lead
    assert max(ndcg["no-update"]) < 0.05, ndcg
    assert min(ndcg["incremental"][1:]) > 0.5, ndcg
    assert min(ndcg["full-retrain"][1:]) > 0.5, ndcg
    summary = {s: r.summary() for s, r in results.items()}
    assert summary["incremental"]["NDCG@10"] > summary["no-update"]["NDCG@10"] + 0.4
    assert summary["no-update"]["cases"] == summary["incremental"]["cases"] == 4 * 20
    assert [s["update_seconds"] is None for s in results["no-update"].steps] == [True] * 4
    assert all(s["update_seconds"] > 0 for s in results["incremental"].steps[:-1])
    assert results["incremental"].steps[-1]["update_seconds"] is None   # the last update would go unused


def test_incremental_update_gets_the_histories_before_the_step():
    data = trend_log(days_after=3)
    made = []

    def make():
        made.append(Recording())
        return made[-1]

    results = replay_evaluate(data, make, start=2 * DAY, period=DAY, strategies=("incremental",),
                              partial_fit_kw=dict(epochs=3))
    assert [s["events"] for s in results["incremental"].steps] == [160, 160, 160]
    calls = made[0].calls_
    assert len(calls) == 2                               # steps 1 and 2 (the last step is not updated)
    assert all(c["is_histories"] and c["kw"] == {"epochs": 3} for c in calls)
    # before step 1: the 80 training events of 20 users; before step 2: plus step 1's 160
    assert [c["history_events"] for c in calls] == [80, 240]
    assert [c["history_users"] for c in calls] == [20, 20]
    assert all(c["latest"] < c["first_new"] for c in calls)   # nothing of the step itself


def test_an_initial_model_is_cloned_not_changed():
    data = trend_log(days_after=3)
    initial = fit_until(Recording, EventLog(data), 2 * DAY)          # fitted on the events before the start
    counts = initial.counts_.copy()
    results = replay_evaluate(data, Recording, start=2 * DAY, period=DAY, strategies=("incremental", "no-update"),
                              initial=initial, repeats="allow")
    assert np.array_equal(initial.counts_, counts) and "calls_" not in vars(initial)
    assert results["incremental"].summary()["NDCG@10"] > results["no-update"].summary()["NDCG@10"] + 0.4


def ring_log(n_users=24, before=10, after=6, days=3, seed=0):
    """Users walk a 30-item ring forwards by 1 before day 2 and by 3 after (a changed habit); the walk
    comes back to items it visited, so the replays evaluate with repeats="allow"."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        pos = int(rng.integers(30))
        for t in range(before):
            users.append(f"u{u}")
            items.append(f"i{pos % 30:02d}")
            times.append(2 * DAY * t / before + u)
            pos += 1
        for d in range(days):
            for t in range(after):
                pos += 3
                users.append(f"u{u}")
                items.append(f"i{pos % 30:02d}")
                times.append((2 + d + t / after) * DAY + u)
    catalogue = make_catalogue([f"i{j:02d}" for j in range(30)], [f"alpha{j} beta{j}" for j in range(30)])
    return Dataset(make_interactions(users, items, timestamp=times), catalogue, "ring")


def test_sequential_model_learns_the_new_habit_by_updating():
    """The drifting log: the habit changes at the replay's start. Both ways of updating must beat
    the frozen model on the steps after the first (before any update all three are the same model).
    Measured (seeds 0-2, mean NDCG@10 over steps 2-5): no-update 0.16-0.22, incremental 0.40-0.43,
    full-retrain 0.29-0.37."""
    data = ring_log(n_users=48, days=5)
    results = replay_evaluate(data, lambda: SASRec(epochs=30, patience=30, **TINY), start=2 * DAY, period=DAY,
                              partial_fit_kw=dict(epochs=5, replay=0.5), repeats="allow")
    ndcg = {s: [step["metrics"]["NDCG@10"] for step in r.steps] for s, r in results.items()}
    assert [len(v) for v in ndcg.values()] == [5, 5, 5]
    assert ndcg["no-update"][0] == ndcg["incremental"][0] == ndcg["full-retrain"][0]
    later = {s: np.mean(v[1:]) for s, v in ndcg.items()}
    assert later["incremental"] > later["no-update"] + 0.1, ndcg
    assert later["full-retrain"] > later["no-update"] + 0.04, ndcg
    updates = [s["update_seconds"] for s in results["full-retrain"].steps[:-1]]
    assert all(u is not None and u > 0 for u in updates)      # it did refit every step


def test_replay_input_errors_are_named():
    data = trend_log(days_after=1)
    assert time_steps(0.0, 10.0, 5.0)[-1] == (10.0, 15.0)      # the newest event falls in a step
    with pytest.raises(ValueError, match="unknown strategies"):
        replay_evaluate(data, Popularity, start=2 * DAY, strategies=("nightly",))
    with pytest.raises(ValueError, match="no event before"):
        replay_evaluate(data, Popularity, start=-1.0)
    with pytest.raises(ValueError, match="retrain_every"):
        replay_evaluate(data, Popularity, start=2 * DAY, retrain_every=0)


# -- AdaptiveBlend as a model ----------------------------------------------------------------------
TOPICS = {"jazz": "jazz saxophone swing trumpet", "rock": "rock guitar riff drums"}


def topic_split(n_users=40, length=(30, 36), switched=6, seed=0):
    """Users of one topic (jazz or rock); the last 4 switch to the other topic at the end."""
    rng = np.random.default_rng(seed)
    ids = [f"{t}{k}" for t in TOPICS for k in range(12)]
    titles = [f"{TOPICS[t]} {t}{k}" for t in TOPICS for k in range(12)]
    users, items = [], []
    for u in range(n_users):
        topic = "jazz" if u % 2 == 0 else "rock"
        seq = [f"{topic}{k}" for k in rng.integers(0, 12, rng.integers(*length))]
        if u >= n_users - 4:
            other = "rock" if topic == "jazz" else "jazz"
            seq += [f"{other}{k}" for k in rng.integers(0, 12, switched)]
        users += [f"u{u:02d}"] * len(seq)
        items += seq
    data = Dataset(make_interactions(users, items, timestamp=np.arange(len(users), dtype=float) * 1000.0),
                   make_catalogue(ids, titles), "topics")
    split = leave_one_out(data)
    split.train.item_vectors = encode_catalogue(split.train.catalogue, HashingEncoder())
    split.train.encoder = "hashing"
    return split


@pytest.fixture(scope="module")
def blend_split():
    split = topic_split()
    detector = MigrationDetector(short=4, long=20, min_history=10, false_alarm=0.05, seed=0)
    # fixed weights (validation tuning picks one weight for all on this data): the detector decides
    blend = AdaptiveBlend(ItemKNN(neighbors=10), short=4, detector=detector, recent=4, min_events=14,
                          weight_min=0.1, weight_max=0.7, tune=False, context="hour",
                          context_weight=0.5).fit(split.train)
    return split, blend


def test_blend_is_fitted_without_changing_its_hyper_parameters(blend_split):
    split, blend = blend_split
    assert not hasattr(blend.detector, "threshold_")        # the given detector stays as given
    assert np.isfinite(blend.detector_.threshold_)
    assert np.array_equal(blend.item_ids_, blend.base.item_ids_) and blend.n_items == 24
    movers = np.arange(len(split.test)) >= len(split.test) - 4
    fired = blend.migrated(split.test.histories)
    assert fired[movers].sum() >= 3 and fired[~movers].mean() <= 0.1, fired
    assert blend.encoder_info() == {"model_id": "hashing", "dim": blend.item_vectors_.shape[1]}
    with pytest.raises(RuntimeError, match="not fitted"):
        AdaptiveBlend(ItemKNN()).score_histories([np.array([0, 1])])


def test_blend_scoring_is_read_only(blend_split):
    split, blend = blend_split
    hists = split.test.histories

    def snapshot():
        return ({k: id(v) for k, v in vars(blend).items()},
                {k: id(v) for k, v in vars(blend.detector_).items()})

    before = snapshot()
    first = blend.score_histories(hists)
    times = [np.arange(len(h)) * 3600.0 for h in hists]
    blend.score_context(hists, times, now=np.zeros(len(hists)))
    blend.migrated(hists)
    blend.recommend_history(["jazz1", "jazz2"], k=3)
    assert snapshot()[0].keys() - {"_lookup"} == before[0].keys()   # item_index's lookup cache only
    after = snapshot()
    assert {k: v for k, v in after[0].items() if k != "_lookup"} == before[0] and after[1] == before[1]
    assert np.array_equal(blend.score_histories(hists), first)   # and the same answer twice


def test_blend_save_load_gives_identical_scores(blend_split, tmp_path):
    split, blend = blend_split
    blend.save(tmp_path / "blend")
    assert (tmp_path / "blend" / "base" / "manifest.json").exists()
    loaded = load_model(tmp_path / "blend", expect=AdaptiveBlend, encoder="hashing")
    assert isinstance(loaded, AdaptiveBlend) and isinstance(loaded.base, ItemKNN)
    assert loaded.weights_ == blend.weights_ == (0.1, 0.7)
    params = loaded.get_params()
    assert {k: v for k, v in params.items() if k not in ("base", "detector")} == \
        {k: v for k, v in blend.get_params().items() if k not in ("base", "detector")}
    assert type(loaded.detector) is MigrationDetector and vars(loaded.detector) == vars(blend.detector)
    assert loaded.detector_.threshold_ == blend.detector_.threshold_
    assert np.array_equal(loaded.detector_.null_maxima_, blend.detector_.null_maxima_)
    hists = split.test.histories
    assert np.array_equal(loaded.score_histories(hists), blend.score_histories(hists))
    assert np.array_equal(loaded.migrated(hists), blend.migrated(hists))
    assert sorted(set(loaded.weights(hists).round(3))) == [0.1, 0.7]       # both weights are in use
    times = [np.arange(len(h)) * 3600.0 for h in hists]
    assert np.array_equal(loaded.score_context(hists, times, 7200.0), blend.score_context(hists, times, 7200.0))
    ids, scores = loaded.recommend_history(["rock1", "rock2", "rock3"], k=5)
    assert list(ids) == list(blend.recommend_history(["rock1", "rock2", "rock3"], k=5)[0])
    with pytest.raises(ValueError, match="encoder"):
        load_model(tmp_path / "blend", encoder="another-encoder")


def test_blend_without_detector_saves_and_bad_detectors_are_named(blend_split, tmp_path):
    split, blend = blend_split
    # users replay the 12 items of their topic: validation tuning with nothing masked
    fixed = AdaptiveBlend(blend.base, short=4, refit_base=False, adaptive=False,
                          repeats="allow").fit(split.train, split.valid)
    assert fixed.detector_ is None and fixed.weights_[0] == fixed.weights_[1]
    fixed.save(tmp_path / "fixed")
    again = load_model(tmp_path / "fixed")
    assert again.detector is None and again.detector_ is None
    assert again.weights_ == fixed.weights_ and again.valid_ndcg_ == fixed.valid_ndcg_
    # the tuned figure is the evaluator's validation NDCG@10 of the chosen blend, under the same policy
    valid = evaluate(fixed, split.valid, split.train, ks=(10,), beyond=False, segments=False, repeats="allow")
    assert fixed.valid_ndcg_ == pytest.approx(valid.metrics["NDCG@10"], abs=1e-6) and fixed.valid_ndcg_ > 0.3
    assert np.array_equal(again.score_histories(split.test.histories), fixed.score_histories(split.test.histories))
    with pytest.raises(ValueError, match="adaptive=False"):
        fixed.migrated(split.test.histories)

    class Homemade(MigrationDetector):
        pass

    odd = AdaptiveBlend(blend.base, short=4, refit_base=False, detector=Homemade(short=4, long=20, min_history=10),
                        min_events=14, tune=False).fit(split.train)
    with pytest.raises(TypeError, match="Homemade"):
        odd.save(tmp_path / "odd")
