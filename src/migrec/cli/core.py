"""`migrec prepare | encode | train | evaluate`: data, item vectors, one model, a comparison."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .. import pipeline
from .common import (DEFAULT_MODELS, attach_states_for, command_line, data_args, encoder_args, load_data, make_split,
                     model_params, train_args)

DATA_FILE = "data.json"             # in a model folder: which data set the model was trained from
CATALOGUE_FILE = "catalogue.parquet"  # in a model folder: the items (ids, titles, ...) for printing


def storage_options(pairs) -> dict | None:
    """--storage-option KEY=VALUE pairs as fsspec storage options (None when there are none)."""
    if not pairs:
        return None
    bad = [p for p in pairs if "=" not in p or not p.split("=", 1)[0]]
    if bad:
        raise SystemExit(f"--storage-option takes KEY=VALUE, not {bad[0]!r}")
    return dict(p.split("=", 1) for p in pairs)


def cmd_prepare(args) -> None:
    options = storage_options(args.storage_option)
    if args.engine == "memory":
        from ..data import clean

        dataset = load_data(args)
        dataset, report = clean(dataset, user_k=args.user_k, item_k=args.item_k, min_history=args.min_history)
        print(report)
        dataset.to_parquet(args.out, storage_options=options)
        print(f"wrote {args.out}: {dataset.summary()}")
        return
    from ..data import DataError
    from ..data.prepare import prepare

    if not args.path:
        raise SystemExit(f"--engine {args.engine}: give --path, a Parquet log (file or folder, local or URL)")
    columns = None
    if args.columns:
        columns = dict(part.split("=", 1) for part in args.columns.split(","))
    engine_kw = {"master": args.master} if args.engine == "spark" else {}
    try:
        result = prepare(args.path, args.out, engine=args.engine, catalogue=args.catalogue, columns=columns,
                         user_k=args.user_k, item_k=args.item_k, min_history=args.min_history, progress=True,
                         storage_options=options, **engine_kw)
    except (DataError, ImportError) as err:
        raise SystemExit(f"migrec prepare: {err}") from None
    print(result.report)
    print(f"split: {result.split_counts}; users left out by the 3-event minimum: {result.dropped_short}")


def cmd_encode(args) -> None:
    from ..encoders import encode_catalogue, make_encoder

    dataset = load_data(args)
    started = time.time()
    vectors = encode_catalogue(dataset.catalogue, make_encoder(args.encoder), template=args.template,
                               cache_dir=pipeline.cache_dir_for(args.cache))
    print(f"encoded {len(vectors)} items -> {vectors.shape[1]} dims in {time.time() - started:.1f} s")
    if args.out:
        np.save(args.out, vectors)
        print(f"wrote {args.out}")


def data_pointer(kind: str, path: str | None) -> dict:
    """Where a data set lives, as `recommend` will find it again: loader name and an absolute path
    (MovieLens: the folder the fallback resolved to). A pointer, never the data."""
    if kind in ("ml-100k", "ml-1m"):
        from ..data import resolve_movielens

        path = str(Path(resolve_movielens(path, kind, download=False)).resolve())
    elif path is not None and "://" not in str(path):
        path = str(Path(path).resolve())
    return {"dataset": kind, "path": path}


def cmd_train(args) -> None:
    from ..models import distributed

    if args.nproc < 1:
        raise SystemExit(f"--nproc must be >= 1, not {args.nproc}")
    if args.nproc > 1:
        return torchrun_train(args)
    already = distributed.world()[1] > 1
    joined = not already and distributed.init_from_env(args.device)   # launched by torchrun: join its group
    try:
        train_one(args)
    except BaseException:
        if joined:
            distributed.shutdown()
        raise
    if joined:
        distributed.shutdown(wait=True)


def train_one(args) -> None:
    """Load, split, fit and (rank 0) save; in a process group every rank runs it, DDP inside fit."""
    from ..models import distributed

    rank, size = distributed.world()
    if size > 1 and args.model not in pipeline.SEQUENTIAL:
        raise SystemExit(f"distributed training ({size} processes) is for the sequential models "
                         f"({', '.join(sorted(pipeline.SEQUENTIAL))}), not {args.model!r}")
    # rank 0 loads and encodes first (filling the embedding cache), then the other ranks read it
    if rank > 0:
        distributed.barrier()
    dataset = load_data(args)
    split = make_split(args, dataset, args.model in pipeline.TEXT_MODELS)
    if rank == 0:
        distributed.barrier()
    params = model_params(args.model, args)
    attach_states_for(split, [params], args)
    model = pipeline.build_model(args.model, **params)
    started = time.time()
    model.fit(split.train, split.valid)
    if rank > 0:
        return                              # every rank holds the same weights; rank 0 saves
    print(f"trained {args.model} in {time.time() - started:.1f} s" + (f" on {size} processes" if size > 1 else ""))
    out = Path(args.out)
    model.save(out)                         # weights and item data only: no user ids, no histories
    split.train.catalogue.to_parquet(out / CATALOGUE_FILE, index=False)
    (out / DATA_FILE).write_text(json.dumps(data_pointer(args.dataset, args.path), indent=1) + "\n")
    print(f"saved to {out}")


def without_nproc(argv: list) -> list:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def torchrun_train(args) -> None:
    """`train --nproc N`: the same command again under torchrun, N local processes (DDP)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit("--nproc: this process was already launched by torchrun "
                         f"(WORLD_SIZE={os.environ['WORLD_SIZE']}); leave --nproc out")
    if args.model not in pipeline.SEQUENTIAL:
        raise SystemExit(f"--nproc: distributed training is for the sequential models "
                         f"({', '.join(sorted(pipeline.SEQUENTIAL))}), not {args.model!r}")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "migrec", *without_nproc(args.argv)]
    code = subprocess.call(command, env=env)
    if code:
        raise SystemExit(f"torchrun ({args.nproc} processes) failed with exit code {code}")


