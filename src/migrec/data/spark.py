"""The preparation of `migrec.data.prepare` on Apache Spark (PySpark; `pip install migrec[spark]`).

Same steps, same parameters, same output layout as the single-machine Polars path, so a log that
outgrows one machine is prepared on a cluster and read back by the same code:

    from migrec.data.spark import prepare_spark, spark_session
    spark = spark_session("spark://host:7077")          # or an existing SparkSession
    prepare_spark("s3a://bucket/log/", "s3a://bucket/prepared/", spark=spark, user_k=5, item_k=5)

The log's order (ties and missing timestamps keep it, as everywhere in migrec) is the order of its
files by path, then of rows within a file; each file is read by one task so that Spark keeps it
(`spark.sql.files.maxPartitionBytes` is raised for the duration of the run). The events are written
by Spark (`events/part-*.parquet`, each user's events in one file, sorted by user_code, position) and
so is `users.parquet` (a folder of parts); `items.parquet` and `manifest.json` are written by the
driver (the catalogue is one table of item ids).
"""
from __future__ import annotations

import time

import pandas as pd

from .layout import (EVENT_COLUMNS, EVENTS_DIR, ITEM_CODE, ITEMS_FILE, POSITION, SPLIT, USER_CODE, USERS_FILE,
                      DEFAULT_EVENT, PrepareOptions, PrepareResult, filesystem, items_table, log_mapping,
                      parquet_files, read_catalogue, report_from_sizes, write_frame, write_manifest)
from .schema import EVENT, ITEM, TIME, USER, DataError

_FILE, _MONO, _T = "_file", "_mono", "_t"
_NO_SPLIT = str(1 << 40)  # maxPartitionBytes large enough that no Parquet file is split


