"""Every model under the one contract, on tiny synthetic data made here.

Two data sets:
- "cycle": 40 items in a ring; each user starts at a random item and then always moves
  to the next one, (i + 1) mod 40. A sequential model can learn this exactly; the
  popularity baseline cannot.
- "topics": jazz and rock items; each user only touches one topic. Some catalogue items
  of each topic have no events at all (text-only / cold items).

Torch and BLAS run on one thread here: the models are tiny, and with a busy CPU more threads
only contend with each other.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from migrec.data import Histories
from migrec.data.schema import Dataset, make_catalogue, make_interactions
from migrec.data.split import leave_one_out
from migrec.encoders import HashingEncoder, encode_catalogue
from migrec.evaluation import evaluate
from migrec.models.artifact import ArtifactError
from migrec.models.base import Recommender
from migrec.models.interest import InterestModel
from migrec.models.itemknn import ItemKNN
from migrec.models.matrix_factorization import ALS, BPR
from migrec.models.popularity import Popularity
from migrec.models.sasrec import SASRec
from migrec.registry import load_model

N_ITEMS = 40
N_USERS = 40
N_LONG = 4          # the first users have histories longer than max_len
SMALL = dict(hidden=16, layers=1, heads=1, max_len=20, dropout=0.1, batch_size=8, lr=0.01,
             device="cpu", progress=False, seed=0)

MODELS = {
    "popularity": lambda: Popularity(),
    "itemknn": lambda: ItemKNN(neighbors=20),
    "als": lambda: ALS(factors=8, iterations=5, threads=1),
    "bpr": lambda: BPR(factors=8, iterations=20, threads=1),
    "sasrec": lambda: SASRec(epochs=25, patience=25, **SMALL),
    "interest-text": lambda: InterestModel(use_id=False, experts=2, adapter_dropout=0.0, epochs=20, patience=20,
                                           **SMALL),
    "interest-id": lambda: InterestModel(use_id=True, experts=2, epochs=20, patience=20, **SMALL),
}
SEQUENTIAL = ["sasrec", "interest-text", "interest-id"]
INTEREST = ["interest-text", "interest-id"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:   # implicit warns (and slows down) when BLAS runs its own thread pool
        import implicit.cpu.als  # noqa: F401  (load its BLAS before limiting it)
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(1, "blas")
    except ImportError:
        limits = None
    yield
    if limits is not None:
        limits.restore_original_limits()
    torch.set_num_threads(before)


# -- data ------------------------------------------------------------------------------------
def cycle_split():
    rng = np.random.default_rng(0)
    users, items, times = [], [], []
    for u in range(N_USERS):
        length = rng.integers(24, 29) if u < N_LONG else rng.integers(8, 15)
        start = rng.integers(N_ITEMS)
        for t in range(length):
            users.append(f"u{u:02d}")
            items.append(f"i{(start + t) % N_ITEMS:02d}")
            times.append(float(t))
    catalogue = make_catalogue([f"i{j:02d}" for j in range(N_ITEMS)], [f"alpha{j} beta{j}" for j in range(N_ITEMS)])
    split = leave_one_out(Dataset(make_interactions(users, items, timestamp=times), catalogue, "cycle"))
    split.train.item_vectors = encode_catalogue(split.train.catalogue, HashingEncoder())
    return split


TOPIC_WORDS = {"jazz": "jazz saxophone swing trumpet", "rock": "rock guitar riff drums"}
WARM_PER_TOPIC, COLD_PER_TOPIC = 10, 2


def topic_split():
    rng = np.random.default_rng(1)
    ids, titles = [], []
    for topic, words in TOPIC_WORDS.items():
        for k in range(WARM_PER_TOPIC):
            ids.append(f"{topic}{k}")
            titles.append(f"{words} {topic}{k}")
        for k in range(COLD_PER_TOPIC):          # in the catalogue, never in the log
            ids.append(f"{topic}_cold{k}")
            titles.append(f"{words} {topic}new{k}")
    users, items = [], []
    for u in range(N_USERS):
        topic = "jazz" if u % 2 == 0 else "rock"
        for k in rng.permutation(WARM_PER_TOPIC)[: rng.integers(6, 9)]:
            users.append(f"u{u:02d}")
            items.append(f"{topic}{k}")
    split = leave_one_out(Dataset(make_interactions(users, items), make_catalogue(ids, titles), "topics"))
    split.train.item_vectors = encode_catalogue(split.train.catalogue, HashingEncoder())
    return split


@pytest.fixture(scope="module")
def cycle():
    return cycle_split()


@pytest.fixture(scope="module")
def fitted(cycle):
    """fitted(name) -> (model, what fit returned); each model is fitted once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            model = MODELS[name]()
            cache[name] = (model, model.fit(cycle.train, cycle.valid))
        return cache[name]

    return get


def raw_history(split, u):
    return set(split.train.item_ids[split.train.sequences[u]])


def raw_histories(split, users=None):
    """Raw-id training histories, one list per user (all users by default)."""
    users = range(split.train.n_users) if users is None else users
    return [list(split.train.item_ids[split.train.sequences[u]]) for u in users]


# -- the raw-id answers, for every model (tests/test_contract.py checks the rest of the contract) --
@pytest.mark.parametrize("name", list(MODELS))
def test_fit_returns_self(fitted, name):
    model, returned = fitted(name)
    assert returned is model
    assert isinstance(model, Recommender)


