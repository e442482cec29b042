"""`migrec demo`: the whole pipeline on MovieLens-100K, start to finish.

Load -> leave-one-out split -> encode item text with the bundled MiniLM -> fit the
baselines and both interest models -> full-ranking comparison table and chart -> one
user's recent history, top-10 with titles, and what drove the first recommendation.
"""
from __future__ import annotations

import time

import numpy as np

from .. import pipeline
from ..data import Histories
from ..drift.report import demo_section
from ..evaluation import Experiment
from .common import DEFAULT_MODELS, command_line, show_recommendations

# The benchmark's MovieLens-100K settings (bf16 only where the CPU has it natively: migrec.hardware),
# early stopping with a 2-minute safety cap per sequential model; the whole demo took 4 minutes on
# a 2-core Zen 4 (bf16), where SASRec (0.090), interest-text (0.078) and interest-text+id (0.082)
# all beat ALS (0.071) on test NDCG@10.
_SEQ = dict(hidden=64, max_len=200, dropout=0.5, lr=2e-3, batch_size=32, epochs=200, patience=5,
            max_train_seconds=120, precision="auto")
DEMO_PARAMS = {"sasrec": _SEQ, "interest-text": _SEQ, "interest-text+id": _SEQ}


def cmd_demo(args) -> None:
    run_demo(data=args.data, out=args.out, quick=args.quick, encoder=args.encoder, cache=args.cache)


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on MovieLens-100K")
    p.add_argument("--data", default=None, help="MovieLens-100K folder (default ../shared/data/ml-100k)")
    p.add_argument("--out", default="runs/demo", help="where the table, JSON and chart go")
    p.add_argument("--quick", action="store_true", help="short training budgets (for a smoke run)")
    p.add_argument("--encoder", default="st")
    p.add_argument("--cache", default=None)
    p.set_defaults(func=cmd_demo)


def run_demo(data=None, out="runs/demo", quick=False, encoder="st", cache=None) -> dict:
    started = time.time()
    print("migrec demo: MovieLens-100K, leave-one-out, full ranking over all items\n")
    dataset = pipeline.load_dataset("ml-100k", data)
    print(f"[data] {dataset.summary()}")
    split = pipeline.prepare_split(dataset, encoder=encoder, cache_dir=pipeline.cache_dir_for(cache))
    print(f"[split] {split.protocol}; {split.train.n_users} users, {split.train.n_items} items, "
          f"{split.train.n_interactions} training events")
    print(f"[encode] item text -> {split.train.item_vectors.shape[1]}-dim vectors ({encoder})")
    models = {}
    for name in DEFAULT_MODELS:
        params = dict(DEMO_PARAMS.get(name, {}))
        if quick and name in pipeline.SEQUENTIAL:
            params.update(epochs=3, max_train_seconds=20)
        models[name] = pipeline.build_model(name, **params)
    result = Experiment(split, models, ks=(10, 20), item_vectors=split.train.item_vectors).run()

    out = result.save(out, dataset="ml-100k", protocol=split.protocol, command=command_line())
    print(f"\n[results] written to {out}/results.json, results.md and comparison.png")

    # One user, as a person would look at it: the newest events and what comes next.
    # Their history is everything known before the test item: training events + validation item.
    model = models["interest-text+id"]
    histories = Histories.from_cases(split.train, split.test)
    case = int(np.argmax([len(h) for h in split.test.histories[:50]]))
    user = str(split.train.user_ids[split.test.users[case]])
    show_recommendations(model, split.train.catalogue, histories[user], who=f"User {user}", k=10)

    # Interest migration over time: one real user whose tastes moved (a few seconds).
    demo_section(data)
    print(f"\ndemo finished in {time.time() - started:.0f} s")
    return {"result": result, "models": models, "split": split}
