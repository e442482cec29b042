"""FreshSlot: the best fresh item takes a reserved place in the list; every other item keeps its order."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from migrec.data.split import TrainSet
from migrec.models.fresh_slot import FreshSlot
from migrec.models.popularity import Popularity

# items a..e have 5, 4, 3, 2, 1 events; f and g none (fresh)
IDS = list("abcdefg")


@pytest.fixture(scope="module")
def train():
    counts = [5, 4, 3, 2, 1, 0, 0]
    seqs = [np.array([i for i, c in enumerate(counts) if c > u], dtype=np.int64) for u in range(5)]
    cat = pd.DataFrame({"item_id": IDS, "title": IDS, "domain": "x"})
    return TrainSet(np.array([f"u{u}" for u in range(5)], dtype=object), np.array(IDS, dtype=object), seqs, cat)


def order(model, history=()):
    return [IDS[i] for i in np.argsort(-model.score_histories([np.array(history, dtype=np.int64)])[0],
                                       kind="stable")]


def test_the_best_fresh_item_takes_the_reserved_place(train):
    pop = Popularity().fit(train)
    assert order(pop)[:5] == list("abcde")
    slot = FreshSlot(pop, position=3).fit(train)
    assert list(slot.fresh_) == [5, 6]                          # the items without training events
    assert order(slot)[:6] == list("abfcde")                    # f at place 3, c and below one down
    first = FreshSlot(pop, position=1).fit(train)
    assert order(first)[:3] == list("fab")
    # the wrapped model chooses which fresh item: g once it scores higher than f
    pop_scores = pop.score_histories([np.array([], dtype=np.int64)])[0]
    assert pop_scores[5] == pop_scores[6]
    chosen = FreshSlot(pop, position=2, items=[6, 4]).fit(train)   # e (1 event) is the best of these
    assert order(chosen)[:3] == list("aeb")


def test_nothing_moves_when_a_fresh_item_is_already_placed_or_every_item_is_listed(train):
    pop = Popularity().fit(train)
    raw = pop.score_histories([np.array([], dtype=np.int64)])
    placed = FreshSlot(pop, position=3, items=[1, 5]).fit(train)   # b is within the first 3 places
    np.testing.assert_array_equal(placed.score_histories([np.array([], dtype=np.int64)]), raw)
    short = FreshSlot(pop, position=3, candidates=[0, 1, 5]).fit(train)   # 3 candidates, 3 places
    np.testing.assert_array_equal(short.score_histories([np.array([], dtype=np.int64)]), raw)


def test_history_items_and_non_candidates_are_not_places(train):
    pop = Popularity().fit(train)
    slot = FreshSlot(pop, position=3).fit(train)
    # a and b are in the history (masked when recommending): the places are c, d, then the fresh item
    ranked = [i for i in order(slot, [0, 1]) if i not in "ab"]
    assert ranked[:4] == list("cdfe")
    counted = FreshSlot(pop, position=3, exclude_history=False).fit(train)
    assert [i for i in order(counted, [0, 1]) if i not in "ab"][:3] == list("fcd")
    ids, _ = slot.recommend_history(["a", "b"], k=3)
    assert list(ids) == list("cdf")
    within = FreshSlot(pop, position=2, candidates=[2, 3, 4, 6]).fit(train)   # f is not a candidate
    assert [i for i in order(within) if i in "cdeg"] == list("cgde")


def test_bad_settings_are_refused(train):
    pop = Popularity().fit(train)
    with pytest.raises(ValueError, match="position must be >= 1"):
        FreshSlot(pop, position=0).fit(train)
    with pytest.raises(ValueError, match=r"items must be item indices in \[0, 7\)"):
        FreshSlot(pop, items=[9]).fit(train)
    with pytest.raises(RuntimeError, match="not fitted"):
        FreshSlot(pop).score_histories([np.array([0])])
    with pytest.raises(RuntimeError, match="not fitted"):
        FreshSlot(Popularity()).fit(train)                    # the wrapped model must be fitted first
    other = TrainSet(train.user_ids, np.array(list("abcdefh"), dtype=object), train.sequences, train.catalogue)
    with pytest.raises(ValueError, match="are not the 7 items of the wrapped model"):
        FreshSlot(pop).fit(other)