def spark_session(master: str = "local[2]", shuffle_partitions: int = 4, app: str = "migrec-prepare",
                  driver_memory: str | None = None, **conf):
    """A SparkSession for preparation: UI off, small shuffles, bound to 127.0.0.1 when local."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ImportError("the Spark engine needs PySpark: pip install 'migrec[spark]'") from None
    builder = (SparkSession.builder.master(master).appName(app)
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", str(int(shuffle_partitions)))
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.adaptive.enabled", "true"))
    if master.startswith("local"):
        builder = builder.config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
    if driver_memory:
        builder = builder.config("spark.driver.memory", driver_memory)
    for key, value in conf.items():
        builder = builder.config(key.replace("__", "."), str(value))
    return builder.getOrCreate()


def _read_log(spark, log: str, mapping: dict, where: str):
    """The log with schema columns, its file rank and a row id increasing in file order."""
    from pyspark.sql import functions as F

    raw = spark.read.parquet(str(log))
    missing = [src for src in mapping.values() if src not in raw.columns]
    if missing:
        raise DataError(f"missing column {missing[0]!r}; the log has {raw.columns}", file=where, field=missing[0])
    cols = [F.col(mapping[USER]).cast("string").alias(USER), F.col(mapping[ITEM]).cast("string").alias(ITEM)]
    cols.append(F.col(mapping[EVENT]).cast("string").alias(EVENT) if EVENT in mapping
                else F.lit(DEFAULT_EVENT).alias(EVENT))
    if TIME in mapping:
        ts = F.col(mapping[TIME]).cast("double")
        cols.append(F.when(F.isnan(ts), F.lit(None).cast("double")).otherwise(ts).alias(TIME))
    else:
        cols.append(F.lit(None).cast("double").alias(TIME))
    # log order: files by path, rows by their place in the file (one task reads a whole file, and
    # monotonically_increasing_id grows in reading order within a task)
    frame = raw.select(*cols, F.input_file_name().alias(_FILE), F.monotonically_increasing_id().alias(_MONO))
    return frame.withColumn(_T, F.coalesce(F.col(TIME), F.lit(float("-inf")))).cache()


def _sizes(frame) -> tuple[int, int, int]:
    from pyspark.sql import functions as F

    row = frame.agg(F.count(F.lit(1)), F.countDistinct(USER), F.countDistinct(ITEM)).collect()[0]
    return int(row[0]), int(row[1]), int(row[2])


def _dense_codes(frame, column: str, code: str):
    """(column, code) with code = rank of the value in sorted order, without one-partition sorts."""
    from pyspark.sql import functions as F

    ranged = (frame.select(column).distinct().repartitionByRange(column).sortWithinPartitions(column)
              .select(column, F.spark_partition_id().alias("_pid"), F.monotonically_increasing_id().alias("_mid"))
              .localCheckpoint(eager=True))
    counts = sorted((int(r[0]), int(r[1])) for r in ranged.groupBy("_pid").count().collect())
    offsets, total = [], 0
    for pid, n in counts:
        offsets.append((pid, total))
        total += n
    spark = frame.sparkSession
    table = spark.createDataFrame(offsets or [(0, 0)], "_pid int, _off long")
    coded = (ranged.join(F.broadcast(table), on="_pid")
             .select(column, (F.col("_off") + F.col("_mid") - F.shiftleft(F.col("_pid").cast("long"), 33))
                     .cast("long").alias(code)))
    return coded, total


def prepare_spark(log: str, out: str, *, catalogue: str | None = None, columns: dict | None = None,
                  options: PrepareOptions | None = None, spark=None, master: str = "local[2]",
                  shuffle_partitions: int = 4, storage_options: dict | None = None,
                  progress: bool = False) -> PrepareResult:
    """Prepare `log` into `out` on Spark (see the module doc); `spark`: a session, else a local one
    on `master` that is stopped at the end."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    options = options or PrepareOptions()
    started = time.time()
    say = print if progress else (lambda *a, **k: None)
    own = spark is None
    if own:
        spark = spark_session(master, shuffle_partitions)
    before = spark.conf.get("spark.sql.files.maxPartitionBytes", None)
    spark.conf.set("spark.sql.files.maxPartitionBytes", _NO_SPLIT)
    try:
        where = str(log)
        parquet_files(log, storage_options)  # the same checks (exists, has Parquet files) as the Polars path
        mapping = log_mapping(spark.read.parquet(str(log)).columns, columns, where)
        frame = _read_log(spark, log, mapping, where)
        order = [F.col(_T), F.col(_FILE), F.col(_MONO)]

        # item codes: catalogue order, else first appearance in the log
        cat = read_catalogue(catalogue, storage_options)
        if cat is None:
            firsts = (frame.groupBy(ITEM).agg(F.min(F.struct(_FILE, _MONO)).alias("_first"))
                      .orderBy("_first").select(ITEM).collect())
            cat = pd.DataFrame({ITEM: [str(r[0]) for r in firsts]})
        codes = spark.createDataFrame(list(zip(cat[ITEM].astype(str).tolist(), range(len(cat)))),
                                      f"{ITEM} string, {ITEM_CODE} long")
        unknown = (frame.select(ITEM).distinct().join(F.broadcast(codes), on=ITEM, how="left_anti")
                   .agg(F.count(F.lit(1)), F.min(ITEM)).collect()[0])
        if unknown[0]:
            raise DataError(f"item {unknown[1]!r} is in the log but not in the catalogue "
                            f"({unknown[0]} such items)", file=where, field=ITEM)

        sizes = [_sizes(frame)]
        if options.dedup:
            key = Window.partitionBy(USER, ITEM, EVENT).orderBy(
                *[c.desc() if options.keep == "last" else c.asc() for c in order])
            frame = (frame.withColumn("_k", F.row_number().over(key)).filter(F.col("_k") == 1).drop("_k").cache())
            sizes.append(_sizes(frame))
        if options.user_k > 0 or options.item_k > 0:
            n, rounds = sizes[-1][0], 0
            while True:
                rounds += 1
                users = frame.groupBy(USER).count().filter(F.col("count") >= options.user_k).select(USER)
                items = frame.groupBy(ITEM).count().filter(F.col("count") >= options.item_k).select(ITEM)
                kept = (frame.join(users, on=USER, how="left_semi").join(F.broadcast(items), on=ITEM, how="left_semi")
                        .cache())
                left = kept.count()
                frame.unpersist()
                frame = kept
                if left == n:
                    break
                n = left
            sizes.append(_sizes(frame))
            say(f"k-core: fixed point after {rounds} round(s)")

        def at_least(data, k):
            return (data.withColumn("_n", F.count(F.lit(1)).over(Window.partitionBy(USER)))
                    .filter(F.col("_n") >= k).drop("_n"))

        if options.min_history > 0:
            frame = at_least(frame, options.min_history).cache()
            sizes.append(_sizes(frame))
        report = report_from_sizes(sizes, options.step_names())
        users_before_split = sizes[-1][1]
        if options.split_min > options.min_history:
            frame = at_least(frame, options.split_min)

        user_codes, n_users = _dense_codes(frame, USER, USER_CODE)
        user_codes = user_codes.cache()
        per_user = Window.partitionBy(USER).orderBy(*order)
        events = (frame.withColumn(POSITION, (F.row_number().over(per_user) - 1).cast("long"))
                  .withColumn("_n", F.count(F.lit(1)).over(Window.partitionBy(USER)).cast("long"))
                  .withColumn(SPLIT, F.when(F.col(POSITION) == F.col("_n") - 1, F.lit("test"))
                              .when(F.col(POSITION) == F.col("_n") - 2, F.lit("valid")).otherwise(F.lit("train")))
                  .join(user_codes, on=USER).join(F.broadcast(codes), on=ITEM)
                  .select(*EVENT_COLUMNS)
                  .repartition(int(spark.conf.get("spark.sql.shuffle.partitions")), USER_CODE)
                  .sortWithinPartitions(USER_CODE, POSITION)
                  .cache())
        split_counts = {"train": 0, "valid": 0, "test": 0}
        for row in events.groupBy(SPLIT).count().collect():
            split_counts[row[0]] = int(row[1])
        n_events = sum(split_counts.values())

        fs, root = filesystem(out, storage_options)
        fs.makedirs(root, exist_ok=True)
        base = str(out).rstrip("/")
        events.write.mode("overwrite").parquet(f"{base}/{EVENTS_DIR}")
        user_codes.select(USER_CODE, USER).orderBy(USER_CODE).write.mode("overwrite").parquet(f"{base}/{USERS_FILE}")
        write_frame(items_table(cat), fs, f"{root}/{ITEMS_FILE}")
        result = PrepareResult(str(out), "spark", n_events, n_users, len(cat), report, time.time() - started,
                               buckets=events.rdd.getNumPartitions(), split_counts=split_counts,
                               dropped_short=users_before_split - n_users)
        write_manifest(fs, root, result, options, str(log), catalogue)
        say(f"wrote {out}: {n_events} events, {n_users} users, {len(cat)} items ({result.seconds:.1f} s)")
        return result
    finally:
        if own:
            spark.stop()
        elif before is None:
            spark.conf.unset("spark.sql.files.maxPartitionBytes")
        else:
            spark.conf.set("spark.sql.files.maxPartitionBytes", before)
