"""The `migrec` command: prepare, encode, train, evaluate, recommend, transfer, demo."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from . import pipeline

DEFAULT_MODELS = ["popularity", "itemknn", "als", "bpr", "sasrec", "interest-text", "interest-text+id"]


def command_line() -> str:
    return " ".join(["migrec"] + sys.argv[1:])


# -- shared arguments -----------------------------------------------------------------
def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="ml-100k", choices=sorted(pipeline.LOADERS),
                   help="loader to use (default ml-100k); 'parquet' reads a folder written by `migrec prepare`")
    p.add_argument("--path", default=None, help="data folder or file (MovieLens: falls back to ../shared/data, "
                                                "then downloads from GroupLens)")
    p.add_argument("--min-history", type=int, default=3, help="users with fewer events are left out")


def _encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", default="st", help='item text encoder: "st" (bundled all-MiniLM-L6-v2), '
                                                  '"st:NAME_OR_PATH", "openai:MODEL", "hashing[:DIM]"')
    p.add_argument("--cache", default=None, help="embedding cache folder (default $MIGREC_CACHE or "
                                                "~/.cache/migrec/embeddings)")
    p.add_argument("--template", default=None, help='item text template, e.g. "{title}. {category}"')


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=None, help="sequential models: maximum epochs")
    p.add_argument("--max-train-seconds", type=float, default=None, help="sequential models: time budget")
    p.add_argument("--device", default="auto", help="sequential models: cpu, cuda or auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--param", action="append", default=[], metavar="MODEL.KEY=VALUE",
                   help="a hyper-parameter, e.g. sasrec.hidden=128 (repeatable)")


def _load(args):
    return pipeline.load_dataset(args.dataset, args.path)


def _split(args, dataset, need_text: bool):
    encoder = args.encoder if need_text else None
    return pipeline.prepare_split(dataset, encoder=encoder, cache_dir=pipeline.cache_dir_for(args.cache),
                                  template=args.template, min_history=args.min_history)


def _model_params(name: str, args) -> dict:
    params: dict = {}
    if name in pipeline.SEQUENTIAL:
        params.update(device=args.device, seed=args.seed)
        if args.epochs is not None:
            params["epochs"] = args.epochs
        if args.max_train_seconds is not None:
            params["max_train_seconds"] = args.max_train_seconds
    for item in args.param:
        key, _, value = item.partition("=")
        model, _, field = key.partition(".")
        if model == name:
            params[field] = _parse_value(value)
    return params


def _parse_value(text: str):
    """JSON when it parses (numbers, true/false, lists), otherwise the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# -- sub-commands -----------------------------------------------------------------------
def cmd_prepare(args) -> None:
    from .data import clean

    dataset = _load(args)
    dataset, report = clean(dataset, user_k=args.user_k, item_k=args.item_k, min_history=args.min_history)
    print(report)
    dataset.to_parquet(args.out)
    print(f"wrote {args.out}: {dataset.summary()}")


def cmd_encode(args) -> None:
    from .encoders import encode_catalogue, make_encoder

    dataset = _load(args)
    started = time.time()
    vectors = encode_catalogue(dataset.catalogue, make_encoder(args.encoder), template=args.template,
                               cache_dir=pipeline.cache_dir_for(args.cache))
    print(f"encoded {len(vectors)} items -> {vectors.shape[1]} dims in {time.time() - started:.1f} s")
    if args.out:
        np.save(args.out, vectors)
        print(f"wrote {args.out}")


def cmd_train(args) -> None:
    dataset = _load(args)
    split = _split(args, dataset, args.model in pipeline.TEXT_MODELS)
    model = pipeline.build_model(args.model, **_model_params(args.model, args))
    started = time.time()
    model.fit(split.train, split.valid)
    print(f"trained {args.model} in {time.time() - started:.1f} s")
    model.use_histories(split.test)  # answer `recommend` from everything known: train + valid item
    model.save(args.out)
    split.train.catalogue.to_parquet(Path(args.out) / "catalogue.parquet", index=False)
    print(f"saved to {args.out}")


