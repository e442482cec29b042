"""The servable model contract, checked the same way for every model (sklearn's check_estimator in spirit).

Each entry of CONTRACT_MODELS names a model, a factory of the *unfitted* model, the tiny
synthetic data set it is fitted on (test_models' generators) and what it supports. Every
check below runs for every entry:

- hyper-parameters: get_params/set_params round trip, __init__ only stores, unknown name refused;
- fit returns self, fitted attributes end in `_` (runtime caches aside), no user data kept;
- save -> migrec.registry.load_model -> identical scores;
- score_histories is read-only (attributes, arrays, sparse matrices, network weights);
- the history alone decides a row (same history in any batch / position -> same row);
- seen items, `exclude=` and `candidates=` filters; unknown items (KeyError naming them / "drop");
- an empty history is scored;
- clone() is independent of the original (in-place changes, set_params, updates).

A wrapper model (DomainView, MappedUsers, EMCDRMF, AdaptiveBlend) joins by appending a
`Case` to CONTRACT_MODELS in the marked place at the end of the list.
"""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from test_models import SMALL, cycle_split, topic_split

from migrec.data import Histories
from migrec.data.schema import Dataset, make_catalogue, make_interactions
from migrec.data.split import leave_one_out
from migrec.drift.adaptation import AdaptiveBlend
from migrec.drift.detection import MigrationDetector
from migrec.transfer.domains import DomainView, restrict
from migrec.transfer.emcdr import EMCDRMF
from migrec.transfer.mix import ValidatedMix
from migrec.transfer.regimes import MappedUsers
from migrec.models.base import Recommender
from migrec.models.fresh_slot import FreshSlot
from migrec.models.interest import InterestModel
from migrec.models.itemknn import ItemKNN
from migrec.models.matrix_factorization import ALS, BPR
from migrec.models.multi_interest import MultiInterestModel
from migrec.models.popularity import Popularity
from migrec.models.sasrec import SASRec
from migrec.models.text_knn import TextNeighbours
from migrec.registry import ARTIFACTS, load_model

pytestmark = pytest.mark.usefixtures("torch_one_thread")

RUNTIME = {"_lookup", "_cache", "_unit", "_lock"}          # caches and locks a model may create while it serves
USER_STATE = ("histories_", "user_ids_", "_uindex", "user_factors_")   # what the old models kept


def domain_split(seed=2):
    """Two domains (a, b) of 4 topics x 5 items; users walk one topic in a, in b, or in both."""
    rng = np.random.default_rng(seed)
    users, items, domains = [], [], []
    for u in range(60):
        topic, kind = u % 4, ("a", "b", "ab")[u % 3]
        for d in kind:
            start = rng.integers(5)
            for j in range(6):
                users.append(f"u{u:02d}"), items.append(f"{d}{topic}-{(start + j) % 5}"), domains.append(d)
    ids = [f"{d}{t}-{k}" for d in "ab" for t in range(4) for k in range(5)]
    catalogue = make_catalogue(ids, [f"item {i}" for i in ids], domain=[i[0] for i in ids])
    split = leave_one_out(Dataset(make_interactions(users, items, domain=domains), catalogue, "domains"))
    vectors = np.zeros((40, 6), np.float32)
    vectors[np.arange(40), [int(i[1]) for i in ids]] = 1.0
    vectors[:20, 4], vectors[20:, 5] = 0.5, 0.5
    split.train.item_vectors = vectors + 0.05 * rng.standard_normal(vectors.shape).astype(np.float32)
    split.train.encoder = "synthetic-topics"
    return split


def _domain_mask(domain):
    return np.array([i.startswith(domain) for d in "ab" for i in [f"{d}{t}-{k}" for t in range(4) for k in range(5)]])


def _fit_mapped(model, split):
    model.source_model.fit(restrict(split.train, model.source_mask))
    model.target_model.fit(restrict(split.train, model.target_mask))
    return model.fit(split.train)


def _fit_mix(model, split):
    model.base.fit(split.train, split.valid)
    model.other.fit(split.train, split.valid)
    return model.fit(split.train, split.valid)