@pytest.mark.parametrize("name", list(MODELS))
def test_recommend_gives_k_ids_with_descending_scores(fitted, cycle, name):
    model, _ = fitted(name)
    hists = raw_histories(cycle)
    ids, scores = model.recommend_histories(hists, k=7)
    assert ids.shape == scores.shape == (len(hists), 7)
    catalogue = set(cycle.train.item_ids)
    full = model.score(hists, list(cycle.train.item_ids))   # the same batch (BPR: see test_contract)
    for row, h in enumerate(hists):
        assert set(ids[row]) <= catalogue
        assert len(set(ids[row])) == 7                      # no duplicates
        assert np.all(np.diff(scores[row]) <= 0)            # best first
        assert np.all(np.isfinite(scores[row]))
        # the returned scores are the model's own scores of those items
        np.testing.assert_allclose(scores[row], full[row, model.item_index(ids[row])], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_exclude_seen(fitted, cycle, name):
    model, _ = fitted(name)
    hists = raw_histories(cycle)
    ids, _ = model.recommend_histories(hists, k=10, exclude_seen=True)
    for u in range(len(hists)):
        assert not set(ids[u]) & raw_history(cycle, u), u
    # exactly the unseen items when k is their number
    for u in (0, 5):
        n_unseen = N_ITEMS - len(raw_history(cycle, u))
        ids, scores = model.recommend_history(hists[u], k=n_unseen, exclude_seen=True)
        assert set(ids) == set(cycle.train.item_ids) - raw_history(cycle, u)
        assert np.all(np.isfinite(scores))

    # exclude_seen=False: plain top-k of the raw scores, seen items included
    k = N_ITEMS - 5
    ids, scores = model.recommend_histories(hists, k=k, exclude_seen=False)
    raw = model.score(hists, list(cycle.train.item_ids))
    overlap = 0
    for u in range(len(hists)):
        assert np.all(np.isfinite(scores[u]))               # nothing was masked
        np.testing.assert_allclose(scores[u], np.sort(raw[u])[::-1][:k], rtol=1e-5, atol=1e-5)
        overlap += len(set(ids[u]) & raw_history(cycle, u))
    assert overlap > 0   # every history has > 5 items, so some seen items must be in a top-(n-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_score_agrees_with_score_histories(fitted, cycle, name):
    model, _ = fitted(name)
    rng = np.random.default_rng(3)
    users = rng.choice(N_USERS, size=6, replace=False)
    items = rng.permutation(N_ITEMS)[:15]
    full = model.score_histories([cycle.train.sequences[u] for u in users])
    assert full.shape == (len(users), N_ITEMS)
    assert full.dtype == np.float32
    got = model.score(raw_histories(cycle, users), cycle.train.item_ids[items])
    assert got.shape == (len(users), len(items))
    np.testing.assert_allclose(got, full[:, items], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["sasrec", "interest-id"])
def test_scoring_in_parts_matches_one_pass(fitted, cycle, name, monkeypatch):
    """score_histories / interest_vectors run the transformer INFERENCE_ROWS histories at a time:
    the parts, each padded to its own longest history, give the scores of one pass over all."""
    from migrec.models import sequential

    model, _ = fitted(name)
    hists = [cycle.train.sequences[u] for u in range(N_USERS)]
    monkeypatch.setattr(sequential.SequentialRecommender._newest_parts, "__defaults__", (N_USERS,))
    whole, vectors = model.score_histories(hists), model.interest_vectors(hists)
    monkeypatch.setattr(sequential.SequentialRecommender._newest_parts, "__defaults__", (3,))
    parts = model.score_histories(hists)
    assert parts.shape == whole.shape == (N_USERS, N_ITEMS)
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.interest_vectors(hists), vectors, rtol=1e-5, atol=1e-5)
    assert model.score_histories([]).shape == (0, N_ITEMS)


