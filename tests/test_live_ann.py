"""serving.live.LiveModel above the ANN threshold (models.retrieval): the small world of
tests/servicekit.py (a migration-aware blend over interest-text+id, 1,507 items in two domains)
served twice from the same model, once exact (the default threshold, 100,000 items) and once with
the base model's `ann_threshold=0`, so that recommend, explanations and similar go through the
FAISS index. The blend is given weights (0.3, 0.6) so that both its long- and short-term parts count."""
from __future__ import annotations

import numpy as np
import pytest

import servicekit
from migrec import pipeline
from migrec.serving.live import LiveModel

pytestmark = pytest.mark.usefixtures("torch_one_thread")

USERS = 60            # histories compared
MIN_RECALL = 0.95     # mean recall@10 of the ANN top-10 against the exact top-10 on those histories


def served(model, like: LiveModel) -> LiveModel:
    return LiveModel(model, like.catalogue, like.version, like.encoder_spec, like.template, like.text_vectors,
                     like.topics, like.detector, [like.item(i)["cold"] for i in model.item_ids_], like.path)


@pytest.fixture(scope="module")
def world(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("ann-world")
    data_dir = servicekit.imported_data_dir(shared_data, root)
    loaded = LiveModel.from_dir(data_dir / "versions" / "v0001", 1)
    blend = loaded.model.clone()
    blend.weights_ = (0.3, 0.6)               # a fitted attribute: a migration now moves the weight
    exact = served(blend, loaded)
    fast = blend.clone()
    fast.base.set_params(ann_threshold=0)
    ann = served(fast, loaded)
    data = pipeline.load_dataset("parquet", str(root / "dataset"))
    log = data.interactions.sort_values(["user_id", "timestamp"], kind="stable")
    histories = [[(r.item_id, r.domain, r.timestamp) for r in g.itertuples()] for _, g in log.groupby("user_id")]
    return exact, ann, histories[:USERS]


def ids(answer) -> list:
    return [i["item_id"] for i in answer["items"]]


def scores(answer) -> dict:
    return {i["item_id"]: i["score"] for i in answer["items"]}


def test_the_ann_live_model_searches_an_index_and_the_exact_one_does_not(world):
    exact, ann, _ = world
    assert exact.model.base.ann_index() is None and exact.model.n_items < exact.model.base.ann_threshold
    assert ann.model.base.ann_index() is not None
    assert ann.model.weights_ == (0.3, 0.6) and exact.model.n_items == ann.model.n_items == 1507


def test_ann_top10_matches_exact_with_the_models_own_scores(world):
    exact, ann, histories = world
    recall = []
    for h in histories:
        want, got = exact.recommend(h, k=10), ann.recommend(h, k=10)
        assert got["path"] == want["path"] == "warm" and len(got["items"]) == 10
        recall.append(len(set(ids(got)) & set(ids(want))) / 10)
        both = [i for i in ids(got) if i in scores(want)]
        np.testing.assert_allclose([scores(got)[i] for i in both], [scores(want)[i] for i in both],
                                   rtol=1e-4, atol=1e-4)
        got_scores = [i["score"] for i in got["items"]]
        assert got_scores == sorted(got_scores, reverse=True)
    assert np.mean(recall) >= MIN_RECALL
    # the scores are the blend's: check one whole row against score_histories
    h = histories[0]
    idx = exact.model.item_index([e[0] for e in h])[-exact.max_history:]
    row = exact.model.score_histories([idx])[0]
    got = ann.recommend(h, k=10)
    np.testing.assert_allclose([i["score"] for i in got["items"]], row[exact.model.item_index(ids(got))],
                               rtol=1e-4, atol=1e-4)


def test_ann_keeps_the_domain_filter_and_every_exclusion(world):
    exact, ann, histories = world
    for h in histories[:20]:
        seen = {e[0] for e in h}
        skip = ids(exact.recommend(h, k=3))
        for domain in ("classic", "recent"):
            want = exact.recommend(h, k=10, domain=domain, exclude=skip)
            got = ann.recommend(h, k=10, domain=domain, exclude=skip)
            assert len(got["items"]) == 10 and {i["domain"] for i in got["items"]} == {domain}
            assert not (set(ids(got)) & (seen | set(skip)))
            assert len(set(ids(got)) & set(ids(want))) >= 8
    # a domain with fewer allowed items than k: every allowed one, none seen
    h = histories[0]
    everything = ann.recommend(h, k=5000, domain="classic")
    assert sorted(ids(everything)) == sorted(ids(exact.recommend(h, k=5000, domain="classic")))


def test_ann_explanations_equal_the_exact_ones_for_the_same_items(world):
    exact, ann, histories = world
    for h in histories[:5]:
        got = ann.recommend(h, k=5, explain=True)
        want = {i["item_id"]: i["because"] for i in exact.recommend(h, k=20, explain=True)["items"]}
        common = [i for i in got["items"] if i["item_id"] in want]
        assert common
        for item in common:
            assert [b["item_id"] for b in item["because"]] == [b["item_id"] for b in want[item["item_id"]]]
            np.testing.assert_allclose([b["weight"] for b in item["because"]],
                                       [b["weight"] for b in want[item["item_id"]]], rtol=1e-3, atol=1e-4)


def test_ann_similar_equals_exact_similar(world):
    exact, ann, histories = world
    items = [h[0][0] for h in histories[:15]]
    for item in items:
        want, got = exact.similar(item, k=10), ann.similar(item, k=10)
        assert item not in [s["item_id"] for s in got]
        assert len({s["item_id"] for s in got} & {s["item_id"] for s in want}) >= 9
        for domain in ("classic", "recent"):
            assert {s["domain"] for s in ann.similar(item, k=5, domain=domain)} == {domain}
    with pytest.raises(ValueError, match="'k'"):
        ann.similar(items[0], k=0)


def test_a_posted_item_is_retrievable_at_once_and_the_old_version_is_unchanged(world):
    exact, ann, histories = world
    h = histories[1]
    before = ann.recommend(h, k=200, domain="recent")
    # the highest-ranked cold item (no ID embedding: its row is its text's) gets a posted twin
    cold = next(i for i in ids(before) if ann.item(i)["cold"])
    row = ann.item(cold)
    vector = ann.encode_items([row])
    np.testing.assert_allclose(vector[0], ann.text_vectors[ann.model.item_index([cold])[0]], atol=1e-6)
    grown = ann.with_items([{**row, "item_id": "posted-1"}], vector)
    rank = ids(before).index(cold)
    got = grown.recommend(h, k=rank + 2, domain="recent")
    assert "posted-1" in ids(got) and cold in ids(got)        # the same row: the same score as its twin
    assert scores(got)["posted-1"] == pytest.approx(scores(got)[cold], rel=1e-4, abs=1e-4)
    assert grown.similar(cold, k=1)[0]["item_id"] == "posted-1"
    plain = grown.model.clone()
    plain.base.set_params(ann_threshold=None)
    grown_exact = served(plain, grown)
    assert len(set(ids(grown.recommend(h, k=10))) & set(ids(grown_exact.recommend(h, k=10)))) >= 9
    # the old version serves as before: same answers, no posted item anywhere
    assert ann.recommend(h, k=200, domain="recent") == before and not ann.has_item("posted-1")
    assert "posted-1" not in ids(ann.recommend(h, k=1507))
    assert "posted-1" not in [s["item_id"] for s in ann.similar(cold, k=1506)]


def test_calibrate_on_raises_nprobe_until_the_given_queries_reach_the_target():
    from dataclasses import replace

    from migrec.models.retrieval import build, calibrate_on, search

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 32))
    rows = centres[rng.integers(0, 50, 20_000)] + 0.3 * rng.standard_normal((20_000, 32))
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    ann = build(rows)                              # nprobe calibrated on pseudo queries (means of item rows)

    def recalls(index, queries):
        found, _ = search(index, queries, 10, [np.zeros(0, np.int64)] * len(queries))
        exact = np.argsort(-(queries @ rows.T), axis=1)[:, :10]
        return np.array([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])

    pool = rng.standard_normal((2000, 32)).astype(np.float32)
    hard = pool[recalls(ann, pool) <= 0.8]          # queries the pseudo-calibrated nprobe serves badly
    assert len(hard) >= 10
    tuned = calibrate_on(ann, hard, 0.98)
    assert tuned.index is ann.index and tuned.matrix is ann.matrix and tuned.nprobe > ann.nprobe
    assert recalls(tuned, hard).mean() >= 0.98 > recalls(replace(tuned, nprobe=tuned.nprobe // 2), hard).mean()
    assert calibrate_on(tuned, rows[:64], 0.98) is tuned                      # easy queries: unchanged
