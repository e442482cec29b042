"""migrec.data.Histories: per-user histories kept outside the models."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_models import cycle_split

from migrec.data import Histories


def frame():
    # file order is not time order; u1's two events at t=5 keep their file order
    return pd.DataFrame({"user_id": ["u1", "u2", "u1", "u1", "u2", 3],
                         "item_id": ["c", "x", "a", "b", 7, "z"],
                         "timestamp": [5.0, 1.0, 1.0, 5.0, 0.0, 2.0]})


def test_from_frame_orders_by_time_and_keeps_file_order_in_ties():
    h = Histories.from_frame(frame())
    assert h.users() == ["3", "u1", "u2"] and len(h) == 3
    assert h["u1"].tolist() == ["a", "c", "b"]
    assert h.times("u1").tolist() == [1.0, 5.0, 5.0]
    assert h["u2"].tolist() == ["7", "x"]              # ids become strings
    assert h[3].tolist() == ["z"] and 3 in h and "3" in h
    assert h.lengths().tolist() == [1, 3, 2] and h.n_events == 6
    assert list(h) == h.users()
    assert repr(h) == "Histories(3 users, 6 events)"
    with pytest.raises(ValueError, match="'item_id'"):
        Histories.from_frame(pd.DataFrame({"user_id": ["a"]}))


def test_unknown_user():
    h = Histories.from_frame(frame())
    with pytest.raises(KeyError, match="nobody"):
        h["nobody"]
    assert len(h.get("nobody")) == 0 and "nobody" not in h
    assert h.get("nobody", ["fallback"]) == ["fallback"]
    assert h.times("nobody") is None
    assert h.remove("nobody") == 0


def test_append_extend_remove():
    h = Histories({"a": ["i1", "i2"]})
    assert h["a"].tolist() == ["i1", "i2"] and h.times("a") is None
    h.append("a", ["i3"])
    h.append("b", ["j1", "j2"], [10.0, 11.0])
    assert h["a"].tolist() == ["i1", "i2", "i3"]
    assert h["b"].tolist() == ["j1", "j2"] and h.times("b").tolist() == [10.0, 11.0]
    h.append("b", ["j3"])                               # no time given: NaN, lengths stay aligned
    assert h["b"].tolist() == ["j1", "j2", "j3"]
    np.testing.assert_array_equal(h.times("b"), [10.0, 11.0, np.nan])
    h.append("a", ["i4"], [9.0])                        # first time for a user without times
    np.testing.assert_array_equal(h.times("a"), [np.nan, np.nan, np.nan, 9.0])
    with pytest.raises(ValueError, match="2 items but 1 timestamps"):
        h.append("a", ["x", "y"], [1.0])
    assert h["a"].tolist() == ["i1", "i2", "i3", "i4"]  # a refused append changes nothing

    added = h.extend(pd.DataFrame({"user_id": ["c", "a", "c"], "item_id": ["k2", "i5", "k1"],
                                   "timestamp": [2.0, 20.0, 1.0]}))
    assert added == {"a": 1, "c": 2}
    assert h["c"].tolist() == ["k1", "k2"] and h["a"][-1] == "i5"
    assert h.remove("a") == 5 and "a" not in h and h.times("a") is None
    assert h.users() == ["b", "c"]


def test_copy_is_independent():
    h = Histories.from_frame(frame())
    c = h.copy()
    c.append("u1", ["new"], [9.0])
    c.append("fresh", ["f"])
    c.remove("u2")
    assert h["u1"].tolist() == ["a", "c", "b"] and h.times("u1").tolist() == [1.0, 5.0, 5.0]
    assert "fresh" not in h and "u2" in h
    assert c["u1"].tolist() == ["a", "c", "b", "new"]


def test_to_frame_round_trip():
    h = Histories.from_frame(frame())
    back = Histories.from_frame(h.to_frame())
    assert back.users() == h.users()
    for u in h:
        assert back[u].tolist() == h[u].tolist()
        assert back.times(u).tolist() == h.times(u).tolist()
    plain = Histories({"a": ["x"], "b": ["y", "z"]}).to_frame()
    assert list(plain.columns) == ["user_id", "item_id"] and plain["item_id"].tolist() == ["x", "y", "z"]
    assert Histories().to_frame().empty


def test_from_sequences_and_from_cases():
    split = cycle_split()
    train = split.train
    h = Histories.from_sequences(train.user_ids, train.item_ids, train.sequences, train.timestamps)
    assert h.users() == [str(u) for u in train.user_ids]
    for u in (0, 7):
        assert h[train.user_ids[u]].tolist() == list(train.item_ids[train.sequences[u]])
        assert h.times(train.user_ids[u]).tolist() == list(train.timestamps[u])
    assert h.n_events == train.n_interactions
    # test cases see the training events plus the validation item
    cases = Histories.from_cases(train, split.test)
    for case, user in enumerate(split.test.users[:5]):
        uid = train.user_ids[user]
        assert cases[uid].tolist() == list(train.item_ids[split.test.histories[case]])
        assert cases[uid].tolist()[:-1] == h[uid].tolist()
        valid_case = list(split.valid.users).index(user)
        assert cases[uid][-1] == train.item_ids[split.valid.targets[valid_case]]
