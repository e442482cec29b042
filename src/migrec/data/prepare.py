"""Data preparation at scale: a partitioned Parquet log in, a prepared Parquet layout out.

The same steps as the in-memory path (`clean` then `leave_one_out`), run out of core:

1. ingest   the log (a Parquet file or a folder of Parquet files, hive partitions allowed; a local
            path or any fsspec URL: s3://, hdfs://, gs://, ...) is read through pyarrow in record
            batches, each event tagged with its place in the log (files in path order, rows in file
            order) and hash-partitioned by user into buckets of about `bucket_events` events on a
            local scratch folder;
2. dedup    one event per (user, item, event type): the latest (timestamp, then log order);
3. k-core   users with < user_k events and items with < item_k events dropped, repeated until
            neither rule removes anything (item counts are global, user counts bucket-local);
4. min history  users with fewer than max(min_history, 3) events dropped;
5. coding   user codes = rank of the user id in sorted order (as `leave_one_out`), item codes =
            position in the catalogue (catalogue order; without a catalogue, order of first
            appearance in the log, as `load_table`'s minimal catalogue);
6. split    chronological leave-one-out: each user's last event is "test", the second-last "valid",
            the rest "train" (ties and missing timestamps keep log order).

Memory is bounded by one bucket plus the per-user and per-item tables (codes and counts), not by
the log: every pass over the events reads one bucket at a time, and the global passes (item counts,
the sorted user list) run on Polars' streaming engine.

Output (the "prepared" layout, also written by `migrec.data.spark.prepare_spark`):

    OUT/events/part-NNNNN.parquet   user_code int64, item_code int64, timestamp float64 (null when
                                    unknown), position int64 (0-based place in the user's history),
                                    split string ("train" | "valid" | "test"); every user's events lie
                                    in one file, sorted by (user_code, position)
    OUT/users.parquet               user_code int64, user_id string (sorted by user_code)
    OUT/items.parquet               item_code int64, item_id string, then the catalogue's other
                                    columns (sorted by item_code; the whole catalogue, so items that
                                    lost their events stay as cold items)
    OUT/manifest.json               engine, parameters, counts and the cleaning report

`read_prepared(OUT)` turns the layout back into a `Split` (the in-memory form models train on).
"""
from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from .layout import (USER_CODE, ITEM_CODE, POSITION, SPLIT, EVENT_COLUMNS, EVENTS_DIR, USERS_FILE, ITEMS_FILE, MANIFEST_FILE, ENGINES, DEFAULT_EVENT, ROW, PrepareOptions, PrepareResult, filesystem, log_dataset, log_mapping, read_catalogue, items_table, write_frame, report_from_sizes, write_manifest, clear_output)
from .schema import ITEM, TIME, USER, EVENT, DataError
from .split import EvalSet, Split, TrainSet

# -- the single-machine engine (Polars) ------------------------------------------------------------
class _Buckets:
    """Events hash-partitioned by user on a local scratch folder; one Parquet file per bucket."""

    def __init__(self, folder: Path, n: int):
        self.folder, self.n = folder, n
        for b in range(n):
            (folder / f"b{b:05d}").mkdir(parents=True, exist_ok=True)

    def parts(self, b: int) -> list[Path]:
        return sorted((self.folder / f"b{b:05d}").glob("*.parquet"))

    def read(self, b: int):
        import polars as pl

        parts = self.parts(b)
        if not parts:
            return None
        return pl.concat([pl.read_parquet(p) for p in parts], how="vertical")

    def replace(self, b: int, frame) -> None:
        for p in self.parts(b):
            p.unlink()
        if frame is not None and frame.height:
            frame.write_parquet(self.folder / f"b{b:05d}" / "all.parquet")

    def scan(self):
        import polars as pl

        files = [str(p) for b in range(self.n) for p in self.parts(b)]
        return pl.scan_parquet(files) if files else None