def _fit_slot(model, split):
    model.model.fit(split.train, split.valid)
    return model.fit(split.train, split.valid)


def _fit(model, split):
    return model.fit(split.train, split.valid)


def _ring_events(split):
    """New events for a new user and a known one: a short walk over known items."""
    items = list(split.train.item_ids)
    return pd.DataFrame({"user_id": ["newcomer"] * 4 + [str(split.train.user_ids[0])] * 2,
                         "item_id": items[3:7] + items[8:10],
                         "timestamp": [100.0, 101.0, 102.0, 103.0, 200.0, 201.0]})


def _partial_fit(model, split):
    """The update the clone test runs on a clone; models without one are refitted on other data."""
    return model.partial_fit(_ring_events(split), histories=Histories.from_sequences(
        split.train.user_ids, split.train.item_ids, split.train.sequences))


@dataclass
class Case:
    """One model under the contract. A wrapper gives its own `fit` (e.g. fit the inner model first),
    a data key of its own (add its generator to DATA), and `update` (run on a clone; a model without
    partial_fit passes update=None and is refitted on the other data set instead)."""
    name: str
    factory: Callable[[], Recommender]          # the unfitted model
    data: str                                   # key of DATA
    fit: Callable = _fit                        # fit(model, split) -> model
    history_matters: bool = True                # False: every history gets the same row (Popularity)
    update: Callable | None = _partial_fit      # update(model, split) on a clone; None: no partial_fit
    params_to_change: dict = field(default_factory=dict)   # a set_params call for the clone test
    known_bugs: dict = field(default_factory=dict)          # test name -> reason: strict xfail, to be fixed
    wraps: bool = False            # has models as hyper-parameters (fitted by its fit, as sklearn's Pipeline does)
    only_items: str | None = None  # scores only this domain's items (the others are -inf: not candidates)
    refit_data: str | None = None  # data key the clone test refits a model without partial_fit on


def cases(test: str) -> list:
    """The CONTRACT_MODELS names as parameters of `test`, a known bug marked xfail(strict=True)."""
    return [pytest.param(c.name, marks=pytest.mark.xfail(strict=True, reason=c.known_bugs[test]))
            if test in c.known_bugs else c.name for c in CONTRACT_MODELS]


SEQ = dict(SMALL, epochs=6, patience=6)

