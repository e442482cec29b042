"""`s3://` end to end, on loopback: a real S3 HTTP endpoint (moto's ThreadedMotoServer on 127.0.0.1)
read and written through s3fs with `storage_options`. The out-of-core preparation of a hive-partitioned
log on S3 must write exactly what the same preparation of a local copy writes; `load_table`, the
Dataset Parquet round trip and the prepared layout work on S3; a missing object or bucket is a
DataError naming the URL.

Needs the test extras `moto[server]` and `s3fs`; without them the module skips (fails under CI=true)."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from migrec.data import Dataset, load_movielens_100k, load_table
from migrec.data.prepare import prepare, read_prepared, read_prepared_frames
from migrec.data.schema import DataError


def _need(module: str):
    if os.environ.get("CI", "").lower() == "true":
        return __import__(module, fromlist=["_"])  # a missing test dependency fails under CI
    return pytest.importorskip(module)


_need("s3fs")
moto_server = _need("moto.server")

BUCKET = "migrec-test"
PREP = dict(user_k=5, item_k=5, min_history=3)


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free loopback port, one bucket; yields the storage_options to reach it."""
    import s3fs

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    options = {"endpoint_url": f"http://{host}:{port}", "key": "migrec-key", "secret": "migrec-secret"}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(BUCKET)
    try:
        yield {"options": options, "fs": fs}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ml100k_on_s3(s3, shared_data, tmp_path_factory):
    """ML-100K written to s3://BUCKET/log/ as a Parquet dataset partitioned by month (month=1997-09/...),
    with repeats so de-duplication has work; the catalogue as s3://BUCKET/items.parquet; and a local
    copy of exactly those objects."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ds = load_movielens_100k(shared_data / "ml-100k")
    inter = ds.interactions
    rng = np.random.default_rng(1)
    again = inter.iloc[rng.choice(len(inter), 300, replace=False)].copy()
    again["timestamp"] += rng.integers(-2_000_000, 2_000_000, len(again))
    log = pd.concat([inter, again], ignore_index=True).iloc[rng.permutation(len(inter) + len(again))]
    log = log[["user_id", "item_id", "event", "timestamp"]].reset_index(drop=True)
    log["month"] = pd.to_datetime(log["timestamp"], unit="s").dt.strftime("%Y-%m")
    fs = s3["fs"]
    pq.write_to_dataset(pa.Table.from_pandas(log, preserve_index=False), f"{BUCKET}/log",
                        partition_cols=["month"], filesystem=fs, basename_template="part-{i}.parquet")
    with fs.open(f"{BUCKET}/items.parquet", "wb") as fh:
        ds.catalogue.to_parquet(fh, index=False)
    local = tmp_path_factory.mktemp("s3copy")
    fs.get(f"{BUCKET}/log", str(local / "log"), recursive=True)
    fs.get(f"{BUCKET}/items.parquet", str(local / "items.parquet"))
    return {"log": log, "catalogue": ds.catalogue, "local": local}


def _frames(path, options=None) -> dict:
    return read_prepared_frames(path, storage_options=options)


def test_the_log_on_s3_is_hive_partitioned_by_month(s3, ml100k_on_s3):
    months = sorted(ml100k_on_s3["log"]["month"].unique())
    keys = s3["fs"].find(f"{BUCKET}/log")
    assert len(months) == 8  # ML-100K: 1997-09 .. 1998-04
    assert sorted({k.split("/")[2] for k in keys}) == [f"month={m}" for m in months]
    assert len(list((ml100k_on_s3["local"] / "log").rglob("*.parquet"))) == len(keys)


def test_prepare_from_s3_to_s3_equals_the_local_preparation(s3, ml100k_on_s3, tmp_path):
    options, fs = s3["options"], s3["fs"]
    local = ml100k_on_s3["local"]
    # small buckets, so the log is spread over several of them as a large one would be
    got = prepare(f"s3://{BUCKET}/log/", f"s3://{BUCKET}/prepared/", catalogue=f"s3://{BUCKET}/items.parquet",
                  storage_options=options, bucket_events=30_000, batch_rows=20_000, **PREP)
    want = prepare(str(local / "log"), str(tmp_path / "prepared"), catalogue=str(local / "items.parquet"),
                   bucket_events=30_000, batch_rows=20_000, **PREP)
    assert got.buckets == want.buckets >= 3
    assert got.events == want.events and got.users == want.users and got.items == want.items == 1682
    assert got.report.steps[0].events_removed > 0  # the repeats were de-duplicated
    assert got.split_counts == want.split_counts
    assert got.report.as_dict() == want.report.as_dict()

    # the same files, and every table equal row for row
    s3_files = sorted(k.removeprefix(f"{BUCKET}/prepared/") for k in fs.find(f"{BUCKET}/prepared"))
    local_files = sorted(p.relative_to(tmp_path / "prepared").as_posix()
                         for p in (tmp_path / "prepared").rglob("*") if p.is_file())
    assert s3_files == local_files
    assert "manifest.json" in s3_files and sum(f.startswith("events/part-") for f in s3_files) == got.buckets
    for name in s3_files:
        if name.endswith(".parquet"):
            with fs.open(f"{BUCKET}/prepared/{name}", "rb") as fh:
                pd.testing.assert_frame_equal(pd.read_parquet(fh), pd.read_parquet(tmp_path / "prepared" / name))
    a, b = _frames(f"s3://{BUCKET}/prepared", options), _frames(str(tmp_path / "prepared"))
    for table in ("events", "users", "items"):
        pd.testing.assert_frame_equal(a[table], b[table])
    with fs.open(f"{BUCKET}/prepared/manifest.json") as fh:
        manifest = json.load(fh)
    assert manifest["source"] == f"s3://{BUCKET}/log/"
    assert manifest["events"] == got.events and manifest["cleaning"] == got.report.as_dict()

    # and read back from S3 as the Split models train on
    split = read_prepared(f"s3://{BUCKET}/prepared/", storage_options=options)
    assert len(split.train.user_ids) == got.users and len(split.train.item_ids) == 1682
    assert sum(len(s) for s in split.train.sequences) == got.split_counts["train"]


def _assert_prepared_like_local(url, options, ml100k_on_s3, tmp_path) -> None:
    """The command line's S3 output equals the same preparation of the local copy, table for table."""
    local = ml100k_on_s3["local"]
    prepare(str(local / "log"), str(tmp_path / "p"), catalogue=str(local / "items.parquet"), **PREP)
    a, b = _frames(url, options), _frames(str(tmp_path / "p"))
    for table in ("events", "users", "items"):
        pd.testing.assert_frame_equal(a[table], b[table])


