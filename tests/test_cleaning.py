"""Cleaning steps on small hand-made logs whose answers are worked out by hand."""
from __future__ import annotations

import pytest

from migrec.data import Dataset, clean, deduplicate, k_core, make_catalogue, make_interactions, min_history


def _dataset(rows, catalogue_items="abcdefghxyz", timed=True) -> Dataset:
    users, items, times = zip(*rows)
    inter = make_interactions(users, items, timestamp=times if timed else None)
    cat = make_catalogue(list(catalogue_items), [f"title {i}" for i in catalogue_items])
    return Dataset(inter, cat, "toy")


# u1 repeats a (t=1 and t=3); u4 has d three times; u3 and u4 are one-item users after dedup.
ROWS = [("u1", "a", 1), ("u1", "b", 2), ("u1", "a", 3), ("u1", "c", 4),
        ("u2", "a", 1), ("u2", "b", 2),
        ("u3", "a", 5),
        ("u4", "d", 1), ("u4", "d", 2), ("u4", "d", 3)]


def _triples(dataset):
    inter = dataset.interactions
    return list(zip(inter["user_id"], inter["item_id"], inter["timestamp"].astype(int)))


def test_deduplicate_keeps_latest_or_earliest_in_original_order():
    data = _dataset(ROWS)
    last = deduplicate(data)
    assert _triples(last) == [("u1", "b", 2), ("u1", "a", 3), ("u1", "c", 4), ("u2", "a", 1), ("u2", "b", 2),
                              ("u3", "a", 5), ("u4", "d", 3)]
    first = deduplicate(data, keep="first")
    assert _triples(first) == [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 4), ("u2", "a", 1), ("u2", "b", 2),
                               ("u3", "a", 5), ("u4", "d", 1)]
    assert len(data.interactions) == 10  # the input is untouched


def test_deduplicate_follows_time_not_file_order():
    data = _dataset([("u1", "a", 9), ("u1", "b", 5), ("u1", "a", 2)])
    assert _triples(deduplicate(data)) == [("u1", "a", 9), ("u1", "b", 5)]


def test_deduplicate_order_only_uses_file_order():
    data = _dataset([("u1", "a", 0), ("u1", "b", 0), ("u1", "a", 0)], timed=False)
    kept = deduplicate(data).interactions
    assert kept["item_id"].tolist() == ["b", "a"] and kept["timestamp"].isna().all()


def test_deduplicate_by_event_type():
    inter = make_interactions(["u1", "u1", "u1"], ["a", "a", "a"], event=["click", "buy", "click"],
                              timestamp=[1, 2, 3])
    data = Dataset(inter, make_catalogue(["a"], ["A"]), "toy")
    assert deduplicate(data).interactions["event"].tolist() == ["buy", "click"]
    assert len(deduplicate(data, by_event=False).interactions) == 1


def test_k_core_iterates_to_a_fixed_point():
    # k=2. Round 1 drops item y (1 event) and user u6 (1 event); that leaves u5 with
    # one event on x, and x with one event, so round 2 drops them too. A single
    # pass would have kept u5-x.
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 3), ("u2", "b", 4),
            ("u5", "x", 5), ("u5", "y", 6), ("u6", "x", 7)]
    cored = k_core(_dataset(rows), user_k=2, item_k=2)
    assert _triples(cored) == rows[:4]
    inter = cored.interactions
    assert inter["user_id"].value_counts().min() >= 2 and inter["item_id"].value_counts().min() >= 2
    assert _triples(k_core(cored, 2, 2)) == rows[:4]  # a fixed point: nothing more to remove
    assert len(cored.catalogue) == 11  # catalogue whole: x, y stay as cold items


def test_k_core_separate_thresholds():
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 3)]
    assert _triples(k_core(_dataset(rows), user_k=1, item_k=2)) == [("u1", "a", 1), ("u2", "a", 3)]
    assert _triples(k_core(_dataset(rows), user_k=2, item_k=1)) == [("u1", "a", 1), ("u1", "b", 2)]


def test_min_history():
    data = min_history(_dataset(ROWS), 3)
    assert set(data.interactions["user_id"]) == {"u1", "u4"} and len(data.interactions) == 7


def test_clean_reports_exact_counts_per_step():
    data = _dataset(ROWS)
    cleaned, report = clean(data, dedup=True, user_k=2, item_k=2, min_history=2)
    # dedup: 3 events (u1 a@1, u4 d@1, d@2), no user or item lost
    # k-core: u3 (a@5), u4 (d@3) and item c (u1 c@4) go: 3 events, 2 users, 2 items (c, d)
    # min history 2: nothing left to remove
    steps = [(s.events_removed, s.users_removed, s.items_removed) for s in report.steps]
    assert steps == [(3, 0, 0), (3, 2, 2), (0, 0, 0)]
    assert (report.events_before, report.users_before, report.items_before) == (10, 4, 4)
    assert (report.events_removed, report.users_removed, report.items_removed) == (6, 2, 2)
    assert [(s.events_left, s.users_left, s.items_left) for s in report.steps][-1] == (4, 2, 2)
    assert _triples(cleaned) == [("u1", "b", 2), ("u1", "a", 3), ("u2", "a", 1), ("u2", "b", 2)]
    assert len(cleaned.catalogue) == len(data.catalogue)
    assert cleaned.meta["cleaning"]["steps"][1]["users_removed"] == 2
    text = str(report)
    assert "deduplicate" in text and "k-core" in text and "min history 2" in text
    assert "cleaning" not in data.meta


def test_clean_without_steps_changes_nothing():
    data = _dataset(ROWS)
    cleaned, report = clean(data, dedup=False)
    assert report.steps == [] and len(cleaned.interactions) == 10 and "cleaning" not in data.meta


def test_bad_keep_argument():
    with pytest.raises(ValueError):
        deduplicate(_dataset(ROWS), keep="middle")