def cmd_evaluate(args) -> None:
    from ..evaluation import Experiment

    names = args.models.split(",")
    unknown = [n for n in names if n not in pipeline.MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown model {', '.join(map(repr, unknown))}; choose from {sorted(pipeline.MODELS)}")
    dataset = load_data(args)
    split = make_split(args, dataset, any(n in pipeline.TEXT_MODELS for n in names))
    params = {n: model_params(n, args) for n in names}
    attach_states_for(split, list(params.values()), args)
    models = {n: pipeline.build_model(n, **params[n]) for n in names}
    result = Experiment(split, models, ks=tuple(args.k), item_vectors=split.train.item_vectors,
                        sampled_negatives=args.sampled, repeats=args.repeats).run()
    if args.out:
        out = result.save(args.out, dataset=dataset.name, protocol=split.protocol, command=command_line())
        print(f"wrote {out}/results.json, results.md, comparison.png")


def add_parsers(sub) -> None:
    p = sub.add_parser("prepare", help="load, clean and write a data set as Parquet (in memory, or out of core "
                                       "with Polars, or on Spark)")
    data_args(p)
    p.add_argument("--user-k", type=int, default=0, help="k-core: minimum events per user")
    p.add_argument("--item-k", type=int, default=0, help="k-core: minimum events per item")
    p.add_argument("--out", required=True, help="output folder (local path or fsspec URL)")
    p.add_argument("--engine", default="memory", choices=["memory", "polars", "spark"],
                   help="memory: load --dataset, clean, write interactions + catalogue; polars (one machine, "
                        "out of core) or spark: --path is a Parquet log, output is the prepared layout "
                        "(events coded and split leave-one-out, users, items)")
    p.add_argument("--catalogue", default=None, help="polars/spark: Parquet catalogue with item_id (its order is "
                                                    "the item order); default: items in order of first appearance")
    p.add_argument("--columns", default=None, help="polars/spark: schema=column pairs, e.g. "
                                                  "user_id=uid,item_id=movie,timestamp=ts")
    p.add_argument("--master", default="local[2]", help="spark: the master URL (default local[2])")
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an fsspec storage option for --path, --catalogue and --out URLs (repeatable), e.g. "
                        "endpoint_url=http://127.0.0.1:9000 key=... secret=... for an S3-compatible store; "
                        "s3fs also reads AWS_* environment variables")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("encode", help="encode the catalogue's item text (cached on disk)")
    data_args(p)
    encoder_args(p)
    p.add_argument("--out", default=None, help="write the vectors to this .npy file")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("train", help="train one model on a leave-one-out split and save it")
    data_args(p)
    encoder_args(p)
    train_args(p)
    p.add_argument("--model", default="interest-text+id", choices=sorted(pipeline.MODELS))
    p.add_argument("--out", required=True, help=f"model folder: the model, {CATALOGUE_FILE} and {DATA_FILE} "
                                                "(which data set it came from; no user data)")
    p.add_argument("--nproc", type=int, default=1,
                   help="sequential models: train with DistributedDataParallel on N local processes (gloo on "
                        "CPU, NCCL on CUDA), launched through torchrun; for several machines run "
                        "`torchrun ... -m migrec train` yourself (README: Distributed training)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="compare models on one leave-one-out split (full ranking)")
    data_args(p)
    encoder_args(p)
    train_args(p)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names")
    p.add_argument("--k", type=int, nargs="+", default=[10, 20, 50], help="cut-offs")
    p.add_argument("--sampled", type=int, default=None, help="also report sampled-negative metrics")
    p.add_argument("--repeats", default="exclude", choices=["exclude", "allow"],
                   help="history policy: exclude (every history item masked, a repeated target is a miss) "
                        "or allow (nothing masked); recorded in results.json")
    p.add_argument("--out", default=None, help="folder for results.json, results.md and comparison.png")
    p.set_defaults(func=cmd_evaluate)
