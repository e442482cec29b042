"""The seqrec-benchmark loader on the real folders (counts from their README) and on broken files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from migrec import pipeline
from migrec.data import DataError, load_seqrec
from migrec.data.schema import INTERACTION_COLUMNS

# README of ../shared/data/seqrec-benchmark: users, items, events
README = {"steam_100000": (10_369, 3_593, 126_824), "movielens-1m": (6_040, 3_416, 999_611),
          "amazon2014-beauty": (22_332, 12_086, 198_215), "amazon2014-toy": (19_124, 11_758, 165_247)}


@pytest.fixture(scope="module")
def root(shared_data) -> Path:
    folder = shared_data / "seqrec-benchmark"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


def _counts(ds):
    inter = ds.interactions
    return inter["user_id"].nunique(), len(ds.catalogue), len(inter)


@pytest.mark.parametrize("name", ["steam_100000", "movielens-1m"])
def test_counts_equal_the_readme(root, name):
    ds = pipeline.load_dataset("seqrec", str(root / name))      # as `migrec train --dataset seqrec --path`
    assert _counts(ds) == README[name]
    inter = ds.interactions
    assert list(inter.columns[:len(INTERACTION_COLUMNS)]) == list(INTERACTION_COLUMNS)
    assert inter["timestamp"].notna().all() and inter["rating"].isna().all()
    assert (inter["domain"] == name).all() and inter["item_id"].str.startswith(name + ":").all()
    assert inter["event"].iloc[0] == ("rating" if name == "movielens-1m" else "review")
    # file order kept: grouped by user, each user's events in time order
    same = (inter["user_id"].to_numpy()[1:] == inter["user_id"].to_numpy()[:-1])
    assert (~same).sum() == inter["user_id"].nunique() - 1
    assert (np.diff(inter["timestamp"].to_numpy())[same] >= 0).all()
    assert (ds.catalogue["title"] != "").all()


def test_titles_are_unescaped(root):
    titles = set(load_seqrec(root, "steam_100000").catalogue["title"])
    assert "Command & Conquer: Red Alert 3" in titles
    assert not any("&amp;" in t for t in titles)


def test_several_folders_never_share_an_id(root):
    both = load_seqrec(root / "amazon2014-beauty,amazon2014-toy")
    assert both.name == "seqrec:amazon2014-beauty+amazon2014-toy"
    assert _counts(both) == tuple(np.add(README["amazon2014-beauty"], README["amazon2014-toy"]))
    assert both.domains == ["amazon2014-beauty", "amazon2014-toy"]
    per_domain = both.interactions.groupby("domain")["user_id"].apply(set)
    assert not per_domain["amazon2014-beauty"] & per_domain["amazon2014-toy"]     # different people
    alone = load_seqrec(root, ["amazon2014-toy"])
    assert set(alone.catalogue["item_id"]) <= set(both.catalogue["item_id"])     # one id in every combination
    with pytest.raises(DataError, match="name the data set"):
        load_seqrec(root)


def _write(folder: Path, items: str, events: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "items.tsv").write_text(items)
    (folder / "interactions.tsv").write_text(events)
    return folder


ITEMS = "item_id\ttitle\n100\tA &amp; B\n101\tC\n"


def test_bad_lines_are_named(tmp_path):
    good = _write(tmp_path / "good", ITEMS, "user_id\titem_id\ttimestamp\n100\t100\t5\n100\t101\t6\n")
    ds = load_seqrec(good)
    assert list(ds.interactions["item_id"]) == ["good:100", "good:101"]
    assert list(ds.catalogue["title"]) == ["A & B", "C"]
    cases = [("user_id\titem_id\ttimestamp\n100\t100\t5\n100\tx1\t6\n", 3, "item_id", "integer id"),
             ("user_id\titem_id\ttimestamp\n100\t100\t5\n100\t999\t6\n", 3, "item_id", "not in"),
             ("user_id\titem_id\ttimestamp\n100\t100\tsoon\n", 2, "timestamp", "epoch seconds"),
             ("user_id\titem_id\ttimestamp\n100\t100\t5\n\n100\t101\n", 4, "timestamp", "expected 3 fields"),
             ("user\titem_id\ttimestamp\n100\t100\t5\n", 1, None, "expected the header")]
    for k, (events, line, field, message) in enumerate(cases):
        folder = _write(tmp_path / f"bad{k}", ITEMS, events)
        with pytest.raises(DataError, match=message) as err:
            load_seqrec(folder)
        assert (err.value.file, err.value.line, err.value.field) == \
            (str(folder / "interactions.tsv"), line, field), events
    bad_item = _write(tmp_path / "baditem", "item_id\ttitle\n100\tA\n100\tB\n", "user_id\titem_id\ttimestamp\n")
    with pytest.raises(DataError, match="appears again") as err:
        load_seqrec(bad_item)
    assert (err.value.line, err.value.field) == (3, "item_id")
    skipped = load_seqrec(tmp_path / "bad1", on_bad_lines="skip")
    assert len(skipped.interactions) == 1 and skipped.meta["skipped_lines"][0]["line"] == 3
