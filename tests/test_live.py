"""serving.live.LiveModel on a small two-domain world (movies, books; four topics each) with
"hashing:64" text vectors, and AdaptiveBlend's add_items / partial_fit that let a served blend grow."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from migrec.data import Histories
from migrec.data.schema import Dataset, make_catalogue, make_interactions
from migrec.data.split import leave_one_out
from migrec.drift.adaptation import AdaptiveBlend
from migrec.drift.detection import MigrationDetector
from migrec.models.interest import InterestModel
from migrec.models.itemknn import ItemKNN
from migrec.models.matrix_factorization import ALS
from migrec.pipeline import attach_item_vectors
from migrec.registry import load_model
from migrec.serving.live import LiveModel

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ENCODER = "hashing:64"
TOPICS = {"space": "rocket galaxy astronaut orbit planet", "cooking": "kitchen recipe chef baking bread",
          "war": "battle soldier army tank general", "romance": "love wedding heart kiss letter"}
DOMAINS = {"movies": "film", "books": "novel"}
PER_TOPIC = 8            # items with events per topic and domain; one more per pair is cold (never in the log)
DAY = 86400.0
T0 = 1_000_000_000.0
SMALL = dict(hidden=16, layers=1, heads=1, max_len=60, dropout=0.1, batch_size=32, lr=0.01, epochs=4,
             patience=4, device="cpu", progress=False, seed=0)


def item_id(domain, topic, k):
    return f"{domain[0]}-{topic}-{k}"


def world():
    """Users walk one topic in one domain or both; books readers lean to war (the popular books)."""
    rng = np.random.default_rng(0)
    ids, titles, domains, cats = [], [], [], []
    for d, noun in DOMAINS.items():
        for t, words in TOPICS.items():
            for k in range(PER_TOPIC + 1):
                w = words.split()
                ids.append(item_id(d, t, k)), domains.append(d), cats.append(t)
                titles.append(" ".join(w[:k % 5] + w[k % 5 + 1:]) + f" {noun} {t}{k}")
    users, items, times, doms = [], [], [], []
    for u in range(72):
        topic = list(TOPICS)[u % 4]
        kind = [["movies"], ["books"], ["movies", "books"]][(u // 4) % 3]
        if kind == ["books"] and u % 2:
            topic = "war"
        for j in range(int(rng.integers(30, 40))):
            d = kind[j % len(kind)]
            users.append(f"u{u:02d}"), items.append(item_id(d, topic, int(rng.integers(PER_TOPIC))))
            times.append(T0 + (u * 100 + j) * DAY), doms.append(d)
    catalogue = make_catalogue(ids, titles, domain=domains, category=cats)
    split = leave_one_out(Dataset(make_interactions(users, items, domain=doms, timestamp=times), catalogue, "w"))
    return attach_item_vectors(split, ENCODER, cache_dir=None)


def save(model, split, folder, encoder=ENCODER):
    model.save(folder)
    split.train.catalogue.to_parquet(folder / "catalogue.parquet", index=False)
    (folder / "serving.json").write_text(json.dumps({"encoder": encoder, "template": None}))
    return folder


@pytest.fixture(scope="module")
def split():
    return world()


@pytest.fixture(scope="module")
def histories(split):
    t = split.train
    return Histories.from_sequences(t.user_ids, t.item_ids, t.sequences, t.timestamps)


@pytest.fixture(scope="module")
def interest(split, tmp_path_factory):
    model = InterestModel(use_id=True, experts=2, **SMALL).fit(split.train, split.valid)
    return model, save(model, split, tmp_path_factory.mktemp("interest"))


@pytest.fixture(scope="module")
def live(interest, histories):
    return LiveModel.from_dir(interest[1], 3, histories=histories)


@pytest.fixture(scope="module")
def blend(split, tmp_path_factory):
    model = AdaptiveBlend(InterestModel(use_id=False, experts=2, **SMALL), tune=False, weight_min=0.1,
                          weight_max=0.7).fit(split.train, split.valid)
    return model, save(model, split, tmp_path_factory.mktemp("blend"))


@pytest.fixture(scope="module")
def popular(split):
    counts = pd.Series(split.train.item_counts(), index=split.train.item_ids)
    domain = split.train.catalogue.set_index("item_id")["domain"]

    def top(dom, k, exclude):
        c = counts[(domain == dom) if dom else slice(None)].drop(list(exclude), errors="ignore")
        c = c.sort_values(ascending=False, kind="stable")
        return [(i, int(n)) for i, n in c.head(k).items()]
    return top


def walk(domain, topic, n, start=0, seed=1):
    """A history of n events on one topic: (item_id, domain, timestamp), a day apart."""
    rng = np.random.default_rng(seed)
    return [(item_id(domain, topic, int(rng.integers(PER_TOPIC))), domain, T0 + (start + j) * DAY)
            for j in range(n)]


def ids_of(answer):
    return [i["item_id"] for i in answer["items"]]


# -- recommend ------------------------------------------------------------------------------------------
def test_warm_answers_are_the_models_own(live, interest, split):
    model = interest[0]
    h = walk("movies", "space", 12) + walk("books", "cooking", 5, 12)
    got = live.recommend(h, k=10)
    want_ids, want_scores = model.recommend_history([e[0] for e in h], k=10)
    assert got["path"] == "warm" and ids_of(got) == list(want_ids)
    np.testing.assert_array_equal([i["score"] for i in got["items"]], want_scores)
    books = list(split.train.item_ids[[i.startswith("b-") for i in split.train.item_ids]])
    got = live.recommend(h, k=5, domain="books")
    want_ids, want_scores = model.recommend_history([e[0] for e in h], k=5, candidates=books)
    assert got["path"] == "warm" and ids_of(got) == list(want_ids)
    np.testing.assert_array_equal([i["score"] for i in got["items"]], want_scores)
    assert {i["domain"] for i in got["items"]} == {"books"}
    assert got["items"][0]["title"] == live.item(got["items"][0]["item_id"])["title"]


def test_cross_domain_scores_the_other_domain_from_the_whole_history(live, popular):
    h = walk("movies", "space", 20)
    got = live.recommend(h, k=8, domain="books")
    assert got["path"] == "cross-domain"
    assert {i["domain"] for i in got["items"]} == {"books"} and len(got["items"]) == 8
    pop = [i for i, _ in popular("books", 8, [])]
    assert ids_of(got) != pop
    # the text carries the topic across: space books lead, where popularity gives war books
    assert sum("-space-" in i for i in ids_of(got)[:4]) >= 3
    assert sum("-war-" in i for i in pop[:4]) >= 3


def test_cold_path_is_the_popular_list(live, popular):
    got = live.recommend([], k=5, domain="books", explain=True, popular=popular)
    want = popular("books", 5, [])
    assert got["path"] == "cold" and "books" in got["reason"]
    assert [(i["item_id"], i["score"]) for i in got["items"]] == [(i, float(n)) for i, n in want]
    assert all(i["because"] == [] and i["domain"] == "books" for i in got["items"])
    skip = want[0][0]
    got = live.recommend([("never-seen", "books", T0)], k=5, domain="books", exclude=[skip], popular=popular)
    assert got["path"] == "cold" and skip not in ids_of(got) and len(got["items"]) == 5
    assert live.recommend([], k=5)["items"] == []                    # no popularity source: no items


def test_seen_excluded_and_unknown_items_never_appear(live):
    h = walk("movies", "war", 25)
    first = ids_of(live.recommend(h, k=6))
    skip = first[:2] + ["not-an-item"]
    got = ids_of(live.recommend(h + [("unknown-1", "movies", T0 + 99 * DAY)], k=6, exclude=skip))
    seen = {e[0] for e in h}
    assert not seen & set(got) and not set(skip) & set(got) and len(got) == 6
    assert got[:4] == first[2:]                 # unknown history items are dropped, not scored
    everything = ids_of(live.recommend(h, k=1000, domain="movies"))
    assert len(everything) == 4 * (PER_TOPIC + 1) - len(seen)


def test_occlusion_weights_are_score_differences(live, interest):
    model = interest[0]
    h = walk("movies", "romance", 30, seed=4) + walk("movies", "space", 30, 30, seed=5)
    got = live.recommend(h, k=3, explain=True)
    plain = live.recommend(h, k=3)
    assert ids_of(got) == ids_of(plain)
    idx = model.item_index([e[0] for e in h])
    top = got["items"][0]
    target = model.item_index([top["item_id"]])[0]
    full = model.score_histories([idx])[0, target]
    window = range(len(idx) - live.explain_window, len(idx))
    drops = {j: full - model.score_histories([np.delete(idx, j)])[0, target] for j in window}
    best = sorted((j for j in drops if drops[j] > 0), key=lambda j: -drops[j])[:3]
    because = top["because"]
    assert [b["position"] for b in because] == best and 1 <= len(because) <= 3
    for b in because:
        assert b["item_id"] == h[b["position"]][0] and b["timestamp"] == h[b["position"]][2]
        assert b["weight"] == pytest.approx(float(drops[b["position"]]), abs=1e-4) and b["weight"] > 0
    assert all(b["position"] >= 10 for i in got["items"] for b in i["because"])     # the newest 50 only


# -- similar, new items ----------------------------------------------------------------------------------
def new_row(split, twin):
    row = split.train.catalogue.set_index("item_id").loc[twin]
    return {"item_id": "new-1", "domain": row["domain"], "title": row["title"], "fields": {"category": row["category"]}}


def test_with_items_makes_a_new_item_recommendable_in_a_new_live_model(live, split):
    twin = item_id("books", "cooking", PER_TOPIC)            # a cold catalogue item: text only
    row = new_row(split, twin)
    vec = live.encode_items([row])
    np.testing.assert_allclose(vec[0], split.train.item_vectors[list(split.train.item_ids).index(twin)], atol=1e-6)
    grown = live.with_items([row], vec)
    assert grown.has_item("new-1") and not live.has_item("new-1") and "new-1" not in live.model.item_ids_
    near = grown.similar(twin, k=3)
    assert near[0]["item_id"] == "new-1" and near[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert twin not in [s["item_id"] for s in near]
    assert "new-1" not in [s["item_id"] for s in live.similar(twin, k=50)]
    got = grown.recommend(walk("books", "cooking", 15), k=1000, domain="books")
    score = {i["item_id"]: i["score"] for i in got["items"]}
    assert np.isfinite(score["new-1"]) and "new-1" not in ids_of(live.recommend(walk("books", "cooking", 15), k=1000))
    item = grown.item("new-1")
    assert item["cold"] and item["domain"] == "books" and item["fields"] == {"category": "cooking"}
    assert not grown.item(item_id("books", "cooking", 0))["cold"] and grown.item(twin)["cold"]
    assert grown.interests([("new-1", "books", T0)])["long"] == [{"topic": "cooking", "share": 1.0}]
    with pytest.raises(ValueError, match="already known"):
        grown.with_items([row], vec)
    poem = {"item_id": "new-2", "domain": "books", "title": "verse rhyme", "fields": {"category": "poetry"}}
    again = grown.with_items([poem])                        # encoded here; a new category: topics rebuilt
    assert "poetry" in again.topics.names and again.interests([("new-2", "books", T0)])["long"][0]["topic"] == "poetry"
    assert again.interests([("new-1", "books", T0)])["long"] == [{"topic": "cooking", "share": 1.0}]
    assert [s["domain"] for s in grown.similar(twin, k=5, domain="movies")] == ["movies"] * 5


def test_a_model_without_add_items_is_refused_by_kind(split, tmp_path):
    als = ALS(factors=8, iterations=5, threads=1).fit(split.train)
    live = LiveModel.from_dir(save(als, split, tmp_path), 1, store_items=[
        {"item_id": "api-1", "domain": "books", "title": "x", "fields": {}, "vector": np.ones(64, np.float32)}])
    assert not live.has_item("api-1") and not live.takes_items
    with pytest.raises(ValueError, match="ALS models cannot take new items"):
        live.with_items([{"item_id": "n", "domain": "books", "title": "war novel"}], np.ones((1, 64)))
    assert live.similar(item_id("movies", "war", 1), k=2)[0]["item_id"] != item_id("movies", "war", 1)


def test_from_dir_adds_stored_items_and_refuses_another_encoder(interest, split):
    folder = interest[1]
    row = new_row(split, item_id("movies", "space", PER_TOPIC))
    vector = LiveModel.from_dir(folder, 1).encode_items([row])[0]
    other = {**new_row(split, item_id("books", "war", PER_TOPIC)), "item_id": "new-2", "vector": None}
    live = LiveModel.from_dir(folder, 7, store_items=[{**row, "vector": vector, "encoder": None, "source": "api"},
                                                      other])
    assert live.version == 7 and live.has_item("new-1") and live.item("new-1")["cold"]
    assert live.similar(item_id("books", "war", PER_TOPIC), k=1)[0]["item_id"] == "new-2"     # encoded at load
    with pytest.raises(ValueError, match="another encoder"):
        LiveModel.from_dir(folder, 7, store_items=[{**row, "vector": vector, "encoder": "st:other"}])
    assert live.encoder_id == interest[0].encoder_info()["model_id"] and live.domains() == ["books", "movies"]
    assert "new-1" not in interest[0].item_ids_                      # the fixture's model is untouched
    with pytest.raises(ValueError, match=r"hashing:32.*hashing:64"):
        LiveModel.from_dir(folder, 1, encoder="hashing:32")


# -- interests ---------------------------------------------------------------------------------------------
def test_interests_flag_a_planted_migration_and_not_a_steady_user(live):
    moved = walk("movies", "space", 40, seed=11) + walk("movies", "romance", 20, 40, seed=12)
    got = live.interests(moved)
    assert got["events"] == 60 and got["blend_weight"] is None
    for part in ("long", "short"):
        assert sum(t["share"] for t in got[part]) == pytest.approx(1.0)
    assert got["long"] == [{"topic": "space", "share": pytest.approx(2 / 3)},
                           {"topic": "romance", "share": pytest.approx(1 / 3)}]
    assert got["short"] == [{"topic": "romance", "share": 1.0}]
    assert len(got["migrations"]) == 1
    m = got["migrations"][0]        # position: the estimated first event of the new regime (alarm - short + 1)
    assert 30 <= m["position"] <= 40 and m["before"] == [{"topic": "space", "share": 1.0}]
    assert m["after"][0]["topic"] == "romance" and m["after"][0]["share"] > 0.5
    assert m["timestamp"] == str(np.datetime64(int(moved[m["position"]][2]), "s").astype("datetime64[D]"))
    # the timeline: 60 events in periods of 2 (40 periods at most); space alone, then romance alone
    t = got["timeline"]
    assert t["every"] == 2 and [p["start"] for p in t["periods"]] == list(range(0, 60, 2))
    series = {s["topic"]: s["shares"] for s in t["series"]}
    assert set(series) == {"space", "romance"}
    assert series["space"] == [1.0] * 20 + [0.0] * 10 and series["romance"] == [0.0] * 20 + [1.0] * 10
    assert m["period"] == m["position"] // 2 and 15 <= m["period"] <= 20
    assert got["model_interests"] is None                          # not a multi-interest model
    steady = live.interests(walk("movies", "space", 60, seed=11))
    assert steady["migrations"] == [] and steady["long"] == [{"topic": "space", "share": 1.0}]
    assert live.interests([("unknown", "books", T0)]) == {"long": [], "short": [], "migrations": [],
                                                          "blend_weight": None, "events": 0, "model_interests": None,
                                                          "timeline": {"every": 1, "periods": [], "series": []}}


def test_a_served_blend_uses_its_detector_and_reports_its_weight(blend, split, histories):
    model, folder = blend
    live = LiveModel.from_dir(folder, 2, histories=histories)
    assert live.detector is live.model.detector_ and live.detector.threshold_ == model.detector_.threshold_
    steady = walk("movies", "space", 40, seed=11)
    weights = []
    for n in range(0, 9):                 # the blend weight turns up while the alarm is among the last 3 events
        moved = steady + walk("movies", "romance", n, 40, seed=12)
        weights.append(live.interests(moved)["blend_weight"])
        idx = model.item_index([e[0] for e in moved])
        assert weights[-1] == pytest.approx(float(model.weights([idx])[0]))
    assert weights[0] == pytest.approx(0.1) and pytest.approx(0.7) in weights
    ids, scores = model.recommend_history([e[0] for e in moved], k=5)
    answer = live.recommend(moved, k=5)
    assert ids_of(answer) == list(ids)
    np.testing.assert_array_equal([i["score"] for i in answer["items"]], scores)
    twin = item_id("books", "war", PER_TOPIC)
    grown = live.with_items([new_row(split, twin)], live.encode_items([new_row(split, twin)]))
    assert grown.similar(twin, k=1)[0]["item_id"] == "new-1" and not live.has_item("new-1")


# -- AdaptiveBlend growth ----------------------------------------------------------------------------------
def test_blend_add_items_grows_the_base_and_the_detector_vectors(blend, split, tmp_path):
    model = blend[0].clone()
    vec = np.asarray(split.train.item_vectors[:2]) * 0.5 + 0.1
    n = model.n_items
    model.add_items(["x1", "x2"], vec, domains=["books", "books"], encoder=model.encoder_info()["model_id"])
    assert model.n_items == n + 2 and model.base.n_items == n + 2 and blend[0].n_items == n
    np.testing.assert_array_equal(model.item_vectors_[-2:], vec.astype(np.float32))
    scores = model.score([[split.train.item_ids[0]]], ["x1", "x2"])
    assert np.isfinite(scores).all()
    model.save(tmp_path / "grown")
    back = load_model(tmp_path / "grown")
    np.testing.assert_allclose(back.score([["x1"]], ["x2", "x1"]), model.score([["x1"]], ["x2", "x1"]), atol=1e-5)
    with pytest.raises(ValueError, match="text encoder"):
        model.add_items(["x3"], vec[:1], encoder="another-encoder")
    with pytest.raises(ValueError, match="dimensions"):
        model.add_items(["x3"], vec[:1, :10])
    assert model.n_items == n + 2 and len(model.item_vectors_) == n + 2


def test_blend_partial_fit_goes_to_the_base_with_new_items(blend, split, histories):
    model = blend[0].clone()
    before = model.score_histories([model.item_index([item_id("books", "war", 1)])])
    n = model.n_items
    events = pd.DataFrame({"user_id": ["u00", "u00", "fresh"], "item_id": [item_id("books", "war", 2), "y1", "y1"],
                           "timestamp": [T0 + 1e9, T0 + 1e9 + 1, T0 + 1e9 + 2]})
    with pytest.raises(ValueError, match="text vectors"):
        model.partial_fit(events, histories=histories)
    assert model.n_items == n
    vec = np.full(64, 0.125, np.float32)
    model.partial_fit(events, histories=histories, item_vectors={"y1": vec}, epochs=1, lr=0.05)
    assert model.n_items == n + 1 and list(model.item_ids_[-1:]) == ["y1"] and blend[0].n_items == n
    np.testing.assert_array_equal(model.item_vectors_[-1], vec)
    after = model.score_histories([model.item_index([item_id("books", "war", 1)])])
    assert np.abs(after[0, :n] - before[0]).max() > 1e-4
    assert len(model.base.partial_history_) == 1


def test_a_blend_over_a_base_without_growth_refuses(split):
    knn = AdaptiveBlend(ItemKNN(neighbors=10), tune=False).fit(split.train)
    with pytest.raises(ValueError, match="ItemKNN cannot take new items"):
        knn.add_items(["z"], np.ones((1, 64)))
    with pytest.raises(NotImplementedError, match="no incremental update"):
        knn.partial_fit(pd.DataFrame({"user_id": ["u"], "item_id": [item_id("books", "war", 1)]}))
    als = AdaptiveBlend(ALS(factors=4, iterations=3, threads=1), tune=False,
                        detector=MigrationDetector()).fit(split.train)
    with pytest.raises(KeyError, match="zz"):
        als.partial_fit(pd.DataFrame({"user_id": ["u"], "item_id": ["zz"]}))
    assert len(als.item_vectors_) == als.n_items