CONTRACT_MODELS: list[Case] = [
    Case("popularity", lambda: Popularity(), "cycle", history_matters=False),
    Case("itemknn", lambda: ItemKNN(neighbors=20), "cycle", update=None, params_to_change={"neighbors": 5}),
    Case("als", lambda: ALS(factors=8, iterations=5, threads=1), "cycle", params_to_change={"alpha": 3.0}),
    Case("bpr", lambda: BPR(factors=8, iterations=20, threads=1), "cycle", update=None,
         params_to_change={"regularization": 0.5}),
    Case("sasrec", lambda: SASRec(**SEQ), "cycle", params_to_change={"lr": 0.5}),
    Case("interest-text", lambda: InterestModel(use_id=False, experts=2, **SEQ), "topics",
         params_to_change={"lr": 0.5}),
    Case("interest-text+id", lambda: InterestModel(use_id=True, experts=2, **SEQ), "topics",
         params_to_change={"lr": 0.5}),
    Case("interest-text+id:alibi", lambda: InterestModel(use_id=True, experts=2, recency=True, **SEQ), "topics",
         params_to_change={"lr": 0.5}),
    Case("interest-text+id:window", lambda: InterestModel(use_id=True, experts=2, window=3, **SEQ), "topics",
         params_to_change={"window": 5}),
    Case("multi-interest", lambda: MultiInterestModel(n_interests=3, experts=2, **SEQ), "topics",
         params_to_change={"lr": 0.5}),
    Case("interest-text+id:lm-tuned", lambda: InterestModel(use_id=True, experts=2, text_layers=1, text_rows=8, **SEQ),
         "topics-minilm", params_to_change={"text_rows": 4}),
    Case("text-knn", lambda: TextNeighbours(last=3), "topics", params_to_change={"last": 1}),
    Case("multi-interest:mix-forecast", lambda: MultiInterestModel(n_interests=3, mode="mix", mix_weights="forecast",
                                                                   forecast_every=3, experts=2, **SEQ), "topics",
         params_to_change={"mix_weights": "current"}),
    # ---- wrappers: a model around other models; fitting one fits the models it wraps ----
    Case("domain-view", lambda: DomainView(InterestModel(use_id=True, domain_adapters=True, experts=2, **SEQ),
                                           _domain_mask("b")), "domains", wraps=True, update=None,
         refit_data="domains-2", params_to_change={"name": "b-only"}),
    Case("mapped-users", lambda: MappedUsers(
            InterestModel(use_id=True, domain_adapters=True, experts=2, **SEQ),
            InterestModel(use_id=True, domain_adapters=True, experts=2, **SEQ),
            _domain_mask("a"), _domain_mask("b")), "domains", fit=_fit_mapped, wraps=True, update=None,
         refit_data="domains-2",
         params_to_change={"mapping": "linear"}),
    Case("emcdr-mf", lambda: EMCDRMF("a", "b", factors=8, iterations=5, epochs=30, min_overlap=5, threads=1),
         "domains", update=None, params_to_change={"factors": 4}, only_items="b", refit_data="domains-2"),
    Case("validated-mix", lambda: ValidatedMix(ItemKNN(neighbors=10), ALS(factors=8, iterations=5, threads=1)),
         "topics", fit=_fit_mix, wraps=True, update=None, params_to_change={"grid": [0.0, 0.5]}),
    Case("fresh-slot", lambda: FreshSlot(ItemKNN(neighbors=10), position=3, items=np.arange(0, 24, 3)), "topics",
         fit=_fit_slot, wraps=True, update=None, params_to_change={"position": 5}),
    Case("adaptive-blend", lambda: AdaptiveBlend(ItemKNN(neighbors=10), short=2, recent=2, min_events=4,
                                                 detector=MigrationDetector(short=2, long=4, min_history=2),
                                                 tune=False, weight_min=0.2, weight_max=0.6),
         "topics", wraps=True, update=None, params_to_change={"short": 3}),
]
CASES = {c.name: c for c in CONTRACT_MODELS}
IDS = list(CASES)
TORCH_MODELS = ["sasrec", "interest-text", "interest-text+id", "interest-text+id:alibi", "interest-text+id:window",
                "interest-text+id:lm-tuned", "multi-interest", "multi-interest:mix-forecast"]


def minilm_topic_split():
    """topic_split with MiniLM vectors and the lower-layer states a top-layer fine-tuning needs."""
    from migrec.encoders import SentenceTransformerEncoder, encode_catalogue
    from migrec.encoders.tuning import encode_lower_states

    split = topic_split()
    encoder = SentenceTransformerEncoder(device="cpu", show_progress=False)
    split.train.item_vectors = encode_catalogue(split.train.catalogue, encoder)
    split.train.encoder = encoder.model_id
    split.train.item_states = encode_lower_states(split.train.catalogue, encoder, layers=1)
    return split

DATA = {"cycle": cycle_split, "topics": topic_split, "topics-minilm": minilm_topic_split, "domains": domain_split,
        "domains-2": lambda: domain_split(seed=3)}   # data key -> generator of a Split (add wrappers' data here)


@pytest.fixture(scope="module")
def splits():
    cache = {}

    def get(key):
        if key not in cache:
            cache[key] = DATA[key]()
        return cache[key]

    return get


@pytest.fixture(scope="module")
def fitted(splits):
    """fitted(name) -> (model, its split); each model is fitted once per module. Do not change it."""
    cache = {}

    def get(name):
        if name not in cache:
            case = CASES[name]
            split = splits(case.data)
            cache[name] = (case.fit(case.factory(), split), split)
        return cache[name]

    return get


def train_histories(split, users=None):
    """Raw-id histories of training users (all by default)."""
    users = range(split.train.n_users) if users is None else users
    return [list(split.train.item_ids[split.train.sequences[u]]) for u in users]


def index_histories(model, raw):
    return [model.item_index(h) for h in raw]