@pytest.mark.parametrize("name", list(MODELS))
def test_save_load_round_trip(fitted, cycle, tmp_path, name):
    model, _ = fitted(name)
    model.save(tmp_path / name)
    loaded = load_model(tmp_path / name)
    assert type(loaded) is type(model)
    assert loaded.get_params() == model.get_params()
    hists, items = raw_histories(cycle), list(cycle.train.item_ids)
    np.testing.assert_allclose(loaded.score(hists, items), model.score(hists, items), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(loaded.recommend_histories(hists, k=5)[0], model.recommend_histories(hists, k=5)[0])
    assert type(model).load(tmp_path / name).get_params() == model.get_params()   # via its own class too


def test_load_refuses_another_class(fitted, tmp_path):
    model, _ = fitted("popularity")
    model.save(tmp_path / "pop")
    with pytest.raises(ArtifactError, match="not a SASRec"):
        SASRec.load(tmp_path / "pop")


@pytest.mark.parametrize("name", list(MODELS))
def test_a_new_event_changes_the_answer_not_the_model(fitted, cycle, name):
    """The caller's Histories grows; the model scores the longer history and stays as it was."""
    model, _ = fitted(name)
    hist = Histories.from_sequences(cycle.train.user_ids, cycle.train.item_ids, cycle.train.sequences)
    u = 5
    user = cycle.train.user_ids[u]
    history = cycle.train.sequences[u]
    nxt = cycle.train.item_ids[(history[-1] + 1) % N_ITEMS]
    before = model.score([hist[user]], list(cycle.train.item_ids))[0]
    hist.append(user, [nxt])
    assert hist[user][-1] == nxt and len(hist[user]) == len(history) + 1
    after = model.score([hist[user]], list(cycle.train.item_ids))[0]
    np.testing.assert_allclose(after, model.score_histories([np.append(history, model.item_index(nxt))])[0],
                               rtol=1e-5, atol=1e-5)
    assert nxt not in model.recommend_history(hist[user], k=10)[0]
    if name != "popularity":
        assert np.abs(after - before).max() > 1e-4
    if name in ("als", "bpr"):
        # any change of history moves a folded-in vector, so "the scores changed" proves little here:
        # the new answer must be the fold-in of exactly the longer history (and the old one must not be)
        longer = np.append(history, model.item_index(nxt))
        u_before, u_after = model.user_vectors([history])[0], model.user_vectors([longer])[0]
        if name == "als":
            np.testing.assert_allclose(u_after, als_fold_in(model, longer), rtol=1e-3, atol=1e-4)
            assert np.abs(u_before - als_fold_in(model, longer)).max() > 1e-2
        else:
            assert np.linalg.norm(bpr_gradient(model, u_after, longer)) < 1e-5
            assert np.linalg.norm(bpr_gradient(model, u_before, longer)) > 1e-3
            assert bpr_objective(model, u_after, longer) < bpr_objective(model, u_before, longer)
    np.testing.assert_allclose(model.score([list(cycle.train.item_ids[history])], list(cycle.train.item_ids))[0],
                               before, rtol=1e-6, atol=1e-6)   # the old history still scores as before


def als_fold_in(model, history) -> np.ndarray:
    """ALS's user step by brute force: the weighted least-squares user vector (confidence alpha on the
    history's items, 1 elsewhere; preference 1 on the history) with ridge `regularization`, via lstsq."""
    y = model.item_factors_.astype(np.float64)
    seen = np.zeros(len(y), dtype=bool)
    seen[np.asarray(history, dtype=np.int64)] = True
    w = np.sqrt(np.where(seen, model.alpha, 1.0))
    a = np.vstack([w[:, None] * y, np.sqrt(model.regularization) * np.eye(y.shape[1])])
    b = np.concatenate([w * seen, np.zeros(y.shape[1])])
    return np.linalg.lstsq(a, b, rcond=None)[0]


def bpr_objective(model, u, history) -> float:
    """BPR's objective for one history with the item factors fixed (numpy, written out): the mean over
    (history item i, fold-in negative j not in the history) of -log sigmoid(x_ui - x_uj), + reg/2 |u|^2;
    the last item-factor column is the item bias (the user's constant 1)."""
    y = model.item_factors_.astype(np.float64)
    f = y.shape[1] - 1
    u = np.asarray(u, dtype=np.float64)[:f]
    h = np.unique(history)
    neg = model.fold_negatives_
    x = (y[h, :f] @ u + y[h, f])[:, None] - (y[neg, :f] @ u + y[neg, f])[None, :]
    pairs = np.broadcast_to(~np.isin(neg, h)[None, :], x.shape)
    return float((np.logaddexp(0.0, -x) * pairs).sum() / pairs.sum() + 0.5 * model.regularization * u @ u)


def bpr_gradient(model, u, history, eps=1e-6) -> np.ndarray:
    f = model.item_factors_.shape[1] - 1
    u = np.asarray(u, dtype=np.float64)[:f]
    return np.array([(bpr_objective(model, u + eps * e, history) - bpr_objective(model, u - eps * e, history))
                     / (2 * eps) for e in np.eye(f)])


def test_unknown_user_and_unfitted_model(fitted):
    model, _ = fitted("popularity")
    hist = Histories.from_sequences(["u00"], ["i00"], [np.array([0])])
    with pytest.raises(KeyError, match="nobody"):
        hist["nobody"]
    ids, _ = model.recommend_history(hist.get("nobody"), k=3)   # an unknown user is an empty history
    assert len(ids) == 3
    with pytest.raises(KeyError, match="no-such-item"):
        model.score([["i00"]], ["no-such-item"])
    with pytest.raises(RuntimeError, match="not fitted"):
        SASRec(**SMALL).recommend_history(["i00"])


def test_als_user_step_matches_implicit(fitted, cycle):
    """ALS folds the user factors in from a history; implicit's exact solver must agree."""
    from implicit.cpu.als import AlternatingLeastSquares

    model, _ = fitted("als")
    reference = AlternatingLeastSquares(factors=model.factors, regularization=model.regularization, alpha=1.0)
    reference.item_factors = model.item_factors_.copy()
    csr = cycle.train.csr(binary=True)
    for u in (0, 7, 20):
        ours = model.user_vectors([cycle.train.sequences[u]])[0]
        theirs = reference.recalculate_user(u, csr[u] * model.alpha)
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4)


