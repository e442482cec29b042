"""`migrec transfer`: run the transfer regimes between domains and print the comparison."""
from __future__ import annotations

import json
from pathlib import Path

from .. import pipeline
from ..evaluation.evaluator import REPEATS, repeats_note
from ..transfer.regimes import ALL
from .common import command_line, parse_value


def add_parser(sub) -> None:
    p = sub.add_parser("transfer", help="pre-train on source domains, transfer to a target domain, compare regimes")
    p.add_argument("--dataset", default="amazon-food-kitchen", choices=sorted(pipeline.LOADERS),
                   help="multi-domain data set (loader name)")
    p.add_argument("--path", required=True, help="its folder or file")
    p.add_argument("--add", action="append", default=[], metavar="KIND:PATH",
                   help="combine another data set into it, e.g. unisrec:../shared/data/amazon-scientific-unisrec "
                        "(item ids must not collide; equal user ids are the same user)")
    p.add_argument("--source", required=True, help="source domain(s), comma-separated, e.g. food")
    p.add_argument("--target", required=True, help="target domain(s), comma-separated: each is one comparison")
    p.add_argument("--models", default=",".join(ALL), help=f"regimes and baselines (default all: {','.join(ALL)})")
    p.add_argument("--cold-items", type=float, default=0.1, help="share of each domain's items held out of training")
    p.add_argument("--sampled", type=int, default=999, help="negatives for the sampled protocol")
    p.add_argument("--repeats", default="exclude", choices=REPEATS,
                   help="history policy: exclude (every history item masked, a repeated target is a miss) "
                        "or allow (nothing masked)")
    p.add_argument("--max-train-seconds", type=float, default=600, help="time budget per model")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="interest-model hyper-parameter, e.g. hidden=128 (repeatable)")
    p.add_argument("--encoder", default="st")
    p.add_argument("--cache", default=None, help="embedding cache folder")
    p.add_argument("--save-dir", default=None, help="keep fitted models here; a re-run reuses them")
    p.add_argument("--out", default=None, help="folder for <source>-to-<target>.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--extra-valid", type=int, default=0, metavar="N",
                   help="N training users active in two or more domains give their last event to validation "
                        "(data sets with held-out users only)")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..data.multidomain import combine
    from ..transfer.run import run_transfer

    dataset = pipeline.load_dataset(args.dataset, args.path)
    extra = []
    for spec in args.add:
        kind, _, path = spec.partition(":")
        if not path:
            raise SystemExit(f"--add wants KIND:PATH, got {spec!r}")
        extra.append(pipeline.load_dataset(kind, path))
    if extra:
        dataset = combine(dataset, *extra)
    source, targets = args.source.split(","), args.target.split(",")
    known = set(dataset.domains)
    for d in source + targets:
        if d not in known:
            raise SystemExit(f"unknown domain {d!r}; this data set has {sorted(known)}")
    params = {"max_train_seconds": args.max_train_seconds}
    if args.epochs:
        params["epochs"] = args.epochs
    for item in args.param:
        key, _, value = item.partition("=")
        params[key] = parse_value(value)
    results = run_transfer(dataset, targets, source=source, models=args.models.split(","), params=params,
                           encoder=args.encoder, cache_dir=pipeline.cache_dir_for(args.cache),
                           cold_item_share=args.cold_items, sampled_negatives=args.sampled, seed=args.seed,
                           validate_on=[d for d in source if d not in targets], save_dir=args.save_dir,
                           repeats=args.repeats, extra_valid=args.extra_valid)
    for result in results:
        task = result.task
        print(f"\n## {task.name}: {len(task.test)} test cases, ranking among {len(task.candidates)} "
              f"{task.target} items\n{result.to_markdown()}")
        if result.negative_transfer:
            print("NEGATIVE TRANSFER (valid NDCG@10 below target-only):", ", ".join(result.negative_transfer))
        if args.out:
            out = Path(args.out) / f"{task.name}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"dataset": task.name, "protocol": f"{task.protocol}; {repeats_note(result.repeats)}",
                                       "repeats": result.repeats, "command": command_line(),
                                       "rows": result.rows}, indent=2, default=float))
            print(f"wrote {out}")