def test_prepare_reads_s3_settings_from_the_environment_through_the_command_line(s3, ml100k_on_s3, tmp_path,
                                                                                  monkeypatch, capsys):
    """Without --storage-option flags, s3fs (botocore) takes the endpoint and keys from AWS_*."""
    import s3fs

    from migrec.cli import main

    options = s3["options"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", options["endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", options["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", options["secret"])
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        main(["prepare", "--engine", "polars", "--path", f"s3://{BUCKET}/log/", "--catalogue",
              f"s3://{BUCKET}/items.parquet", "--user-k", "5", "--item-k", "5", "--out", f"s3://{BUCKET}/cli/"])
    finally:
        s3fs.S3FileSystem.clear_instance_cache()  # no env-configured instance outlives this test
    assert "split:" in capsys.readouterr().out
    _assert_prepared_like_local(f"s3://{BUCKET}/cli", options, ml100k_on_s3, tmp_path)


def test_prepare_takes_storage_options_on_the_command_line(s3, ml100k_on_s3, tmp_path, capsys):
    from migrec.cli import main

    options = s3["options"]
    flags = [x for k in ("endpoint_url", "key", "secret") for x in ("--storage-option", f"{k}={options[k]}")]
    main(["prepare", "--engine", "polars", "--path", f"s3://{BUCKET}/log/", "--catalogue",
          f"s3://{BUCKET}/items.parquet", "--user-k", "5", "--item-k", "5", "--out", f"s3://{BUCKET}/cli-flags/",
          *flags])
    assert "split:" in capsys.readouterr().out
    _assert_prepared_like_local(f"s3://{BUCKET}/cli-flags", options, ml100k_on_s3, tmp_path)
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        main(["prepare", "--engine", "polars", "--path", f"s3://{BUCKET}/log/", "--out", str(tmp_path / "x"),
              "--storage-option", "endpoint_url"])


def test_load_table_reads_csv_and_parquet_from_s3(s3, tmp_path):
    options, fs = s3["options"], s3["fs"]
    log = pd.DataFrame({"uid": ["u1", "u1", "u2", "u2", "u3"], "movie": ["10", "20", "20", "30", "10"],
                        "ts": [5.0, 7.0, 1.0, 9.0, 3.0], "stars": [4.0, 5.0, 3.0, 1.0, 2.0]})
    items = pd.DataFrame({"item_id": ["10", "20", "30", "40"], "title": ["Ten", "Twenty", "Thirty", "Forty"],
                          "genre": ["a", "b", "a", "c"]})
    log.to_csv(tmp_path / "log.csv", index=False)
    items.to_csv(tmp_path / "items.csv", index=False)
    log.to_parquet(tmp_path / "log.parquet", index=False)
    for name in ("log.csv", "items.csv", "log.parquet"):
        fs.put(str(tmp_path / name), f"{BUCKET}/tables/{name}")
    columns = {"user_id": "uid", "item_id": "movie", "timestamp": "ts", "rating": "stars"}
    for name in ("log.csv", "log.parquet"):
        got = load_table(f"s3://{BUCKET}/tables/{name}", columns, catalogue=f"s3://{BUCKET}/tables/items.csv",
                         storage_options=options)
        want = load_table(str(tmp_path / name), columns, catalogue=str(tmp_path / "items.csv"))
        pd.testing.assert_frame_equal(got.interactions, want.interactions)
        pd.testing.assert_frame_equal(got.catalogue, want.catalogue)
        assert got.interactions["user_id"].tolist() == ["u1", "u1", "u2", "u2", "u3"]
        assert got.interactions["rating"].tolist() == [4.0, 5.0, 3.0, 1.0, 2.0]
        assert got.catalogue["title"].tolist() == ["Ten", "Twenty", "Thirty", "Forty"]
        assert got.meta["source"] == f"s3://{BUCKET}/tables/{name}"
    # the schema's own column names need no mapping (read from the S3 object's header)
    plain = log.rename(columns={"uid": "user_id", "movie": "item_id"})[["user_id", "item_id"]]
    with fs.open(f"{BUCKET}/tables/plain.csv", "w") as fh:
        plain.to_csv(fh, index=False)
    got = load_table(f"s3://{BUCKET}/tables/plain.csv", storage_options=options)
    assert got.interactions["item_id"].tolist() == ["10", "20", "20", "30", "10"]
    assert got.catalogue["item_id"].tolist() == ["10", "20", "30"]


def test_dataset_parquet_round_trip_on_s3(s3, shared_data):
    options, fs = s3["options"], s3["fs"]
    ds = load_movielens_100k(shared_data / "ml-100k")
    ds.to_parquet(f"s3://{BUCKET}/datasets/ml-100k", storage_options=options)
    assert sorted(fs.ls(f"{BUCKET}/datasets/ml-100k")) == [f"{BUCKET}/datasets/ml-100k/catalogue.parquet",
                                                           f"{BUCKET}/datasets/ml-100k/interactions.parquet"]
    back = Dataset.from_parquet(f"s3://{BUCKET}/datasets/ml-100k", storage_options=options)
    assert back.name == "ml-100k"
    pd.testing.assert_frame_equal(back.interactions, ds.interactions)
    pd.testing.assert_frame_equal(back.catalogue, ds.catalogue)
    assert len(back.interactions) == 100_000


def test_missing_objects_and_buckets_are_errors_naming_the_url(s3, ml100k_on_s3, tmp_path):
    options = s3["options"]
    missing = [
        lambda url: prepare(url, str(tmp_path / "out"), storage_options=options),
        lambda url: read_prepared(url, storage_options=options),
        lambda url: Dataset.from_parquet(url, storage_options=options),
    ]
    for url in (f"s3://{BUCKET}/no-such-log/", "s3://no-such-bucket-migrec/log/"):
        for call in missing:
            with pytest.raises(DataError) as err:
                call(url)
            assert url.rstrip("/") in str(err.value)
    for url in (f"s3://{BUCKET}/nope.csv", f"s3://{BUCKET}/nope.parquet", "s3://no-such-bucket-migrec/log.csv"):
        with pytest.raises(DataError, match="file not found") as err:
            load_table(url, {"user_id": "u", "item_id": "i"}, storage_options=options)
        assert err.value.file == url
        with pytest.raises(DataError, match="file not found") as err:  # columns read from the header first
            load_table(url, storage_options=options)
        assert err.value.file == url
    with pytest.raises(DataError, match="no such file") as err:
        prepare(f"s3://{BUCKET}/log/", str(tmp_path / "out"), catalogue=f"s3://{BUCKET}/no-items.parquet",
                storage_options=options)
    assert err.value.file == f"s3://{BUCKET}/no-items.parquet"