def test_bpr_fold_in_matches_implicits_user_factors(cycle):
    """BPR keeps no user factors: a training user's own history, folded in, scores the items
    as implicit's fitted user factor does (same seed -> the same item factors)."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from scipy.stats import pearsonr, spearmanr

    model = BPR(factors=8, iterations=100, threads=1).fit(cycle.train)
    reference = BayesianPersonalizedRanking(factors=8, learning_rate=model.learning_rate,
                                            regularization=model.regularization, iterations=100, num_threads=1,
                                            random_state=model.seed)
    reference.fit(cycle.train.csr(binary=True), show_progress=False)
    np.testing.assert_allclose(model.item_factors_, reference.item_factors, rtol=1e-6, atol=1e-6)
    ours = model.score_histories(list(cycle.train.sequences))
    theirs = reference.user_factors @ reference.item_factors.T
    spearman = np.mean([spearmanr(a, b)[0] for a, b in zip(ours, theirs)])
    pearson = np.mean([pearsonr(a, b)[0] for a, b in zip(ours, theirs)])
    top10 = np.mean([len(set(np.argsort(-a)[:10]) & set(np.argsort(-b)[:10])) / 10 for a, b in zip(ours, theirs)])
    # measured: spearman 0.97, pearson 0.99, top-10 overlap 0.98
    assert spearman > 0.9 and pearson > 0.95 and top10 > 0.85, (spearman, pearson, top10)
    # ... and it is the user's own vector that matches, not any vector
    other = np.mean([spearmanr(a, b)[0] for a, b in zip(ours, np.roll(theirs, 7, axis=0))])
    assert other < spearman - 0.3, (other, spearman)


def test_itemknn_scores_are_sums_of_neighbour_similarities(fitted, cycle):
    model, _ = fitted("itemknn")
    sim = model.similarity_.toarray()
    assert np.all(np.diag(sim) == 0)                        # no self-similarity
    assert (sim > 0).sum(1).max() <= 20                     # at most `neighbors` per item
    h = cycle.train.sequences[3]
    expected = sim[np.unique(h)].sum(0)
    np.testing.assert_allclose(model.score_histories([np.concatenate([h, h])])[0], expected,
                               rtol=1e-5, atol=1e-6)        # a repeated item counts once


# -- a learnable pattern is learnt -----------------------------------------------------------
def hr10(model, split, which):
    return evaluate(model, getattr(split, which), split.train, ks=(10,), beyond=False, segments=False).metrics


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_sequential_pattern_is_learnt(fitted, cycle, name):
    pop = hr10(fitted("popularity")[0], cycle, "test")["HR@10"]
    assert pop < 0.5
    model, _ = fitted(name)
    for which in ("valid", "test"):
        m = hr10(model, cycle, which)
        assert m["HR@10"] >= max(0.9, pop + 0.4), (which, m, pop)
        assert m["NDCG@10"] >= 0.7, (which, m)


# -- early stopping --------------------------------------------------------------------------
def test_early_stopping_with_patience_one(cycle):
    epochs = 40
    model = SASRec(epochs=epochs, patience=1, **SMALL).fit(cycle.train, cycle.valid)
    curve = [r["valid_NDCG@10"] for r in model.history_]
    assert len(curve) == len(model.history_) < epochs          # stopped early
    assert [r["epoch"] for r in model.history_] == list(range(1, len(curve) + 1))
    assert model.best_valid_ndcg_ == max(curve)
    # patience=1: every epoch but the last improved, the last one did not
    assert all(b > a for a, b in zip(curve[:-2], curve[1:-1]))
    assert curve[-1] <= max(curve[:-1])
    # the best weights are the ones kept: the same as a run that simply stops at the best epoch
    # (training is deterministic on CPU, and validation draws no random numbers)
    assert hr10(model, cycle, "valid")["NDCG@10"] == pytest.approx(model.best_valid_ndcg_, abs=1e-6)
    best_epoch = int(np.argmax(curve)) + 1
    assert best_epoch < len(curve)
    short = SASRec(epochs=best_epoch, patience=1, **SMALL).fit(cycle.train)
    hists, items = raw_histories(cycle), list(cycle.train.item_ids)
    np.testing.assert_allclose(model.score(hists, items), short.score(hists, items), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_history_records_validation(fitted, name):
    model, _ = fitted(name)
    curve = [r["valid_NDCG@10"] for r in model.history_]
    assert len(curve) == len(model.history_) > 0
    assert model.best_valid_ndcg_ == max(curve)
    assert all(np.isfinite(r["loss"]) for r in model.history_)


def test_no_valid_means_no_early_stopping_and_eval_every(cycle):
    model = SASRec(epochs=3, patience=1, **SMALL).fit(cycle.train)
    assert len(model.history_) == 3
    assert all("valid_NDCG@10" not in r for r in model.history_)
    assert model.best_valid_ndcg_ == -1.0
    model = SASRec(epochs=4, patience=10, eval_every=2, **SMALL).fit(cycle.train, cycle.valid)
    assert ["valid_NDCG@10" in r for r in model.history_] == [False, True, False, True]


# -- text-only (cold) items ------------------------------------------------------------------
@pytest.fixture(scope="module")
def topics():
    return topic_split()


@pytest.fixture(scope="module")
def topic_models(topics):
    return {use_id: InterestModel(use_id=use_id, experts=2, epochs=10, **SMALL).fit(topics.train)
            for use_id in (False, True)}


def topic_users(topic):
    return [f"u{u:02d}" for u in range(0 if topic == "jazz" else 1, N_USERS, 2)]


@pytest.fixture(scope="module")
def topic_hists(topics):
    """topic -> the raw-id training histories of that topic's fans."""
    h = Histories.from_sequences(topics.train.user_ids, topics.train.item_ids, topics.train.sequences)
    return {topic: [list(h[u]) for u in topic_users(topic)] for topic in TOPIC_WORDS}


def item_rows(model):
    """(item table, the same table from the text adapter alone); row i+1 is item index i."""
    module = model.net_["item_table"]
    with torch.no_grad():
        return module(), module.adapter(module.text)


def test_cold_items_really_have_no_training_events(topics):
    counts = topics.train.item_counts()
    for topic in TOPIC_WORDS:
        for k in range(COLD_PER_TOPIC):
            assert counts[list(topics.train.item_ids).index(f"{topic}_cold{k}")] == 0


