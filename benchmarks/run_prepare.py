"""Preparation at scale: time and peak memory as the log grows, and text-encoding throughput.

    python benchmarks/run_prepare.py --data ../shared/data [--scales 1 4 16] [--engines polars spark memory]

The log is the ML-1M ratings of users 1..2999 (487,650 events), grown 4x and 16x by adding copies
of its users under new ids (copy c of user u is "u~c"); each copy is one Parquet file of the log.
Each run (engine x scale) is one child process: `prepare_seconds` is its wall time for the whole
preparation (read, de-duplicate, 5-core, minimum history 3, id coding, leave-one-out split, write),
`peak_rss_mb` the peak resident memory of the child and everything it started (the Spark JVM
included), sampled every 20 ms, and never below the child's own ru_maxrss. Engines: `polars`
(migrec.data.prepare, out of core), `spark` (migrec.data.spark on local[2]), `memory` (the in-memory
pandas path: read the log, `clean`, `leave_one_out`).

`encode-minilm`: items/s of the bundled all-MiniLM-L6-v2 (`make_encoder("st")`, default device:
CUDA when present) on the first 5,000 titles of a seqrec-benchmark catalogue, no cache, after a
warm-up batch.

Writes benchmarks/results/prepare.json and regenerates RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child import report, run_measured  # noqa: E402

CLEANING = dict(user_k=5, item_k=5, min_history=3)


def make_logs(data: Path, work: Path, scales: list[int]) -> dict:
    """Write the grown logs (one Parquet file per copy) and the catalogue; returns paths."""
    import pandas as pd

    from migrec.data import load_movielens_1m

    ds = load_movielens_1m(data / "ml-1m")
    base = ds.interactions[["user_id", "item_id", "event", "timestamp"]].reset_index(drop=True)
    work.mkdir(parents=True, exist_ok=True)
    cat = work / "catalogue.parquet"
    ds.catalogue.to_parquet(cat, index=False)
    logs = {}
    for s in scales:
        folder = work / f"log-{s}x"
        if not (folder / f"part-{s - 1:05d}.parquet").exists():
            folder.mkdir(parents=True, exist_ok=True)
            for c in range(s):
                part = base if c == 0 else base.assign(user_id=base["user_id"] + f"~{c}")
                part.to_parquet(folder / f"part-{c:05d}.parquet", index=False)
        logs[s] = str(folder)
    return {"logs": logs, "catalogue": str(cat), "events_1x": len(base), "read": pd.__version__}


def child(engine: str, log: str, catalogue: str, out: str) -> None:
    """One measured run (in its own process); prints a JSON line."""
    started = time.time()
    if engine == "memory":
        import pyarrow.dataset as ds

        from migrec.data import Dataset, clean, leave_one_out, make_interactions
        from migrec.data.prepare import read_catalogue

        files = sorted(str(p) for p in Path(log).glob("*.parquet"))
        frame = ds.dataset(files, format="parquet").to_table().to_pandas()
        inter = make_interactions(frame["user_id"], frame["item_id"], event=frame["event"],
                                  timestamp=frame["timestamp"])
        data = Dataset(inter, read_catalogue(catalogue), "log")
        cleaned, _ = clean(data, **CLEANING)
        split = leave_one_out(cleaned)
        events = split.train.n_interactions + 2 * split.train.n_users
    else:
        from migrec.data.prepare import prepare

        kw = {}
        if engine == "spark":
            from migrec.data.spark import spark_session

            kw["spark"] = spark_session("local[2]", shuffle_partitions=8, driver_memory="3g")
            kw["spark"].sparkContext.setLogLevel("ERROR")
        result = prepare(log, out, engine=engine, catalogue=catalogue, **CLEANING, **kw)
        events = result.events
        if engine == "spark":
            kw["spark"].stop()
    seconds = time.time() - started
    report({"seconds": seconds, "events": int(events)})


def measure(engine: str, log: str, catalogue: str, out: str) -> dict:
    """Run `child` in a fresh process; peak RSS of its whole process tree."""
    return run_measured([sys.executable, __file__, "--child", engine, log, catalogue, out], f"{engine} on {log}")


def encode_throughput(data: Path, n: int, device: str | None) -> dict:
    import pandas as pd

    from migrec.encoders import make_encoder
    from migrec.encoders.sentence import default_device

    items = pd.read_csv(data / "seqrec-benchmark" / "amazon2014-beauty" / "items.tsv", sep="\t", quoting=3,
                        dtype=str, keep_default_na=False)
    titles = items["title"].head(n).tolist()
    encoder = make_encoder("st", device=device, batch_size=128, show_progress=False)  # no cache_dir: no cache
    encoder.encode(titles[:64])  # load the model, warm up
    started = time.time()
    vectors = encoder.encode(titles)
    seconds = time.time() - started
    return {"items_per_second": len(titles) / seconds, "items": len(titles), "seconds": seconds,
            "dim": int(vectors.shape[1]), "device": device or default_device()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--engines", nargs="+", default=["polars", "spark", "memory"])
    parser.add_argument("--work", default="/tmp/migrec-bench-prepare", help="scratch folder for logs and outputs")
    parser.add_argument("--encode", type=int, default=5000, help="titles to encode (0: skip)")
    parser.add_argument("--device", default=None, help="encoder device (default: cuda when present, else cpu)")
    parser.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child)

    from _report import write_json, write_results_md
    from migrec.hardware import machine_description

    command = "python benchmarks/run_prepare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    work = Path(args.work)
    made = make_logs(Path(args.data), work, args.scales)
    rows = []
    for engine in args.engines:
        for s in args.scales:
            got = measure(engine, made["logs"][s], made["catalogue"], str(work / f"out-{engine}-{s}x"))
            print(f"{engine}-{s}x: {got['seconds']:.1f} s, peak {got['peak_rss_mb']:.0f} MB, {got['events']} events",
                  flush=True)
            rows.append({"model": f"{engine}-{s}x", "peak_rss_mb": round(got["peak_rss_mb"], 1),
                         "metrics": {"prepare_seconds": round(got["seconds"], 2),
                                     "peak_rss_mb": round(got["peak_rss_mb"], 1), "events": got["events"],
                                     "log_events": made["events_1x"] * s}})
    if args.encode:
        enc = encode_throughput(Path(args.data), args.encode, args.device)
        print(f"encode-minilm: {enc['items_per_second']:.0f} items/s on {enc['device']}", flush=True)
        rows.append({"model": "encode-minilm",
                     "metrics": {"items_per_second": round(enc["items_per_second"], 1), "items": enc["items"],
                                 "encode_seconds": round(enc["seconds"], 2)},
                     "device": enc["device"]})
    protocol = ("ML-1M users 1..2999 (487,650 events) grown by copies of its users under new ids; each run "
                "de-duplicates, 5-core, min history 3, codes ids and splits leave-one-out in a fresh process; "
                "peak RSS of the process tree (Spark: the JVM included, local[2], driver 3g). "
                "Target: polars peak at 16x < 3x peak at 1x (see `ratios`). "
                "encode-minilm: bundled all-MiniLM-L6-v2, first 5,000 amazon2014-beauty titles, no cache")
    out = write_json({"dataset": "prepare", "protocol": protocol, "machine": machine_description(),
                      "command": command, "rows": rows},
                     order=[f"{e}-{s}x" for e in ("polars", "spark", "memory") for s in args.scales] + ["encode-minilm"])
    payload = json.loads(out.read_text())          # ratios over every row kept, this run's and earlier ones
    by = {r["model"]: r["metrics"] for r in payload["rows"]}
    payload["ratios"] = {f"{e}: peak 16x / 1x": round(by[f"{e}-16x"]["peak_rss_mb"] / by[f"{e}-1x"]["peak_rss_mb"], 2)
                         for e in ("polars", "spark", "memory") if f"{e}-1x" in by and f"{e}-16x" in by}
    out.write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload["ratios"], indent=1))
    print(f"wrote {out}")
    write_results_md()


if __name__ == "__main__":
    main()
