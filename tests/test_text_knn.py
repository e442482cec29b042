"""Text neighbours (models.text_knn): scores are the newest events' text similarity, cold items included."""
from __future__ import annotations

import numpy as np
import pytest

from migrec.data.schema import Dataset, make_catalogue, make_interactions
from migrec.data.split import leave_one_out
from migrec.models.text_knn import TextNeighbours


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    ids = [f"i{j}" for j in range(12)]
    users = [f"u{u}" for u in range(6) for _ in range(5)]
    items = [ids[j] for j in rng.integers(0, 10, size=30)]          # i10, i11: in the catalogue, never clicked
    split = leave_one_out(Dataset(make_interactions(users, items), make_catalogue(ids, ids), "t"))
    split.train.item_vectors = rng.standard_normal((12, 5)).astype(np.float32) * 3.0   # not unit length
    split.train.encoder = "test-encoder"
    return split


def test_scores_are_the_decayed_cosine_to_the_newest_events(split):
    model = TextNeighbours(last=2, decay=0.5).fit(split.train)
    unit = split.train.item_vectors / np.linalg.norm(split.train.item_vectors, axis=1, keepdims=True)
    histories = [np.array([3, 7, 1]), np.array([4]), np.array([], dtype=np.int64)]
    scores = model.score_histories(histories)
    np.testing.assert_allclose(scores[0], unit @ (unit[1] + 0.5 * unit[7]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores[1], unit @ unit[4], rtol=1e-5, atol=1e-6)
    assert not scores[2].any()                                   # nothing to be similar to
    # an item without events is scored like any other: its own text decides
    top = int(np.argmax(np.where(np.arange(12) == 4, -np.inf, unit @ unit[4])))
    assert model.recommend_history(["i4"], k=1)[0][0] == f"i{top}"


def test_new_items_are_scored_at_once_and_the_encoder_is_checked(split):
    model = TextNeighbours().fit(split.train)
    vector = split.train.item_vectors[2] * 7.0                   # the same direction as i2, another length
    with pytest.raises(ValueError, match="another-encoder"):
        model.add_items(["new"], {"new": vector}, encoder="another-encoder")
    model.add_items(["new"], {"new": vector}, encoder="test-encoder")
    scores = model.score_histories([np.array([2])])[0]
    assert scores[-1] == pytest.approx(1.0, abs=1e-5) and scores[-1] == pytest.approx(scores[2], abs=1e-5)


def test_bad_settings_and_missing_vectors_are_refused(split):
    with pytest.raises(ValueError, match="last must be"):
        TextNeighbours(last=0).fit(split.train)
    with pytest.raises(ValueError, match="decay must be"):
        TextNeighbours(decay=0.0).fit(split.train)
    vectors = split.train.item_vectors
    try:
        split.train.item_vectors = None
        with pytest.raises(ValueError, match="item_vectors"):
            TextNeighbours().fit(split.train)
    finally:
        split.train.item_vectors = vectors