@pytest.mark.parametrize("use_id", [False, True])
def test_cold_item_is_scored_from_text_and_recommended(topic_models, topic_hists, use_id):
    model = topic_models[use_id]
    jazz, rock = topic_hists["jazz"], topic_hists["rock"]
    cold = "jazz_cold0"
    c = model.item_index(cold)
    assert model.seen_[c] == 0
    warm = model.item_index("jazz0")
    assert model.seen_[warm] == 1
    # its table row is the adapter's text vector alone: the ID part is zero
    table, text_only = item_rows(model)
    torch.testing.assert_close(table[c + 1], text_only[c + 1], rtol=1e-6, atol=1e-6)
    if use_id:   # ... whereas a warm item's row carries a learnt ID embedding
        assert not torch.allclose(table[warm + 1], text_only[warm + 1], atol=1e-3)

    scores = model.score(jazz + rock, [cold])[:, 0]
    assert np.all(np.isfinite(scores))
    assert scores[: len(jazz)].mean() > scores[len(jazz):].mean()     # jazz fans like it more
    # for jazz fans it beats every rock item, and it is recommended to them
    everything = model.score(jazz, list(model.item_ids_))
    rock_items = [model.item_index(i) for i in model.item_ids_ if i.startswith("rock")]
    assert np.mean(everything[:, c] > everything[:, rock_items].max(1)) >= 0.8
    ids, _ = model.recommend_histories(jazz, k=10)
    hits = np.mean([cold in row for row in ids])
    assert hits >= 0.8, hits


@pytest.mark.parametrize("use_id", [False, True])
def test_add_items_after_training(topic_models, topic_hists, tmp_path, use_id):
    model = topic_models[use_id].clone()
    jazz = topic_hists["jazz"]
    all_items = list(model.item_ids_)
    before = model.score(jazz, all_items)
    n = len(all_items)

    vector = HashingEncoder().encode([f"{TOPIC_WORDS['jazz']} brandnew"])
    model.add_items(["jazz_added"], vector)
    assert len(model.item_ids_) == n + 1 and model.item_ids_[-1] == "jazz_added"
    assert model.item_index("jazz_added") == n
    assert model.seen_[-1] == 0
    table, text_only = item_rows(model)
    torch.testing.assert_close(table[n + 1], text_only[n + 1], rtol=1e-6, atol=1e-6)   # no ID part
    full = model.score_histories([model.item_index(jazz[0]), model.item_index(jazz[1])])
    assert full.shape == (2, n + 1)
    # the learnt weights are untouched: old items keep their scores
    np.testing.assert_allclose(model.score(jazz, all_items), before, rtol=1e-5, atol=1e-5)
    new = model.score(jazz, ["jazz_added"])[:, 0]
    assert np.all(np.isfinite(new))
    ids, _ = model.recommend_histories(jazz, k=10)
    assert np.mean(["jazz_added" in row for row in ids]) >= 0.8
    assert topic_models[use_id].n_items == n                    # the clone grew, the original did not

    with pytest.raises(ValueError, match="already known"):
        model.add_items(["jazz0"], vector)
    with pytest.raises(ValueError, match="already known"):
        model.add_items(["jazz_added"], vector)
    assert len(model.item_ids_) == n + 1                        # a refused add changes nothing

    model.save(tmp_path / "grown")                              # the grown model saves and loads
    loaded = load_model(tmp_path / "grown")
    items = all_items + ["jazz_added"]
    np.testing.assert_allclose(loaded.score(jazz, items), model.score(jazz, items), rtol=1e-6, atol=1e-6)
    loaded.add_items(["jazz_added2"], vector)                   # and can grow again after loading
    assert loaded.item_index("jazz_added2") == n + 1
    np.testing.assert_allclose(loaded.score(jazz, ["jazz_added2"]), loaded.score(jazz, ["jazz_added"]),
                               rtol=1e-5, atol=1e-5)            # same text, same score


def test_cold_neighbours_borrow_the_id_part_of_the_nearest_seen_items(topic_models, topic_hists, tmp_path):
    base = topic_models[True]
    k = WARM_PER_TOPIC                      # the hashed titles of a topic tie: take all of them
    model = base.clone().set_params(cold_neighbours=k)
    table, text_only = item_rows(model)
    plain, _ = item_rows(base)
    module = model.net_["item_table"]
    seen = model.seen_ > 0
    np.testing.assert_array_equal(table[1:][seen].numpy(), plain[1:][seen].numpy())   # seen rows untouched
    # a cold row = its text row + the cosine-weighted mean ID part of its k nearest seen items by text
    unit = torch.nn.functional.normalize(module.text[1:], dim=-1).numpy()
    ids = module.ids.weight[1:].detach().numpy()
    for cold in ("jazz_cold0", "rock_cold1"):
        c = int(model.item_index([cold])[0])
        sim = np.where(seen, unit @ unit[c], -np.inf)
        near = np.argsort(-sim)[:k]
        assert sim[near[-1]] > np.sort(sim)[-k - 1]            # no tie at the cut: the neighbours are defined
        assert all(model.item_ids_[j].startswith(cold[:4]) for j in near)   # its own topic's items
        w = np.clip(sim[near], 0, None) / np.clip(sim[near], 0, None).sum()
        np.testing.assert_allclose(table[c + 1].numpy(), text_only[c + 1].numpy() + w @ ids[near],
                                   rtol=1e-5, atol=1e-6)
    # the borrowed part carries what the known jazz items learnt: jazz fans' score of the cold jazz
    # item rises, and more than rock fans' does
    jazz, rock = topic_hists["jazz"], topic_hists["rock"]
    rise = {fans: float(np.mean(model.score(h, ["jazz_cold0"]) - base.score(h, ["jazz_cold0"])))
            for fans, h in (("jazz", jazz), ("rock", rock))}
    assert rise["jazz"] > 0 and rise["jazz"] > rise["rock"], rise
    # inference only: a training-mode pass leaves cold rows as text, and k=0 switches it off
    module.train()
    module.borrowed_ids = lambda *a, **k: pytest.fail("a training pass borrowed ID parts")
    with torch.no_grad():
        module(torch.arange(len(module.text)))
    del module.borrowed_ids
    module.eval()
    model.set_params(cold_neighbours=0)
    np.testing.assert_allclose(model.score(jazz, ["jazz_cold0"]), base.score(jazz, ["jazz_cold0"]), rtol=1e-6)
    model.set_params(cold_neighbours=k)
    grown = model.clone()                                  # an item added after training borrows at once
    grown.add_items(["jazz_added"], HashingEncoder().encode([f"{TOPIC_WORDS['jazz']} brandnew"]))
    rows, text_rows = item_rows(grown)
    n = int(grown.item_index(["jazz_added"])[0])
    assert (rows[n + 1] - text_rows[n + 1]).abs().max() > 1e-3
    model.save(tmp_path / "borrowed")                      # the setting is a saved hyper-parameter
    loaded = load_model(tmp_path / "borrowed")
    assert loaded.cold_neighbours == k
    np.testing.assert_allclose(loaded.score(jazz, ["jazz_cold0"]), model.score(jazz, ["jazz_cold0"]), rtol=1e-5)