# -- fingerprints: what "unchanged" means ------------------------------------------------------
def fingerprint(value, depth=0):
    """A comparable snapshot of a value: arrays, sparse matrices and network weights copied."""
    if depth > 6:
        return repr(type(value))
    if isinstance(value, Recommender):
        return ("model", {k: fingerprint(v, depth + 1) for k, v in vars(value).items() if k not in RUNTIME})
    if isinstance(value, torch.nn.Module):
        return ("module", value.training, {k: v.detach().clone() for k, v in value.state_dict().items()})
    if isinstance(value, torch.Tensor):
        return ("tensor", value.detach().clone())
    if isinstance(value, np.ndarray):
        return ("array", value.copy())
    if sp.issparse(value):
        return ("sparse", value.copy())
    if isinstance(value, dict):
        return ("dict", {k: fingerprint(v, depth + 1) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [fingerprint(v, depth + 1) for v in value])
    if hasattr(value, "__dict__") and not isinstance(value, type):      # e.g. a MigrationDetector
        return (type(value).__name__, {k: fingerprint(v, depth + 1) for k, v in vars(value).items()})
    return ("value", copy.deepcopy(value))


def param_print(model):
    """Hyper-parameters, with a nested model standing for its type (fitting a wrapper fits it)."""
    return fingerprint({k: (type(v).__name__ if isinstance(v, Recommender) else v)
                        for k, v in model.get_params().items()})


def scorable(name, model) -> np.ndarray:
    """Items a model gives finite scores (EMCDRMF scores only its target domain)."""
    only = CASES[name].only_items
    return np.array([only is None or str(i).startswith(only) for i in model.item_ids_])


def assert_same(a, b, path="model"):
    assert type(a) is type(b), path
    if isinstance(a, torch.Tensor):
        assert a.shape == b.shape and torch.equal(a, b), f"{path} changed"
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path} changed shape/dtype"
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), f"{path} changed"
    elif sp.issparse(a):
        assert a.shape == b.shape and (a != b).nnz == 0, f"{path} changed"
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {sorted(a)} -> {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path} changed length"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), f"{path} changed"
    else:
        assert a == b, f"{path}: {a!r} -> {b!r}"


def all_scores(model, split):
    return model.score_histories(index_histories(model, train_histories(split)))


# -- hyper-parameters and fitting ----------------------------------------------------------------
@pytest.mark.parametrize("name", cases("test_init_only_stores_and_params_round_trip"))
def test_init_only_stores_and_params_round_trip(name):
    case = CASES[name]
    model = case.factory()
    params = model.get_params()
    assert set(vars(model)) <= set(params), f"__init__ set more than its arguments: {set(vars(model)) - set(params)}"
    assert not [k for k in vars(model) if k.endswith("_")], "fitted attributes before fit"
    again = type(model)(**params)
    assert_same(fingerprint(again.get_params()), fingerprint(params))
    assert model.set_params(**params) is model
    assert_same(fingerprint(model.get_params()), fingerprint(params))
    for key, value in case.params_to_change.items():
        assert params[key] != value
        model.set_params(**{key: value})
        assert model.get_params()[key] == value
    with pytest.raises(ValueError, match="no_such_param"):
        model.set_params(no_such_param=1)
    with pytest.raises(RuntimeError, match="not fitted"):
        model.recommend_history(["anything"])


@pytest.mark.parametrize("name", cases("test_fit_returns_self_and_fitted_attributes_end_in_underscore"))
def test_fit_returns_self_and_fitted_attributes_end_in_underscore(name, splits):
    case = CASES[name]
    split = splits(case.data)
    model = case.factory()
    before = set(vars(model))
    params = param_print(model)
    assert case.fit(model, split) is model
    added = set(vars(model)) - before - RUNTIME - {"name"}
    assert added and all(k.endswith("_") and not k.startswith("_") for k in added), sorted(added)
    assert_same(params, param_print(model), "params")          # fit changed no hyper-parameter
    assert not [k for k in USER_STATE if hasattr(model, k)], "the model keeps user data"
    for method in ("user_index", "observe", "use_histories", "recommend"):
        assert not hasattr(model, method), method
    assert list(model.item_ids_) == [str(i) for i in split.train.item_ids]
    counts = {"users": split.train.n_users, "items": split.train.n_items, "events": split.train.n_interactions,
              "items_with_events": int((split.train.item_counts() > 0).sum())}
    assert {k: model.training_.get(k) for k in counts} == counts
    # the sequential models add how their training ran, nothing else
    assert set(model.training_) - set(counts) <= {"precision", "stopped_by", "epochs_run", "train_seconds"}
    users = {str(u) for u in split.train.user_ids}
    text = repr({k: v for k, v in vars(model).items() if not isinstance(v, (np.ndarray, torch.nn.Module))})
    assert not [u for u in users if f"'{u}'" in text], "a user id is stored on the model"