def _ingest(dataset, mapping: dict, buckets: _Buckets, batch_rows: int, where: str) -> int:
    """Read the log batch by batch into user-hashed buckets; returns the number of events."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.compute as pc

    sources = list(dict.fromkeys(mapping.values()))
    offset, chunk = 0, 0
    for batch in dataset.to_batches(columns=sources, batch_size=batch_rows, use_threads=True):
        n = batch.num_rows
        if not n:
            continue
        cols = {}
        for role in (USER, ITEM, EVENT):
            if role in mapping:
                arr = batch.column(mapping[role])
                if arr.null_count:
                    raise DataError(f"{arr.null_count} empty values", file=where, field=mapping[role])
                cols[role] = arr.cast(pa.string())
        if TIME in mapping:
            arr = batch.column(mapping[TIME])
            if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
                arr = arr.cast(pa.timestamp("us")).cast(pa.int64())
                arr = pc.divide(arr.cast(pa.float64()), 1e6)
            elif not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
                raise DataError(f"timestamps must be numbers (epoch seconds) or Parquet timestamps, not {arr.type}",
                                file=where, field=mapping[TIME])
            cols[TIME] = arr.cast(pa.float64())
        frame = pl.from_arrow(pa.table(cols))
        if TIME not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias(TIME))
        if EVENT not in frame.columns:
            frame = frame.with_columns(pl.lit(DEFAULT_EVENT).alias(EVENT))
        frame = frame.with_columns(
            pl.col(TIME).fill_nan(None),
            (pl.int_range(n, dtype=pl.Int64) + offset).alias(ROW),
            (pl.col(USER).hash(seed=17) % buckets.n).cast(pl.Int32).alias("_bucket"),
        ).select(USER, ITEM, EVENT, TIME, ROW, "_bucket")
        for (b,), part in frame.partition_by("_bucket", as_dict=True).items():
            part.drop("_bucket").write_parquet(buckets.folder / f"b{b:05d}" / f"c{chunk:07d}.parquet")
        offset += n
        chunk += 1
    return offset


def _order_key():
    """Chronological key: missing timestamps first (-inf), then log order."""
    import polars as pl

    return pl.col(TIME).fill_null(-math.inf)


def _sizes(buckets: _Buckets) -> tuple[int, int, int]:
    import polars as pl

    lf = buckets.scan()
    if lf is None:
        return 0, 0, 0
    # users live in one bucket each, so counting unique ids over the whole scan is exact
    got = lf.select(pl.len().alias("e"), pl.col(USER).n_unique().alias("u"),
                    pl.col(ITEM).n_unique().alias("i")).collect(engine="streaming")
    return int(got["e"][0]), int(got["u"][0]), int(got["i"][0])


def _item_counts(buckets: _Buckets):
    import polars as pl

    lf = buckets.scan()
    if lf is None:
        return pl.DataFrame({ITEM: [], "_n": []}, schema={ITEM: pl.String, "_n": pl.UInt32})
    return lf.group_by(ITEM).agg(pl.len().alias("_n")).collect(engine="streaming")


def _dedup(buckets: _Buckets, keep: str) -> None:
    for b in range(buckets.n):
        frame = buckets.read(b)
        if frame is None:
            continue
        frame = (frame.with_columns(_order_key().alias("_t")).sort(["_t", ROW])
                 .unique(subset=[USER, ITEM, EVENT], keep=keep, maintain_order=True)
                 .drop("_t").sort(ROW))
        buckets.replace(b, frame)


def _k_core(buckets: _Buckets, user_k: int, item_k: int) -> int:
    """Iterate to the fixed point; returns the number of rounds."""
    import polars as pl

    rounds = 0
    while True:
        rounds += 1
        counts = _item_counts(buckets)
        removed = 0
        for b in range(buckets.n):
            frame = buckets.read(b)
            if frame is None:
                continue
            kept = (frame.join(counts, on=ITEM, how="left", maintain_order="left")
                    .filter((pl.len().over(USER) >= user_k) & (pl.col("_n") >= item_k)).drop("_n"))
            if kept.height < frame.height:
                removed += frame.height - kept.height
                buckets.replace(b, kept)
        if not removed:
            return rounds


def _min_history(buckets: _Buckets, n: int) -> None:
    import polars as pl

    for b in range(buckets.n):
        frame = buckets.read(b)
        if frame is None:
            continue
        kept = frame.filter(pl.len().over(USER) >= n)
        if kept.height < frame.height:
            buckets.replace(b, kept)


def _item_codes(catalogue: pd.DataFrame | None, buckets: _Buckets, where: str):
    """item_id -> item_code (polars frame) and the catalogue to write, checked against the log."""
    import polars as pl

    lf = buckets.scan()
    if catalogue is None:
        if lf is None:
            firsts = pl.DataFrame({ITEM: []}, schema={ITEM: pl.String})
        else:
            firsts = (lf.group_by(ITEM).agg(pl.col(ROW).min()).sort(ROW).select(ITEM)
                      .collect(engine="streaming"))
        catalogue = pd.DataFrame({ITEM: firsts[ITEM].to_list()})
        catalogue[ITEM] = catalogue[ITEM].astype(str)
    codes = pl.DataFrame({ITEM: pl.Series(catalogue[ITEM].tolist(), dtype=pl.String),
                          ITEM_CODE: np.arange(len(catalogue), dtype=np.int64)})
    if lf is not None:
        unknown = (lf.select(ITEM).unique().join(codes.lazy(), on=ITEM, how="anti")
                   .collect(engine="streaming"))
        if unknown.height:
            raise DataError(f"item {unknown[ITEM][0]!r} is in the log but not in the catalogue "
                            f"({unknown.height} such items)", file=where, field=ITEM)
    return codes, catalogue


def _auto_buckets(n_events: int, bucket_events: int) -> int:
    return max(1, math.ceil(n_events / max(1, int(bucket_events))))


def prepare_polars(log: str, out: str, *, catalogue: str | None = None, columns: dict | None = None,
                   options: PrepareOptions | None = None, bucket_events: int = 1_000_000,
                   batch_rows: int = 262_144, workdir: str | None = None,
                   storage_options: dict | None = None, progress: bool = False) -> PrepareResult:
    """Prepare `log` (Parquet file or folder, local or fsspec URL) into `out`, out of core with Polars."""
    import polars as pl

    options = options or PrepareOptions()
    started = time.time()
    say = print if progress else (lambda *a, **k: None)
    dataset = log_dataset(log, storage_options)
    mapping = log_mapping(list(dataset.schema.names), columns, str(log))
    cat = read_catalogue(catalogue, storage_options)
    n_rows = dataset.count_rows()
    scratch = Path(tempfile.mkdtemp(prefix="migrec-prepare-", dir=workdir))
    try:
        buckets = _Buckets(scratch, _auto_buckets(n_rows, bucket_events))
        n = _ingest(dataset, mapping, buckets, batch_rows, str(log))
        say(f"ingested {n} events into {buckets.n} bucket(s) ({time.time() - started:.1f} s)")
        codes, cat = _item_codes(cat, buckets, str(log))
        sizes = [_sizes(buckets)]
        if options.dedup:
            _dedup(buckets, options.keep)
            sizes.append(_sizes(buckets))
        if options.user_k > 0 or options.item_k > 0:
            rounds = _k_core(buckets, options.user_k, options.item_k)
            sizes.append(_sizes(buckets))
            say(f"k-core: fixed point after {rounds} round(s)")
        if options.min_history > 0:
            _min_history(buckets, options.min_history)
            sizes.append(_sizes(buckets))
        report = report_from_sizes(sizes, options.step_names())
        users_before_split = sizes[-1][1]
        if options.split_min > options.min_history:
            _min_history(buckets, options.split_min)

        # user codes: rank in sorted id order (as np.unique in leave_one_out)
        lf = buckets.scan()
        users = (lf.select(USER).unique().sort(USER).collect(engine="streaming") if lf is not None
                 else pl.DataFrame({USER: []}, schema={USER: pl.String}))
        users = users.with_columns(pl.int_range(users.height, dtype=pl.Int64).alias(USER_CODE))

        fs, root = filesystem(out, storage_options)
        clear_output(fs, root)
        split_counts = {"train": 0, "valid": 0, "test": 0}
        events = 0
        for b in range(buckets.n):
            frame = buckets.read(b)
            if frame is None:
                continue
            frame = (frame.with_columns(_order_key().alias("_t")).sort([USER, "_t", ROW])
                     .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).over(USER).alias(POSITION),
                                   pl.len().over(USER).cast(pl.Int64).alias("_n"))
                     .with_columns(pl.when(pl.col(POSITION) == pl.col("_n") - 1).then(pl.lit("test"))
                                   .when(pl.col(POSITION) == pl.col("_n") - 2).then(pl.lit("valid"))
                                   .otherwise(pl.lit("train")).alias(SPLIT))
                     .join(users, on=USER, how="left").join(codes, on=ITEM, how="left")
                     .select(EVENT_COLUMNS).sort([USER_CODE, POSITION]))
            for name, count in frame.group_by(SPLIT).len().iter_rows():
                split_counts[name] += int(count)
            events += frame.height
            write_frame(frame, fs, f"{root}/{EVENTS_DIR}/part-{b:05d}.parquet")
        write_frame(users.select(USER_CODE, USER), fs, f"{root}/{USERS_FILE}")
        write_frame(items_table(cat), fs, f"{root}/{ITEMS_FILE}")
        result = PrepareResult(str(out), "polars", events, users.height, len(cat), report, time.time() - started,
                               buckets=buckets.n, split_counts=split_counts,
                               dropped_short=users_before_split - users.height)
        write_manifest(fs, root, result, options, str(log), catalogue)
        say(f"wrote {out}: {events} events, {users.height} users, {len(cat)} items ({result.seconds:.1f} s)")
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def prepare(log: str, out: str, *, engine: str = "polars", catalogue: str | None = None,
            columns: dict | None = None, dedup: bool = True, keep: str = "last", user_k: int = 0,
            item_k: int = 0, min_history: int = 3, storage_options: dict | None = None,
            progress: bool = False, **engine_kw) -> PrepareResult:
    """Prepare a Parquet interaction log into the prepared layout (see the module doc).

    log: a Parquet file or folder (hive partitions allowed), local or an fsspec URL, with the
    schema's columns (user_id, item_id, optional timestamp in epoch seconds, optional event) or
    others named by `columns` (role -> column). catalogue: optional Parquet file with item_id
    (its order is the item order). engine: "polars" (one machine, out of core) or "spark"
    (`migrec[spark]`; `spark=` a SparkSession, else a local one). Engine keywords: polars
    `bucket_events`, `batch_rows`, `workdir`; spark `spark`, `master`, `shuffle_partitions`.
    """
    options = PrepareOptions(dedup=dedup, keep=keep, user_k=int(user_k), item_k=int(item_k),
                             min_history=int(min_history))
    if engine == "polars":
        return prepare_polars(log, out, catalogue=catalogue, columns=columns, options=options,
                              storage_options=storage_options, progress=progress, **engine_kw)
    if engine == "spark":
        from .spark import prepare_spark

        return prepare_spark(log, out, catalogue=catalogue, columns=columns, options=options,
                             storage_options=storage_options, progress=progress, **engine_kw)
    raise ValueError(f"unknown engine {engine!r}; use one of {ENGINES}")


# -- reading the layout back ------------------------------------------------------------------------
def _prepared(path: str, storage_options: dict | None):
    """(filesystem, root) of a prepared folder; a DataError naming the path if it is not one."""
    fs, root = filesystem(path, storage_options)
    if not fs.exists(f"{root}/{MANIFEST_FILE}"):
        raise DataError(f"not a prepared folder (no {MANIFEST_FILE}); write one with `migrec prepare --engine "
                        "polars|spark`", file=str(path))
    return fs, root


def _parquet_files(fs, where: str) -> list[str]:
    """One Parquet file, or the parts of a folder (as Spark writes them), in order."""
    return sorted(p for p in fs.find(where) if p.endswith(".parquet")) if fs.isdir(where) else [where]


def _frame(fs, where: str) -> pd.DataFrame:
    import pyarrow.parquet as pq

    parts = []
    for p in _parquet_files(fs, where):
        with fs.open(p, "rb") as fh:
            parts.append(pq.read_table(fh).to_pandas())
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def read_prepared_frames(path: str, storage_options: dict | None = None) -> dict:
    """{"events", "users", "items"} as pandas frames (events sorted by user_code, position)."""
    fs, root = _prepared(path, storage_options)
    events = _frame(fs, f"{root}/{EVENTS_DIR}")
    if not len(events.columns):
        events = pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                               zip(EVENT_COLUMNS, ["int64", "int64", "float64", "int64", "object"])})
    events = events[EVENT_COLUMNS].sort_values([USER_CODE, POSITION], kind="stable").reset_index(drop=True)
    users = _frame(fs, f"{root}/{USERS_FILE}").sort_values(USER_CODE).reset_index(drop=True)
    items = _frame(fs, f"{root}/{ITEMS_FILE}").sort_values(ITEM_CODE).reset_index(drop=True)
    return {"events": events, "users": users, "items": items}


def _event_arrays(fs, root: str) -> dict[str, np.ndarray]:
    """The events' user, item, time and position columns as NumPy arrays, ordered by (user, position).

    Read one column at a time straight from Parquet (no pandas frame, no split strings) and put
    in order when the parts are not (polars and Spark write parts each sorted by user but
    partitioned by user hash), a column at a time: the peak stays near twice the four arrays."""
    import pyarrow.parquet as pq

    files = _parquet_files(fs, f"{root}/{EVENTS_DIR}")
    out = {}
    for column, dtype in ((USER_CODE, np.int64), (ITEM_CODE, np.int64), (TIME, np.float64), (POSITION, np.int64)):
        parts = []
        for p in files:
            with fs.open(p, "rb") as fh:
                parts.append(pq.read_table(fh, columns=[column]).column(0).to_numpy().astype(dtype, copy=False))
        out[column] = (parts[0] if len(parts) == 1 else np.concatenate(parts)) if parts else np.zeros(0, dtype)
    step = np.diff(out[USER_CODE])
    ordered = bool(np.all(step >= 0)) and bool(np.all((step > 0) | (np.diff(out[POSITION]) > 0)))
    del step
    if not ordered:
        order = np.lexsort((out[POSITION], out[USER_CODE]))
        for k in list(out):           # one column at a time: never two copies of every column
            out[k] = out[k][order]
    return out


def read_prepared(path: str, storage_options: dict | None = None) -> Split:
    """A prepared folder as the in-memory `Split` (train sequences, valid and test cases)."""
    fs, root = _prepared(path, storage_options)
    events = _event_arrays(fs, root)     # the split column is implied by position: not read
    users = _frame(fs, f"{root}/{USERS_FILE}").sort_values(USER_CODE).reset_index(drop=True)
    items = _frame(fs, f"{root}/{ITEMS_FILE}").sort_values(ITEM_CODE).reset_index(drop=True)
    n_users = len(users)
    bounds = np.searchsorted(events[USER_CODE], np.arange(n_users + 1))
    codes, times = events[ITEM_CODE], events[TIME]
    del events
    seqs = [codes[bounds[u]:bounds[u + 1]] for u in range(n_users)]
    stamps = [times[bounds[u]:bounds[u + 1]] for u in range(n_users)]
    catalogue = items.drop(columns=[ITEM_CODE]).reset_index(drop=True)
    train = TrainSet(users["user_id"].astype(str).to_numpy(dtype=object),
                     catalogue[ITEM].astype(str).to_numpy(dtype=object), [s[:-2] for s in seqs], catalogue,
                     timestamps=[t[:-2] for t in stamps])
    idx = np.arange(n_users)
    valid = EvalSet(idx, [s[:-2] for s in seqs], [s[-2:-1] for s in seqs])
    test = EvalSet(idx, [s[:-1] for s in seqs], [s[-1:] for s in seqs])
    return Split(train, valid, test, name=PurePosixPath(str(path).rstrip("/")).name,
                 protocol="leave-one-out (last=test, second-last=valid), prepared out of core")


def write_log(interactions: pd.DataFrame, folder: str, files: int = 1, storage_options: dict | None = None) -> list[str]:
    """Write an interaction frame as a Parquet log of `files` parts (in order: part-00000 first).

    The inverse of reading a log; handy to turn a data set loaded in memory into the input of
    `prepare` (and for tests and benchmarks)."""
    fs, root = filesystem(folder, storage_options)
    fs.makedirs(root, exist_ok=True)
    cuts = np.linspace(0, len(interactions), max(1, int(files)) + 1).astype(int)
    paths = []
    for k, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:])):
        path = f"{root}/part-{k:05d}.parquet"
        write_frame(interactions.iloc[lo:hi].reset_index(drop=True), fs, path)
        paths.append(path)
    return paths