def test_cold_neighbours_stay_within_the_items_domain():
    from migrec.models.interest import TextItemTable

    torch.manual_seed(0)
    text = np.array([[1.0, 0.0, 0.0],     # 0: seen, domain 0
                     [0.9, 0.1, 0.0],     # 1: seen, domain 1, nearer to item 3 than item 0 is
                     [0.0, 1.0, 0.0],     # 2: seen, domain 0
                     [0.88, 0.12, 0.0]],  # 3: unseen, domain 0
                    dtype=np.float32)
    table = TextItemTable(text, np.array([1, 1, 1, 0], np.float32), hidden=4, experts=1, dropout=0.0,
                          use_id=True, domains=np.array([0, 1, 0, 0]), n_domains=2, cold_neighbours=1).eval()
    with torch.no_grad():
        borrowed = table.borrowed_ids(torch.arange(5))
    torch.testing.assert_close(borrowed[4], table.ids.weight[1])     # item 0 (same domain), not item 1
    assert torch.count_nonzero(borrowed[:4]) == 0                      # padding and seen rows borrow nothing
    table.domain_adapter = None                                        # without domains: the nearest of all
    table.forget_neighbours()
    with torch.no_grad():
        torch.testing.assert_close(table.borrowed_ids(torch.tensor([4]))[0], table.ids.weight[2])


def _two_domain_table(**kw):
    """A 6-item, 2-domain item table whose domain (and ID) parts are random, as if trained; and its
    rows from the shared adapter alone."""
    from migrec.models.interest import TextItemTable

    torch.manual_seed(0)
    text = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    table = TextItemTable(text, np.ones(6, np.float32), hidden=4, experts=2, dropout=0.0,
                          domains=np.array([0, 0, 0, 1, 1, 1]), n_domains=2, **kw)
    with torch.no_grad():
        table.domain_adapter.normal_()
        table.domain_embedding.normal_()
        if table.ids is not None:
            table.ids.weight.normal_()
        shared = table.adapter(table.text) * (torch.arange(7) > 0)[:, None]
    return table, shared


def test_domain_dropout_drops_the_domain_parts_of_whole_training_batches():
    table, shared = _two_domain_table(use_id=False, domain_dropout=1.0)
    with torch.no_grad():
        table.train()
        torch.testing.assert_close(table(), shared)    # rate 1: a training batch is the shared adapter alone
        table.eval()
        assert (table() - shared).abs().max() > 0.1    # inference always has the domain parts
        table.train()
        table.domain_dropout = 0.5                     # rate 0.5: whole batches with or without them
        kinds = [bool(torch.allclose(table(), shared)) for _ in range(200)]
    assert 60 < sum(kinds) < 140, sum(kinds)


def test_as_new_domain_scores_every_item_by_the_shared_adapter_alone_at_inference():
    table, shared = _two_domain_table(use_id=True, cold_neighbours=2)
    with torch.no_grad():
        table.eval()
        full = table()
        assert (full - shared).abs().max() > 0.1
        table.as_new_domain = True
        torch.testing.assert_close(table(), shared)    # no domain, ID or borrowed parts
        table.train()
        torch.testing.assert_close(table(), full)      # training ignores it


# -- explain ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", INTEREST)
@pytest.mark.parametrize("u", [0, 10])    # user 0 has more than max_len events, user 10 fewer
def test_explain_is_complete_and_faithful(fitted, cycle, name, u):
    model, _ = fitted(name)
    raw = raw_histories(cycle, [u])[0]
    item = model.recommend_history(raw, k=1)[0][0]
    frame = model.explain(raw, item, steps=256, catalogue=cycle.train.catalogue)
    history = cycle.train.sequences[u][-model.max_len:]
    assert len(frame) == min(len(cycle.train.sequences[u]), model.max_len)
    if u < N_LONG:
        assert len(frame) == model.max_len
    by_pos = frame.sort_values("position")
    assert by_pos["position"].tolist() == list(range(-len(history), 0))
    assert by_pos["item_id"].tolist() == list(cycle.train.item_ids[history])
    titles = dict(zip(cycle.train.catalogue["item_id"], cycle.train.catalogue["title"]))
    assert by_pos["title"].tolist() == [titles[i] for i in by_pos["item_id"]]
    assert np.all(np.diff(frame["attribution"].abs().to_numpy()) <= 0)    # largest effect first

    score, baseline = frame.attrs["score"], frame.attrs["baseline_score"]
    assert frame.attrs["item_id"] == item and "user_id" not in frame.attrs
    assert score == pytest.approx(float(model.score([raw], [item])[0, 0]), abs=1e-4)
    gap = score - baseline
    assert abs(gap) > 1e-3
    assert abs(frame["attribution"].sum() - gap) <= 0.02 * abs(gap)