@pytest.mark.parametrize("name", cases("test_save_load_model_gives_the_same_scores"))
def test_save_load_model_gives_the_same_scores(name, fitted, tmp_path):
    model, split = fitted(name)
    model.save(tmp_path / name)
    assert model.registry in ARTIFACTS and ARTIFACTS[model.registry] is type(model)
    loaded = load_model(tmp_path / name)
    assert type(loaded) is type(model)
    assert_same(param_print(model), param_print(loaded), "params")
    np.testing.assert_array_equal(loaded.item_ids_, model.item_ids_)
    hists = index_histories(model, train_histories(split)) + [np.zeros(0, np.int64)]
    np.testing.assert_allclose(loaded.score_histories(hists), model.score_histories(hists), rtol=0, atol=1e-5)
    assert_same(param_print(type(model).load(tmp_path / name)), param_print(loaded))   # via its own class too
    assert isinstance(load_model(tmp_path / name, expect=Recommender), type(model))


# -- read-only scoring ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", cases("test_scoring_is_read_only"))
def test_scoring_is_read_only(name, fitted):
    model, split = fitted(name)
    raw = train_histories(split, range(6))
    before = fingerprint(model)
    model.score_histories(index_histories(model, raw))
    model.recommend_histories(raw, k=5)
    model.score(raw[:2], list(model.item_ids_[:3]))
    assert_same(before, fingerprint(model))
    # and once the caches exist, no attribute comes or goes either
    keys = list(vars(model))
    model.score_histories(index_histories(model, raw))
    model.recommend_history(raw[0], k=3)
    assert list(vars(model)) == keys
    if name in TORCH_MODELS:
        assert not model.net_.training


@pytest.mark.parametrize("name", cases("test_the_history_alone_decides_the_row"))
def test_the_history_alone_decides_the_row(name, fitted):
    model, split = fitted(name)
    hists = index_histories(model, train_histories(split))
    longest = int(np.argmax([len(h) for h in hists]))
    pick = [longest, 1, 2, 3, 4]
    rows = model.score_histories([hists[i] for i in pick])
    assert rows.shape == (len(pick), model.n_items) and rows.dtype == np.float32
    ok = scorable(name, model)
    assert np.isfinite(rows[:, ok]).all() and not np.isfinite(rows[:, ~ok]).any()
    for j, i in enumerate(pick):
        alone = model.score_histories([hists[i]])[0]
        np.testing.assert_allclose(alone, rows[j], rtol=0, atol=1e-5, err_msg=f"history {i} alone")
    shuffled = model.score_histories([hists[i] for i in pick[::-1]] + [hists[pick[2]]])
    np.testing.assert_allclose(shuffled[: len(pick)][::-1], rows, rtol=0, atol=1e-5)
    np.testing.assert_allclose(shuffled[-1], rows[2], rtol=0, atol=1e-5)
    other = np.setdiff1d(np.arange(model.n_items), hists[1])[:3]    # items user 1 never touched
    different = model.score_histories([other])[0]
    if CASES[name].history_matters:
        assert np.abs(different[ok] - rows[1][ok]).max() > 1e-3
    else:
        np.testing.assert_array_equal(different, rows[1])


