"""Chronological splits: leave-one-out and global time cut, on hand-made and real logs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from migrec.data import (Dataset, DataError, global_time_split, leave_one_out, load_movielens_100k, load_unisrec,
                         make_catalogue, make_interactions)


def _dataset(users, items, times=None) -> Dataset:
    cat_items = sorted(set(items))
    return Dataset(make_interactions(users, items, timestamp=times),
                   make_catalogue(cat_items + ["cold"], [f"t{i}" for i in cat_items] + ["cold item"]), "toy")


def _raw(split, seq) -> list[str]:
    return [str(split.train.item_ids[i]) for i in seq]


# File order is deliberately not time order, and the users are interleaved.
USERS = ["u1", "u2", "u1", "u1", "u2", "u1", "u2", "u3", "u3"]
ITEMS = ["c", "x", "a", "d", "y", "b", "z", "a", "b"]
TIMES = [30, 12, 10, 40, 11, 20, 13, 1, 2]


def test_leave_one_out_last_is_test_second_last_is_valid():
    split = leave_one_out(_dataset(USERS, ITEMS, TIMES))
    users = list(split.train.user_ids)
    assert users == ["u1", "u2"]  # u3 has only 2 events
    assert "left out: 1" in split.protocol
    u1, u2 = users.index("u1"), users.index("u2")
    assert _raw(split, split.train.sequences[u1]) == ["a", "b"]  # times 10, 20
    assert _raw(split, split.valid.targets[u1]) == ["c"] and _raw(split, split.test.targets[u1]) == ["d"]
    assert _raw(split, split.train.sequences[u2]) == ["y"]
    assert _raw(split, split.valid.targets[u2]) == ["x"] and _raw(split, split.test.targets[u2]) == ["z"]
    # no future leak: every training event is strictly before the user's valid event
    valid_time = {"u1": 30, "u2": 12}
    for u, name in enumerate(users):
        assert (split.train.timestamps[u] < valid_time[name]).all()
    # histories: valid sees train; test sees train + the valid item
    for u in range(len(users)):
        assert list(split.valid.histories[u]) == list(split.train.sequences[u])
        assert list(split.test.histories[u]) == list(split.train.sequences[u]) + list(split.valid.targets[u])
    assert split.train.n_items == 8  # the item universe is the catalogue: 7 logged + 1 cold


def test_leave_one_out_order_only_keeps_file_order():
    split = leave_one_out(_dataset(USERS, ITEMS))  # same rows, no timestamps
    u1 = list(split.train.user_ids).index("u1")
    assert _raw(split, split.train.sequences[u1]) == ["c", "a"]
    assert _raw(split, split.valid.targets[u1]) == ["d"] and _raw(split, split.test.targets[u1]) == ["b"]


def test_global_time_split_no_training_event_after_the_cut():
    rng = np.random.default_rng(0)
    n = 400
    users = [f"u{i}" for i in rng.integers(0, 30, n)]
    items = [f"i{i}" for i in rng.integers(0, 50, n)]
    times = rng.permutation(n).astype(float) * 10
    data = _dataset(users, items, times)
    split = global_time_split(data, valid_frac=0.1, test_frac=0.1)
    t_valid, t_test = np.quantile(times, [0.8, 0.9])
    train_times = np.concatenate(split.train.timestamps)
    assert len(train_times) == int((times < t_valid).sum()) and (train_times < t_valid).all()
    log = pd.DataFrame({"user": users, "item": items, "t": times})
    item_ids, user_ids = split.train.item_ids, split.train.user_ids
    for case, (lo, hi) in ((split.valid, (t_valid, t_test)), (split.test, (t_test, np.inf))):
        assert len(case) > 0
        for u, hist, targ in zip(case.users, case.histories, case.targets):
            mine = log[log["user"] == user_ids[u]]
            window = mine[(mine["t"] >= lo) & (mine["t"] < hi)]
            assert sorted(item_ids[targ]) == sorted(window["item"].unique())  # targets = the window's items
            assert len(hist) == int((mine["t"] < lo).sum())  # history = everything before the cut


def test_global_time_split_needs_timestamps():
    with pytest.raises(DataError, match="timestamp"):
        global_time_split(_dataset(USERS, ITEMS))


# -- real data ---------------------------------------------------------------------------
def _folder(shared_data: Path, name: str) -> Path:
    folder = shared_data / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


def test_leave_one_out_movielens_100k(shared_data):
    data = load_movielens_100k(_folder(shared_data, "ml-100k"))
    split = leave_one_out(data)
    assert split.train.n_users == 943 and split.train.n_interactions == 100_000 - 2 * 943
    chrono = data.chronological()  # user, then time, ties in file order
    last_two = chrono.groupby("user_id", sort=True).tail(2)
    index = split.train.item_index()
    second_last = last_two.groupby("user_id").nth(0).set_index("user_id")
    last = last_two.groupby("user_id").nth(1).set_index("user_id")
    for u, name in enumerate(split.train.user_ids):
        assert split.test.targets[u][0] == index[last.loc[name, "item_id"]]
        assert split.valid.targets[u][0] == index[second_last.loc[name, "item_id"]]
        assert split.train.timestamps[u].max() <= second_last.loc[name, "timestamp"]  # ties allowed, no later
        assert np.array_equal(split.test.histories[u], np.append(split.train.sequences[u], split.valid.targets[u]))


def test_leave_one_out_matches_unisrec_files(shared_data):
    """Order-only data: the last two events in file order are UniSRec's own valid/test targets."""
    folder = _folder(shared_data, "amazon-scientific-unisrec")
    split = leave_one_out(load_unisrec(folder, "Scientific"))
    users = pd.read_csv(folder / "Scientific.user2index", sep="\t", header=None, dtype=str, names=["raw", "idx"])
    items = pd.read_csv(folder / "Scientific.item2index", sep="\t", header=None, dtype=str, names=["raw", "idx"])
    user_raw = dict(zip(users["idx"], users["raw"]))
    item_raw = dict(zip(items["idx"], items["raw"]))
    pos = split.train.user_index()
    for part, case in (("valid", split.valid), ("test", split.test)):
        inter = pd.read_csv(folder / f"Scientific.{part}.inter", sep="\t", dtype=str)
        assert len(inter) == len(case) == 8442
        for user, target in zip(inter["user_id:token"], inter["item_id:token"]):
            u = pos[user_raw[user]]
            assert split.train.item_ids[case.targets[u][0]] == item_raw[target]


def test_csr_counts_each_users_training_events():
    from migrec.data.split import TrainSet

    seqs = [np.array([2, 0, 2, 2]), np.array([], dtype=np.int64), np.array([1, 3])]
    train = TrainSet(np.array(["a", "b", "c"], dtype=object), np.array(["i0", "i1", "i2", "i3"], dtype=object),
                     seqs, pd.DataFrame({"item_id": ["i0", "i1", "i2", "i3"]}))
    counts = train.csr(binary=False)
    np.testing.assert_array_equal(counts.toarray(), [[1, 0, 3, 0], [0, 0, 0, 0], [0, 1, 0, 1]])
    binary = train.csr(binary=True)
    np.testing.assert_array_equal(binary.toarray(), [[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 1]])
    assert binary.dtype == np.float32 and binary.has_sorted_indices and binary.indices.dtype == np.int32