def test_explain_default_steps_are_complete(fitted, cycle):
    # the midpoint rule keeps the default 64 steps within 2 % of completeness
    model, _ = fitted("interest-id")
    raw = raw_histories(cycle, [0])[0]
    item = model.recommend_history(raw, k=1)[0][0]
    frame = model.explain(raw, item)
    gap = frame.attrs["score"] - frame.attrs["baseline_score"]
    assert abs(frame["attribution"].sum() - gap) <= 0.02 * abs(gap)


def test_explain_bad_input_is_named(fitted, cycle):
    model, _ = fitted("interest-id")
    raw = raw_histories(cycle, [3])[0]
    with pytest.raises(KeyError, match="no-such-item"):
        model.explain(raw + ["no-such-item"], cycle.train.item_ids[0])
    with pytest.raises(KeyError, match="no-such-target"):
        model.explain(raw, "no-such-target")
    with pytest.raises(ValueError, match="empty"):
        model.explain([], cycle.train.item_ids[0])
    dropped = model.explain(raw + ["no-such-item"], cycle.train.item_ids[0], unknown="drop")
    assert len(dropped) == min(len(raw), model.max_len)


# -- input checks ----------------------------------------------------------------------------
def test_interest_model_needs_item_vectors(cycle):
    bare = dataclasses.replace(cycle.train, item_vectors=None)
    with pytest.raises(ValueError, match="encode_catalogue"):
        InterestModel(epochs=1, **SMALL).fit(bare)
    short = dataclasses.replace(cycle.train, item_vectors=cycle.train.item_vectors[:-1])
    with pytest.raises(ValueError, match="rows"):
        InterestModel(epochs=1, **SMALL).fit(short)


# -- training options: what trains, over which items, for how long -------------------------------
def table_rows(model) -> np.ndarray:
    return model.net_["item_table"].embedding.weight.detach().numpy().copy()


@pytest.mark.parametrize("negatives", [None, 4])
def test_softmax_over_seen_never_trains_against_unseen_items(topics, negatives):
    """SASRec's ID rows of items with no training event (the cold items): under softmax_over="seen"
    they are never negatives (full or sampled softmax), so no gradient reaches them; under "all"
    they are negatives and move."""
    cold = np.flatnonzero(topics.train.item_counts() == 0) + 1          # table rows (row 0 = padding)
    assert len(cold) == 2 * COLD_PER_TOPIC
    init = table_rows(SASRec(epochs=0, **SMALL).fit(topics.train))     # same seed: the same initial table
    moved = {}
    for over in ("seen", "all"):
        rows = table_rows(SASRec(epochs=3, patience=3, softmax_over=over, negatives=negatives,
                                 **SMALL).fit(topics.train))
        moved[over] = np.abs(rows[cold] - init[cold]).max()
        warm = np.setdiff1d(np.arange(1, len(rows)), cold)
        assert np.abs(rows[warm] - init[warm]).max() > 0.01, over        # the trained items did move
    assert moved["seen"] == 0.0 and moved["all"] > 0.01, moved
    with pytest.raises(ValueError, match="softmax_over"):
        SASRec(softmax_over="sometimes", **SMALL).fit(topics.train)


@pytest.mark.parametrize("normalize", [False, True])
def test_the_sampled_softmax_loss_is_cross_entropy_over_its_candidates(topics, normalize):
    """negatives=N: the loss (fused, never holding the [targets x candidates] logits) and its
    gradients equal plain cross-entropy over the model's similarity to the batch's candidates."""
    from migrec.models.training import SequenceTrainer, WindowArray, training_windows

    model = InterestModel(use_id=True, experts=2, epochs=1, negatives=6, normalize=normalize, temperature=0.2,
                          **SMALL).fit(topics.train)
    trainer = SequenceTrainer(model)
    trainer._softmax_items(topics.train.item_counts() > 0)
    batch = torch.from_numpy(WindowArray(training_windows(topics.train.sequences, model.max_len)).cut(np.arange(8)))
    seq, target = batch[:, :-1], batch[:, 1:]
    keep = target > 0
    drawn = trainer.pool[:6]
    params = [p for p in model.net_.parameters() if p.requires_grad]
    model.net_.eval()                                 # no dropout: both passes see the same network
    fused = trainer._step()(batch, None, drawn)
    queries, candidates, labels = trainer._sampled(seq, target[keep], keep, drawn)
    plain = torch.nn.functional.cross_entropy(model.similarity(queries, candidates), labels, reduction="sum")
    assert float(fused.detach()) == pytest.approx(float(plain.detach()), rel=1e-5)
    for a, b in zip(torch.autograd.grad(fused, params), torch.autograd.grad(plain, params)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["sasrec", "interest-id"])
def test_fine_tune_items_changes_only_item_parameters(fitted, cycle, name):
    model = fitted(name)[0].clone().set_params(epochs=2, patience=2)
    before = {k: v.detach().clone() for k, v in model.net_.named_parameters()}
    model.fine_tune(cycle.train, trainable="items")
    after = dict(model.net_.named_parameters())
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed and all(k.startswith("item_table.") for k in changed), sorted(changed)
    assert any(k.startswith("transformer.") for k in before)                # the frozen part exists
    with pytest.raises(ValueError, match="trainable must be one of .* not 'everything'"):
        model.fine_tune(cycle.train, trainable="everything")


