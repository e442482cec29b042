"""migrec.drift: detection, profiles, topics, forecast, and the `interests` command."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from migrec.drift import (MarkovForecaster, MigrationDetector, OfflineChangePointDetector, category_topics,
                          name_topics, timeline)
from migrec.drift.forecast import kl_divergence, log_likelihood, transition_counts
from migrec.drift.profiles import decay_weights, profile, user_histories

K = 6
A = np.array([0.45, 0.3, 0.15, 0.04, 0.03, 0.03])
B = A[::-1].copy()


def draws(rng, n, p):
    return np.eye(len(p))[rng.choice(len(p), size=n, p=p)]


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    calib = [draws(rng, 80, rng.dirichlet(np.ones(K))) for _ in range(150)]
    return MigrationDetector(short=10, long=50, false_alarm=0.05, seed=0).fit(calib)


# -- detection ----------------------------------------------------------------------------
def test_planted_change_is_found_quickly(fitted):
    rng = np.random.default_rng(1)
    delays, early = [], 0
    for _ in range(60):
        x = np.vstack([draws(rng, 50, A), draws(rng, 30, B)])
        alarms = fitted.detect(x)
        early += any(t < 50 for t in alarms)
        late = [t - 50 for t in alarms if t >= 50]
        if late:
            delays.append(late[0])
    assert len(delays) >= 48                      # >= 80 % of planted changes found (52/60 measured)
    assert np.median(delays) <= 10                # within one recent window
    assert early <= 10                            # few alarms before the change


def test_stationary_sequences_alarm_near_calibrated_rate(fitted):
    rng = np.random.default_rng(2)
    rate = np.mean([len(fitted.detect(draws(rng, 80, rng.dirichlet(np.ones(K))))) > 0 for _ in range(400)])
    assert 0.01 <= rate <= 0.11                   # calibrated to 0.05
    assert fitted.threshold_ > 1.0               # the shift statistic is ~1 under the null


def test_scores_shape_nan_prefix_and_restart(fitted):
    rng = np.random.default_rng(3)
    x = np.vstack([draws(rng, 50, A), draws(rng, 30, B)])
    s = fitted.scores(x)
    assert s.shape == (80,)
    assert np.isnan(s[:29]).all() and np.isfinite(s[29])   # 20 reference + 10 recent events needed
    alarms = fitted.detect(x)
    assert alarms and s[alarms[0]] > fitted.threshold_
    assert np.isnan(s[alarms[0] + 1: alarms[0] + 20]).all()  # the reference restarts after an alarm
    assert fitted.change_points(x)[0] == alarms[0] - 9


@pytest.mark.parametrize("statistic,least", [("js", 25), ("cusum", 15)])   # CUSUM is the weaker one
def test_other_statistics_find_a_strong_change(statistic, least):
    rng = np.random.default_rng(4)
    calib = [draws(rng, 80, A) for _ in range(60)]
    det = MigrationDetector(statistic=statistic).fit(calib)
    hits = sum(any(50 <= t < 70 for t in det.detect(np.vstack([draws(rng, 50, A), draws(rng, 30, B)])))
               for _ in range(30))
    assert hits >= least


def test_offline_detector_locates_the_change():
    rng = np.random.default_rng(5)
    det = OfflineChangePointDetector(n_null=2).fit([draws(rng, 80, A) for _ in range(40)])
    cps = [det.detect(np.vstack([draws(rng, 50, A), draws(rng, 30, B)])) for _ in range(20)]
    assert sum(any(abs(c - 50) <= 5 for c in cp) for cp in cps) >= 17


def test_detector_rejects_bad_input(fitted):
    with pytest.raises(ValueError, match="2-D"):
        fitted.detect(np.zeros(10))
    with pytest.raises(ValueError, match="columns"):
        fitted.detect(np.zeros((40, K + 1)))
    with pytest.raises(ValueError, match="NaN"):
        fitted.detect(np.full((40, K), np.nan))
    with pytest.raises(ValueError, match="statistic"):
        MigrationDetector(statistic="kl").fit([np.eye(K)[np.zeros(80, int)]])
    with pytest.raises(ValueError, match="long enough"):
        MigrationDetector().fit([np.eye(K)[:5]])
    with pytest.raises(ValueError, match="non-negative"):
        MigrationDetector(statistic="js").fit([-np.ones((80, K))])
    with pytest.raises(RuntimeError, match="not fitted"):
        MigrationDetector().detect(np.zeros((40, K)))


# -- profiles -------------------------------------------------------------------------------
def test_decay_weights_and_profiles():
    w = decay_weights(21, half_life=10)
    assert w.sum() == pytest.approx(1.0)
    assert w[-1] / w[-11] == pytest.approx(2.0) and w[-1] / w[0] == pytest.approx(4.0)
    assert np.allclose(decay_weights(4, None), 0.25)
    rows = np.eye(3)[[0, 0, 0, 1]]
    assert np.allclose(profile(rows), [0.75, 0.25, 0.0])
    short = profile(rows, half_life=1)               # weights 1/8, 1/4, 1/2, 1 of 15/8
    assert np.allclose(short, [7 / 15, 8 / 15, 0.0])
    with pytest.raises(ValueError, match="half_life"):
        decay_weights(3, 0)


def test_timeline_by_events_and_by_month():
    rows = np.array([[1, 0], [1, 0], [0.5, 0.5], [0, 1], [0, 1]], dtype=float)
    t = timeline(rows, every=2)
    assert list(t.index) == [0, 2, 4] and list(t["n_events"]) == [2, 2, 1]
    shares = t.drop(columns="n_events").to_numpy()
    assert np.allclose(shares.sum(axis=1), 1.0)
    assert np.allclose(shares[1], [0.25, 0.75])
    day = 86400
    ts = np.array([0, 1, 40, 41, 80]) * day          # Jan, Jan, Feb, Feb, Mar 1970
    m = timeline(rows, ts, freq="M")
    assert list(m.index) == ["1970-01", "1970-02", "1970-03"]
    assert np.allclose(m.drop(columns="n_events").to_numpy()[1], [0.25, 0.75])


def test_user_histories_sorted_by_time_with_stable_ties():
    cat = pd.DataFrame({"item_id": ["a", "b", "c"], "domain": "x", "title": ["A", "B", "C"]})
    log = pd.DataFrame({"user_id": ["1", "1", "1", "2"], "item_id": ["c", "a", "b", "a"],
                        "timestamp": [5.0, 1.0, 5.0, 3.0]})
    h = user_histories(log, cat)
    assert list(h["1"].items) == [0, 2, 1]          # a (t=1), then c and b in file order
    with pytest.raises(ValueError, match="missing from the catalogue"):
        user_histories(log.assign(item_id=["z", "a", "b", "a"]), cat)


# -- topics ------------------------------------------------------------------------------------
def test_category_topics_split_multi_genre_items():
    cat = pd.DataFrame({"item_id": ["1", "2", "3"], "title": ["x", "y", "z"],
                        "category": ["Action, Comedy", "Drama", ""]})
    ts = category_topics(cat)
    assert ts.names == ["Action", "Comedy", "Drama", "(unknown)"]
    assert np.allclose(ts.item_topics.sum(axis=1), 1.0)
    assert np.allclose(ts.item_topics[0], [0.5, 0.5, 0, 0])
    with pytest.raises(ValueError, match="no 'genre' column"):
        category_topics(cat, column="genre")


def test_name_topics_picks_distinctive_words():
    texts = ["Star Wars space battle", "Space odyssey of the stars", "Alien space station",
             "Love in Paris", "Paris romance story", "A love letter"]
    names = name_topics(texts, [0, 0, 0, 1, 1, 1], n_words=1)
    assert names == ["space", "love"] or names == ["space", "paris"]


# -- forecast ---------------------------------------------------------------------------------------
def test_markov_forecast_sums_to_one_and_shrinks():
    rng = np.random.default_rng(6)
    alternating = np.array([[1, 0, 0], [0, 1, 0]] * 4, dtype=float)   # this user: 0 -> 1 -> 0 ...
    others = [rng.dirichlet(np.ones(3), size=8) for _ in range(30)]
    m = MarkovForecaster(prior=0.0, smoothing=0.0).fit([alternating] + others)
    assert np.allclose(m.population_.sum(axis=1), 1.0)
    assert np.allclose(m.predict([1, 0, 0], user=0), [0, 1, 0])   # the user's own transitions
    strong = MarkovForecaster(prior=1e9, smoothing=0.0).fit([alternating] + others)
    assert np.allclose(strong.predict([1, 0, 0], user=0), strong.population_[0], atol=1e-6)
    mid = MarkovForecaster(prior=5.0, smoothing=0.01).fit([alternating] + others)
    q = mid.predict([1, 0, 0], user=0)
    assert q.sum() == pytest.approx(1.0)
    assert strong.population_[0, 1] < q[1] < 1.0                   # between population and user
    assert np.allclose(transition_counts(alternating).sum(), 7.0)


def test_forecast_scores():
    assert log_likelihood([2, 0], [0.5, 0.5]) == pytest.approx(np.log(0.5))
    assert kl_divergence([1, 1], [0.5, 0.5]) == pytest.approx(0.0)
    assert kl_divergence([1, 0], [0.25, 0.75]) == pytest.approx(np.log(4))
    assert log_likelihood([1, 1], [1.0, 0.0]) == -np.inf


# -- the `interests` command on real data ----------------------------------------------------------
def test_cli_interests_on_ml100k(shared_data, tmp_path, capsys):
    from migrec.cli import main

    if not (shared_data / "ml-100k" / "u.data").exists():
        pytest.skip("ml-100k not in the shared data folder")
    png = tmp_path / "timeline.png"
    main(["interests", "--data", str(shared_data / "ml-100k"), "--dataset", "ml-100k", "--user", "13",
          "--plot", str(png)])
    out = capsys.readouterr().out
    assert "User 13: 636 events" in out                 # user 13 rated 636 films in ML-100K
    assert "long-term" in out and "short-term" in out and "Drama" in out
    assert "migrations detected:" in out and " -> " in out
    assert png.exists() and png.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="no timed events"):
        main(["interests", "--data", str(shared_data / "ml-100k"), "--user", "99999"])


def test_text_topics_when_the_catalogue_has_no_categories():
    from migrec.drift import topic_space

    rng = np.random.default_rng(7)
    centres = np.eye(8)[:2] * 5
    vectors = np.vstack([centres[0] + rng.normal(0, 0.1, (6, 8)), centres[1] + rng.normal(0, 0.1, (6, 8))])
    titles = [f"Space adventure {i}" for i in range(6)] + [f"Paris love story {i}" for i in range(6)]
    cat = pd.DataFrame({"item_id": [str(i) for i in range(12)], "title": titles})
    ts = topic_space(cat, vectors, n_topics=2)
    assert ts.kind == "text-clusters" and ts.n_topics == 2
    assert np.allclose(ts.item_topics.sum(axis=1), 1.0)
    first = ts.names[int(np.argmax(ts.item_topics[0]))]
    assert "space" in first or "adventure" in first
    with pytest.raises(ValueError, match="pass item_vectors"):
        topic_space(cat)