# -- raw-id answers and their filters ------------------------------------------------------------
@pytest.mark.parametrize("name", cases("test_recommend_history_excludes_seen_items"))
def test_recommend_history_excludes_seen_items(name, fitted):
    model, split = fitted(name)
    raw = train_histories(split, [0])[0]
    seen, everything = set(raw), list(model.item_ids_[scorable(name, model)])
    unseen = [i for i in everything if i not in seen]
    ids, scores = model.recommend_history(raw, k=model.n_items)
    assert set(ids) == set(unseen) and len(ids) == len(unseen)
    assert np.all(np.diff(scores) <= 0) and np.isfinite(scores).all()
    np.testing.assert_allclose(scores, model.score([raw], list(ids))[0], rtol=1e-6, atol=1e-6)
    ids, scores = model.recommend_history(raw, k=5)
    assert len(ids) == 5 and not set(ids) & seen
    ids, scores = model.recommend_history(raw, k=model.n_items, exclude_seen=False)
    assert set(ids) == set(everything)
    row = model.score([raw], everything)[0]
    np.testing.assert_allclose(scores, np.sort(row)[::-1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", cases("test_candidates_and_exclude"))
def test_candidates_and_exclude(name, fitted):
    model, split = fitted(name)
    raw = train_histories(split, [2])[0]
    seen = set(raw)
    rng = np.random.default_rng(0)
    candidates = list(rng.choice(model.item_ids_[scorable(name, model)], size=12, replace=False))
    allowed = [c for c in candidates if c not in seen]
    ids, scores = model.recommend_history(raw, k=50, candidates=candidates)
    assert set(ids) == set(allowed) and len(ids) == len(allowed)
    ids3, scores3 = model.recommend_history(raw, k=3, candidates=candidates)
    assert set(ids3) <= set(allowed)
    np.testing.assert_allclose(scores3, scores[:3], rtol=0, atol=1e-6)     # ids may differ only in ties
    # exclude= removes exactly the named items; the next ones move up
    top, top_scores = model.recommend_history(raw, k=8)
    ids, ex_scores = model.recommend_history(raw, k=5, exclude=list(top[:3]))
    assert len(ids) == 5 and not set(ids) & set(top[:3]) and not set(ids) & seen
    np.testing.assert_allclose(ex_scores, top_scores[3:8], rtol=0, atol=1e-6)
    # several histories at once, one exclude list each
    raws = train_histories(split, [2, 3])
    ids, scores = model.recommend_histories(raws, k=4, exclude=[list(top[:3]), []], candidates=candidates)
    assert ids.shape == scores.shape == (2, 4)
    assert not set(ids[0][np.isfinite(scores[0])]) & set(top[:3])    # short rows end in -inf (documented)
    for row, row_scores, h in zip(ids, scores, raws):
        assert set(row[np.isfinite(row_scores)]) <= set(candidates) - set(h)
    with pytest.raises(ValueError, match="exclude"):
        model.recommend_histories(raws, exclude=[[]])
    with pytest.raises(ValueError, match="k must be"):
        model.recommend_history(raw, k=0)


@pytest.mark.parametrize("name", cases("test_unknown_items_are_named_or_dropped"))
def test_unknown_items_are_named_or_dropped(name, fitted):
    model, split = fitted(name)
    raw = train_histories(split, [3])[0]
    with pytest.raises(KeyError, match="no-such-item"):
        model.recommend_history(raw + ["no-such-item"])
    with pytest.raises(KeyError, match="no-such-item"):
        model.score([raw], ["no-such-item"])
    with pytest.raises(KeyError, match="ghost"):
        model.item_index(["ghost"])
    with pytest.raises(ValueError, match="unknown must be"):
        model.item_index(raw, unknown="ignore")
    dropped = model.recommend_history(raw + ["no-such-item"], k=7, unknown="drop")
    plain = model.recommend_history(raw, k=7)
    np.testing.assert_array_equal(dropped[0], plain[0])
    np.testing.assert_allclose(dropped[1], plain[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", cases("test_an_empty_history_is_scored"))
def test_an_empty_history_is_scored(name, fitted):
    model, split = fitted(name)
    empty = np.zeros(0, dtype=np.int64)
    hists = index_histories(model, train_histories(split, [0]))
    rows = model.score_histories([empty, hists[0], empty])
    assert rows.shape == (3, model.n_items) and np.isfinite(rows[:, scorable(name, model)]).all()
    np.testing.assert_allclose(rows[0], rows[2], rtol=0, atol=1e-6)
    np.testing.assert_allclose(rows[0], model.score_histories([empty])[0], rtol=0, atol=1e-5)
    ids, scores = model.recommend_history([], k=5)
    assert len(ids) == 5 and np.isfinite(scores).all()
    ids, _ = model.recommend_histories([[], []], k=3)
    assert ids.shape == (2, 3)


# -- clones ----------------------------------------------------------------------------------
def _zero_in_place(model) -> int:
    """Overwrite every fitted float array / network weight of `model` in place; how many were hit."""
    hit = 0
    for key, value in vars(model).items():
        if isinstance(value, Recommender) and not key.startswith("_"):   # fitted or wrapped (a wrapper's)
            hit += _zero_in_place(value)
            continue
        if not key.endswith("_") or key.startswith("_"):
            continue
        if isinstance(value, Recommender):
            hit += _zero_in_place(value)
        elif isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.flags.writeable:
            value[...] = 0.5
            hit += 1
        elif sp.issparse(value):
            value.data[...] = 0.5
            hit += 1
        elif isinstance(value, torch.nn.Module):
            with torch.no_grad():
                for p in value.parameters():
                    p.fill_(0.5)
                    hit += 1
    if hasattr(model, "weights_changed"):
        model.weights_changed()
    return hit


@pytest.mark.parametrize("name", cases("test_clone_is_independent"))
def test_clone_is_independent(name, fitted, splits):
    case = CASES[name]
    model, split = fitted(name)
    expected = all_scores(model, split)
    params = param_print(model)
    snapshot = fingerprint(model)

    twin = model.clone()
    assert twin is not model and type(twin) is type(model)
    np.testing.assert_allclose(all_scores(twin, split), expected, rtol=0, atol=1e-6)
    assert _zero_in_place(twin) > 0                      # shares no array with the original
    assert not np.allclose(all_scores(twin, split), expected)

    twin = model.clone()
    if case.params_to_change:
        twin.set_params(**case.params_to_change)
    if case.update is not None:
        case.update(twin, split)
        assert np.abs(all_scores(twin, split) - expected).max() > 1e-4, "the update changed nothing"
    else:
        with pytest.raises(NotImplementedError, match="no incremental update"):
            twin.partial_fit(_ring_events(split))
        other = case.refit_data or ("cycle" if case.data != "cycle" else "topics")
        case.fit(twin, splits(other))                                           # refit on other data
    np.testing.assert_array_equal(all_scores(model, split), expected)
    assert_same(params, param_print(model), "params")
    assert_same(snapshot, fingerprint(model))


# -- serving while an update trains on a clone ------------------------------------------------------
@pytest.mark.parametrize("name", ["sasrec", "interest-text+id"])
def test_serving_threads_while_a_clone_updates(name, fitted):
    model, split = fitted(name)
    raws = train_histories(split, range(8))

    def answers(m):
        return [m.recommend_history(h, k=10) for h in raws]

    def same(got, want):
        return all(np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1], rtol=0, atol=1e-5)
                   for a, b in zip(got, want))

    def serve(get_model, want, rounds, errors, stop=None):
        try:
            for _ in range(rounds):
                if not same(answers(get_model()), want):
                    errors.append("answer differs")
                if stop is not None and stop.is_set():
                    break
        except Exception as exc:     # noqa: BLE001  (any failure in a thread fails the test)
            errors.append(repr(exc))

    served = {"model": model}
    old = answers(model)
    update = model.clone()
    errors: list = []
    stop = threading.Event()
    threads = [threading.Thread(target=serve, args=(lambda: served["model"], old, 200, errors, stop))
               for _ in range(4)]
    for t in threads:
        t.start()
    hist = Histories.from_sequences(split.train.user_ids, split.train.item_ids, split.train.sequences)
    update.partial_fit(_ring_events(split), histories=hist, epochs=3, lr=0.05)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert same(answers(model), old)                   # the original still answers as before

    new = answers(update)
    assert not same(new, old), "the update changed nothing"
    served["model"] = update                           # swap
    errors = []
    threads = [threading.Thread(target=serve, args=(lambda: served["model"], new, 5, errors)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