def test_a_tiny_time_budget_stops_fine_tuning_and_is_recorded(fitted, cycle):
    model = fitted("interest-id")[0].clone().set_params(epochs=50, patience=50, max_train_seconds=1e-9)
    model.fine_tune(cycle.train, cycle.valid)
    assert len(model.history_) == 1 and model.training_["epochs_run"] == 1
    assert model.training_["stopped_by"] == "max_train_seconds"
    model.set_params(max_train_seconds=None, epochs=2).fine_tune(cycle.train, cycle.valid)
    assert model.training_["stopped_by"] == "epochs" and model.training_["epochs_run"] == 2


def test_lr_decay_lowers_the_rate_after_each_epoch_without_a_new_best(fitted, cycle):
    model = fitted("interest-id")[0].clone().set_params(epochs=6, patience=6, lr=1e-3, lr_decay=0.5)
    model.fine_tune(cycle.train, cycle.valid)
    rates = [r["lr"] for r in model.history_]
    expected, best = [1e-3], -1.0
    for record in model.history_[:-1]:
        improved = record["valid_NDCG@10"] > best
        best = max(best, record["valid_NDCG@10"])
        expected.append(expected[-1] * (1.0 if improved else 0.5))
    assert rates == pytest.approx(expected)
    assert min(rates) < 1e-3              # the fitted model plateaus: at least one decay happened
    model.set_params(lr_decay=None).fine_tune(cycle.train, cycle.valid)
    assert {r["lr"] for r in model.history_} == {1e-3}
    with pytest.raises(ValueError, match="lr_decay must be None or a factor in \\(0, 1\\), not 1.5"):
        model.set_params(lr_decay=1.5).fine_tune(cycle.train, cycle.valid)
    with pytest.raises(ValueError, match="lr_decay must be None or a factor in \\(0, 1\\), not 'half'"):
        model.set_params(lr_decay="half").fine_tune(cycle.train, cycle.valid)


@pytest.mark.parametrize("name", list(MODELS))
def test_set_params_names_an_unknown_parameter_and_changes_nothing(name):
    model = MODELS[name]()
    params = model.get_params()
    change = {next(iter(params)): "changed?"} if params else {}      # Popularity has no hyper-parameter
    with pytest.raises(ValueError, match=r"no hyper-parameter 'no_such_param'") as err:
        model.set_params(**change, no_such_param=1)
    assert all(k in str(err.value) for k in params)  # the message lists what the model does have
    assert model.get_params() == params              # nothing half-applied


def test_window_heads_see_only_the_newest_events_and_the_global_heads_everything(monkeypatch):
    from migrec.models import transformer
    from migrec.models.transformer import CausalTransformer

    torch.manual_seed(0)
    x = torch.randn(2, 12, 16)
    local = CausalTransformer(16, 1, 1, 0.0, 20, window=3).eval()    # one head: it is the local one
    out = local(x)
    old = x.clone()
    old[:, :9] = torch.randn(2, 9, 16)                                # everything 3+ events before the last
    assert torch.allclose(out[:, -1], local(old)[:, -1], atol=1e-5)  # the newest position never reads them
    near = x.clone()
    near[:, 9] = torch.randn(2, 16)                                   # 2 events back: inside the window
    assert not torch.allclose(out[:, -1], local(near)[:, -1], atol=1e-4)
    mixed = CausalTransformer(16, 1, 2, 0.0, 20, window=3).eval()    # one local head, one global head
    assert not torch.allclose(mixed(x)[:, -1], mixed(old)[:, -1], atol=1e-4)
    later = x.clone()
    later[:, 6:] = torch.randn(2, 6, 16)
    assert torch.allclose(mixed(x)[:, :6], mixed(later)[:, :6], atol=1e-5)     # still causal
    assert torch.allclose(mixed(x)[:, :6], mixed(x[:, :6]), atol=1e-5)         # right padding's width is free
    # training's written-out attention (taken when dropout > 0) applies the same mask as SDPA's
    both = CausalTransformer(16, 2, 2, 0.3, 20, recency=True, window=4)
    expect = both.eval()(x)
    monkeypatch.setattr(transformer, "dropout", lambda t, p, training: t)
    assert torch.allclose(both.train()(x), expect, atol=1e-5)
    with pytest.raises(ValueError, match="window"):
        CausalTransformer(16, 1, 2, 0.0, 20, window=-1)


def test_recency_attention_is_causal_width_free_and_learns_its_slopes():
    from migrec.models.transformer import CausalTransformer

    torch.manual_seed(0)
    net = CausalTransformer(16, 2, 2, 0.0, 20, recency=True)
    start = torch.nn.functional.softplus(net.slope).detach()
    assert torch.allclose(start, torch.tensor([2.0 ** -4, 2.0 ** -8]))        # ALiBi's slopes for 2 heads
    x = torch.randn(3, 10, 16)
    net.eval()
    full = net(x)
    later = x.clone()
    later[:, 6:] = torch.randn(3, 4, 16)
    assert torch.allclose(full[:, :6], net(later)[:, :6], atol=1e-5)         # no position reads a later one
    assert torch.allclose(full[:, :6], net(x[:, :6]), atol=1e-5)             # right padding's width is free
    plain = CausalTransformer(16, 2, 2, 0.0, 20)
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if k != "slope"})
    assert not torch.allclose(full, plain.eval()(x), atol=1e-4)              # the bias changes attention
    net.train()
    optimiser = torch.optim.SGD(net.parameters(), lr=0.5)
    loss = (net(x)[:, -1] * torch.randn(3, 16)).sum()
    loss.backward()
    optimiser.step()
    assert net.slope.grad is not None and not torch.allclose(torch.nn.functional.softplus(net.slope).detach(), start)
