"""Preparation at scale: the out-of-core Polars path and the Spark path agree with the in-memory
path (`clean` + `leave_one_out`) on real data, event for event."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from migrec.data import Dataset, clean, leave_one_out, load_movielens_1m
from migrec.data.prepare import (EVENT_COLUMNS, prepare, read_catalogue, read_prepared, read_prepared_frames,
                                 write_log)
from migrec.data.schema import DataError

KCORE = dict(user_k=5, item_k=5, min_history=3)


@pytest.fixture(scope="module")
def ml1m_log(shared_data, tmp_path_factory):
    """ML-1M users 1..2999, cut to users 1..600, with repeats added so de-duplication has work:
    the same (user, item) again later, an exact copy, and some events with no timestamp."""
    ds = load_movielens_1m(shared_data / "ml-1m")
    inter = ds.interactions[ds.interactions["user_id"].astype(int) <= 600].reset_index(drop=True)
    rng = np.random.default_rng(0)
    again = inter.iloc[rng.choice(len(inter), 400, replace=False)].copy()
    again["timestamp"] += rng.integers(-5_000_000, 5_000_000, len(again))  # earlier or later
    exact = inter.iloc[rng.choice(len(inter), 200, replace=False)].copy()
    untimed = inter.iloc[rng.choice(len(inter), 100, replace=False)].copy()
    untimed["timestamp"] = np.nan
    log = pd.concat([inter, again, exact, untimed], ignore_index=True)
    log = log.iloc[rng.permutation(len(log))].reset_index(drop=True)  # file order matters for ties
    folder = tmp_path_factory.mktemp("log")
    write_log(log, str(folder / "log"), files=3)
    cat_path = folder / "catalogue.parquet"
    ds.catalogue.to_parquet(cat_path, index=False)
    return {"log": log, "catalogue": ds.catalogue, "path": str(folder / "log"), "cat_path": str(cat_path),
            "root": folder}


def _in_memory(ml1m_log, **kw):
    data = Dataset(ml1m_log["log"], ml1m_log["catalogue"], "ml1m")
    cleaned, report = clean(data, **kw)
    return leave_one_out(cleaned), report


def _per_user(split):
    """raw user -> (train items, valid item, test item) as raw ids."""
    items, users = split.train.item_ids, split.train.user_ids
    out = {}
    for u, seq in enumerate(split.train.sequences):
        out[users[u]] = (tuple(items[seq]), tuple(items[split.valid.targets[u]]), tuple(items[split.test.targets[u]]))
    return out


@pytest.fixture(scope="module")
def polars_out(ml1m_log, tmp_path_factory):
    out = tmp_path_factory.mktemp("polars") / "prepared"
    # small buckets: the log is spread over several of them, as a large log would be
    result = prepare(ml1m_log["path"], str(out), catalogue=ml1m_log["cat_path"], bucket_events=30_000,
                     batch_rows=20_000, **KCORE)
    return out, result


def test_polars_agrees_with_the_in_memory_path(ml1m_log, polars_out):
    out, result = polars_out
    assert result.buckets >= 3
    expected, report = _in_memory(ml1m_log, **KCORE)
    got = read_prepared(str(out))
    # same users (and codes: sorted id order), same item universe in catalogue order
    assert list(got.train.user_ids) == list(expected.train.user_ids)
    assert list(got.train.item_ids) == list(expected.train.item_ids)
    assert _per_user(got) == _per_user(expected)
    # timestamps travel with the events
    for a, b in zip(got.train.timestamps[:50], expected.train.timestamps[:50]):
        np.testing.assert_array_equal(a, b)
    # the same cleaning counts, step by step
    assert [s.events_left for s in result.report.steps] == [s.events_left for s in report.steps]
    assert [s.users_left for s in result.report.steps] == [s.users_left for s in report.steps]
    assert [s.items_left for s in result.report.steps] == [s.items_left for s in report.steps]
    assert result.report.steps[0].events_removed == 700  # every added row repeats a (user, item)
    assert result.events == expected.train.n_interactions + 2 * len(expected.train.user_ids)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split_counts"]["test"] == len(expected.train.user_ids)


def test_polars_without_catalogue_or_cleaning_codes_items_by_first_appearance(ml1m_log, tmp_path):
    log = ml1m_log["log"]
    result = prepare(ml1m_log["path"], str(tmp_path / "p"), dedup=False, min_history=0)
    frames = read_prepared_frames(str(tmp_path / "p"))
    first_seen = list(dict.fromkeys(log["item_id"]))
    assert frames["items"]["item_id"].tolist() == first_seen
    assert result.events == len(log)  # no cleaning, and every ML-1M user has >= 20 events
    counts = frames["events"].groupby("split").size()
    assert counts["test"] == counts["valid"] == len(frames["users"]) == log["user_id"].nunique()
    assert list(frames["events"].columns) == EVENT_COLUMNS


def test_bad_input_is_named(ml1m_log, tmp_path):
    with pytest.raises(DataError, match="no Parquet files"):
        prepare(str(tmp_path), str(tmp_path / "out"))
    small = ml1m_log["catalogue"].iloc[:100]
    small.to_parquet(tmp_path / "cat.parquet", index=False)
    with pytest.raises(DataError, match="not in the catalogue"):
        prepare(ml1m_log["path"], str(tmp_path / "out"), catalogue=str(tmp_path / "cat.parquet"))
    with pytest.raises(DataError, match="missing column 'uid'"):
        prepare(ml1m_log["path"], str(tmp_path / "out"), columns={"user_id": "uid", "item_id": "item_id"})
    with pytest.raises(ValueError, match="unknown engine"):
        prepare(ml1m_log["path"], str(tmp_path / "out"), engine="dask")
    assert read_catalogue(str(tmp_path / "cat.parquet"))["item_id"].tolist() == small["item_id"].tolist()


# -- Spark (local[2]): one session for the module ---------------------------------------------------
@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    from migrec.data.spark import spark_session

    session = spark_session("local[2]", shuffle_partitions=2)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _sorted(frame: pd.DataFrame, by) -> pd.DataFrame:
    return frame.sort_values(by).reset_index(drop=True)


def test_spark_writes_the_same_parquet_as_polars(ml1m_log, polars_out, spark, tmp_path):
    out, polars_result = polars_out
    result = prepare(ml1m_log["path"], str(tmp_path / "spark"), engine="spark", spark=spark,
                     catalogue=ml1m_log["cat_path"], **KCORE)
    a, b = read_prepared_frames(str(out)), read_prepared_frames(str(tmp_path / "spark"))
    for name, key in (("events", ["user_code", "position"]), ("users", ["user_code"]), ("items", ["item_code"])):
        pd.testing.assert_frame_equal(_sorted(a[name], key), _sorted(b[name], key), check_dtype=True)
    assert len(a["events"]) == result.events == polars_result.events > 80_000
    assert result.report.as_dict()["steps"] == polars_result.report.as_dict()["steps"]
    assert result.split_counts == polars_result.split_counts


def test_spark_without_catalogue_matches_polars(ml1m_log, spark, tmp_path):
    prepare(ml1m_log["path"], str(tmp_path / "p"), dedup=True, keep="first", min_history=0)
    prepare(ml1m_log["path"], str(tmp_path / "s"), engine="spark", spark=spark, keep="first", min_history=0)
    a, b = read_prepared_frames(str(tmp_path / "p")), read_prepared_frames(str(tmp_path / "s"))
    for name, key in (("events", ["user_code", "position"]), ("users", ["user_code"]), ("items", ["item_code"])):
        pd.testing.assert_frame_equal(_sorted(a[name], key), _sorted(b[name], key))


# -- encoding a large catalogue: batched, and an interrupted run resumes ------------------------------
def test_interrupted_catalogue_encoding_resumes_from_the_cache(shared_data, tmp_path):
    from migrec.encoders import CachedEncoder, HashingEncoder, ItemTextTemplate, encode_catalogue

    items = pd.read_csv(shared_data / "seqrec-benchmark" / "amazon2014-beauty" / "items.tsv", sep="\t",
                        quoting=3, dtype=str, keep_default_na=False).head(3000)
    catalogue = pd.DataFrame({"item_id": items["item_id"], "domain": "beauty", "title": items["title"]})

    class Flaky(HashingEncoder):
        """Fails on its third batch, as a killed or crashed run would."""
        calls = 0

        def _encode(self, texts):
            Flaky.calls += 1
            if Flaky.calls == 3:
                raise RuntimeError("interrupted")
            return super()._encode(texts)

    flaky = CachedEncoder(Flaky(dim=64), tmp_path, chunk_size=500, show_progress=False)
    with pytest.raises(RuntimeError, match="interrupted"):
        encode_catalogue(catalogue, flaky)
    stored = flaky.cache.count(flaky.model_id)
    assert stored == 1000  # the two finished batches were written as they were made
    again = CachedEncoder(HashingEncoder(dim=64), tmp_path, chunk_size=500, show_progress=False)
    vectors = encode_catalogue(catalogue, again)
    texts = ItemTextTemplate().render(catalogue)
    assert again.last_hits == 1000 and again.last_encoded == len(set(texts)) - 1000 > 1500
    np.testing.assert_allclose(vectors, HashingEncoder(dim=64).encode(texts), atol=1e-6)