def cmd_evaluate(args) -> None:
    from .evaluation import Experiment

    names = args.models.split(",")
    dataset = _load(args)
    split = _split(args, dataset, any(n in pipeline.TEXT_MODELS for n in names))
    models = {n: pipeline.build_model(n, **_model_params(n, args)) for n in names}
    result = Experiment(split, models, ks=tuple(args.k), item_vectors=split.train.item_vectors,
                        sampled_negatives=args.sampled).run()
    if args.out:
        out = result.save(args.out, dataset=dataset.name, protocol=split.protocol, command=command_line())
        print(f"wrote {out}/results.json, results.md, comparison.png")


def show_recommendations(model, catalogue, user, k: int = 10, explain: bool = True, recent: int = 10) -> None:
    """Print a user's recent history and top-k with titles, and what drove the first pick."""
    titles = catalogue.set_index("item_id")["title"]
    history = model.item_ids_[model.histories_[model.user_index(user)]]
    print(f"\nUser {user}: {len(history)} events; most recent {min(recent, len(history))}:")
    for item in history[-recent:][::-1]:
        print(f"   {item:>8}  {titles.get(item, '?')}")
    ids, scores = model.recommend([user], k=k)
    print(f"Top-{k} recommendations ({model.name}):")
    for rank, (item, score) in enumerate(zip(ids[0], scores[0]), 1):
        print(f"  {rank:2d}. {item:>8}  {titles.get(item, '?'):<60.60} score {score:8.3f}")
    if explain and hasattr(model, "explain"):
        frame = model.explain(user, ids[0][0], catalogue=catalogue)
        a = frame.attrs
        print(f"Why #1 ({titles.get(ids[0][0], '?')}): score {a['score']:.3f} = empty-history score "
              f"{a['baseline_score']:.3f} + history contributions {frame['attribution'].sum():.3f}; largest:")
        for row in frame.head(5).itertuples():
            print(f"   {row.attribution:+8.3f}  {row.title}  (event {row.position})")


def cmd_recommend(args) -> None:
    import pandas as pd

    from .models.base import Recommender

    model = Recommender.load(args.model_dir)
    catalogue = pd.read_parquet(Path(args.model_dir) / "catalogue.parquet")
    show_recommendations(model, catalogue, str(args.user), k=args.k, explain=not args.no_explain)


def cmd_demo(args) -> None:
    from .demo import run_demo

    run_demo(data=args.data, out=args.out, quick=args.quick, encoder=args.encoder, cache=args.cache)


# -- parser -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="migrec", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log training details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="load, clean and write a data set as Parquet")
    _data_args(p)
    p.add_argument("--user-k", type=int, default=0, help="k-core: minimum events per user")
    p.add_argument("--item-k", type=int, default=0, help="k-core: minimum events per item")
    p.add_argument("--out", required=True, help="output folder (local path or fsspec URL)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("encode", help="encode the catalogue's item text (cached on disk)")
    _data_args(p)
    _encoder_args(p)
    p.add_argument("--out", default=None, help="write the vectors to this .npy file")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("train", help="train one model on a leave-one-out split and save it")
    _data_args(p)
    _encoder_args(p)
    _train_args(p)
    p.add_argument("--model", default="interest-text+id", choices=sorted(pipeline.MODELS))
    p.add_argument("--out", required=True, help="model folder")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="compare models on one leave-one-out split (full ranking)")
    _data_args(p)
    _encoder_args(p)
    _train_args(p)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names")
    p.add_argument("--k", type=int, nargs="+", default=[10, 20, 50], help="cut-offs")
    p.add_argument("--sampled", type=int, default=None, help="also report sampled-negative metrics")
    p.add_argument("--out", default=None, help="folder for results.json, results.md and comparison.png")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("recommend", help="top-k for a user from a saved model, with titles and why")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--no-explain", action="store_true")
    p.set_defaults(func=cmd_recommend)

    from .transfer.cli import add_parser as add_transfer
    add_transfer(sub)

    from .drift.cli import add_parser as add_interests
    add_interests(sub)

    p = sub.add_parser("demo", help="the whole pipeline on MovieLens-100K")
    p.add_argument("--data", default=None, help="MovieLens-100K folder (default ../shared/data/ml-100k)")
    p.add_argument("--out", default="runs/demo", help="where the table, JSON and chart go")
    p.add_argument("--quick", action="store_true", help="short training budgets (for a smoke run)")
    p.add_argument("--encoder", default="st")
    p.add_argument("--cache", default=None)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
