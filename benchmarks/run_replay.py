"""Replay benchmark: no-update vs incremental (partial_fit) vs full retrain, week by week.

    python benchmarks/run_replay.py --data ../shared/data                                  # ML-100K, all
    python benchmarks/run_replay.py --data ../shared/data --models interest-text+id \
        --strategies full-retrain --retrain-every 2                                        # one slow part

Trains each model on the events before the start time (the `--start-quantile` of all
timestamps), then steps through the later weeks (see migrec.evaluation.replay). The
first fit of each model is saved under runs/replay/ and reused, so strategies run in
separate processes start from the same weights. Writes benchmarks/results/<name>.json
(rows "<model>/<strategy>", each with its per-step series under "steps"), a chart of
NDCG@10 per step, and regenerates RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import RESULTS, read, write_json, write_results_md  # noqa: E402
from migrec import pipeline  # noqa: E402
from migrec.data.schema import TIME  # noqa: E402
from migrec.evaluation import PeakMemory  # noqa: E402
from migrec.hardware import machine_description  # noqa: E402
from migrec.evaluation.evaluator import REPEATS, repeats_note  # noqa: E402
from migrec.evaluation.replay import STRATEGIES, EventLog, fit_until, replay_evaluate  # noqa: E402
from migrec.models.base import Recommender  # noqa: E402

HERE = Path(__file__).resolve().parent
RUNS = HERE.parent / "runs" / "replay"
SEQ = dict(hidden=64, layers=2, heads=2, max_len=200, dropout=0.5, lr=2e-3, batch_size=128, epochs=200,
           patience=5, precision="auto", progress=False, max_train_seconds=150, device="cpu")
PARAMS = {"interest-text+id": SEQ, "sasrec": SEQ, "als": dict(factors=64, regularization=0.05, alpha=10.0, threads=1)}
SEQ_1M = dict(SEQ, dropout=0.2, patience=3, max_train_seconds=300)    # as run_core's ML-1M, smaller budget
PARAMS_1M = {**PARAMS, "interest-text+id": SEQ_1M, "sasrec": SEQ_1M}
SETS = {"ml-100k": ("replay", dict()), "ml-1m-u3k": ("replay-ml-1m-u3k", dict(ratings="ratings_users_1-2999.dat"))}


def load(name: str, data: Path):
    kind = "ml-100k" if name == "ml-100k" else "ml-1m"
    return pipeline.load_dataset(kind, str(data / kind), **SETS[name][1])


def initial_model(name, make, dataset, start, vectors, dataset_name):
    """Fit once on the events before `start`; reuse the saved fit on later runs."""
    path = RUNS / f"{dataset_name}-{name}-{int(start)}"
    if (path / "fit.json").exists():
        model = Recommender.load(path)
        model.name = name
        return model, json.loads((path / "fit.json").read_text())
    with PeakMemory() as pm:
        model = fit_until(make, EventLog(dataset), start, vectors)
    model.save(path)
    fit = {"seconds": pm.seconds, "peak_mb": pm.peak_mb}
    (path / "fit.json").write_text(json.dumps(fit))
    return model, fit


def run(args, name: str, command: str) -> None:
    import torch

    torch.set_num_threads(1)
    dataset = load(name, Path(args.data))
    vectors = None
    if any(m in pipeline.TEXT_MODELS for m in args.models):
        vectors = pipeline.prepare_split(dataset, encoder=args.encoder).train.item_vectors
    start = float(np.quantile(dataset.interactions[TIME].to_numpy(dtype=float), args.start_quantile))
    out_name = SETS[name][0]
    rows = []
    for m in args.models:
        params = (PARAMS_1M if name == "ml-1m-u3k" else PARAMS).get(m, {})
        make = lambda m=m, params=params: pipeline.build_model(m, **params)  # noqa: E731
        model, fit = initial_model(m, make, dataset, start, vectors if m in pipeline.TEXT_MODELS else None, name)
        with PeakMemory() as run_pm:
            results = replay_evaluate(dataset, make, start, period=args.days * 86400.0,
                                      strategies=args.strategies, retrain_every=args.retrain_every,
                                      max_steps=args.max_steps,
                                      item_vectors=vectors if m in pipeline.TEXT_MODELS else None,
                                      partial_fit_kw=dict(epochs=args.epochs, replay=args.replay), initial=model,
                                      repeats=args.repeats)
        for strategy, res in results.items():
            summary = res.summary()
            metrics = {"NDCG@10": summary["NDCG@10"], "HR@10": summary["HR@10"],
                       "update_seconds": summary["update_seconds"], "NDCG@10:pooled": summary["NDCG@10:pooled"],
                       "HR@10:pooled": summary["HR@10:pooled"], "cases": summary["cases"]}
            print(f"{m}/{strategy}: {metrics}")
            rows.append({"model": f"{m}/{strategy}", "metrics": metrics,
                         "train_seconds": fit["seconds"], "repeats": res.repeats,
                         "peak_rss_mb": run_pm.peak_mb,
                         "retrain_every": args.retrain_every if strategy == "full-retrain" else None,
                         "steps": [{"step": s["step"], "start": s["start"], "events": s["events"],
                                    "cases": s["cases"], "NDCG@10": s["metrics"].get("NDCG@10"),
                                    "HR@10": s["metrics"].get("HR@10"), "update_seconds": s["update_seconds"]}
                                   for s in res.steps]})
    protocol = (f"replay: fit on events before the {args.start_quantile:.2f} quantile of timestamps "
                f"(t={start:.0f}; last event per user held out for early stopping), then {args.days}-day steps: "
                f"users active in the step with prior history are ranked from all their earlier events; targets "
                f"= the step's distinct items; full ranking over all {len(dataset.catalogue)} catalogue items, "
                f"{repeats_note(args.repeats)}; metrics = mean over steps. incremental = partial_fit(epochs={args.epochs}, "
                f"replay={args.replay}); full-retrain = refit from scratch every retrain_every steps "
                f"(train_seconds = the first fit; update_seconds = mean per step's update; peak RSS over the replay)")
    previous = read(RESULTS / f"{out_name}.json")      # runs of other models/strategies keep their command
    commands = [c for c in (previous or {}).get("command", "").split(" ; ") if c and c != command]
    payload = {"dataset": out_name, "protocol": protocol, "repeats": args.repeats, "machine": machine_description(),
               "command": " ; ".join(commands + [command]), "rows": rows}
    write_json(payload)
    chart(RESULTS / f"{out_name}.json")


def chart(path: Path) -> None:
    from migrec.evaluation.plots import _pyplot

    payload = read(path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in payload["rows"]:
        steps = [s for s in r["steps"] if s["NDCG@10"] is not None]
        ax.plot([s["step"] for s in steps], [s["NDCG@10"] for s in steps], marker="o", label=r["model"])
    ax.set_xlabel("step after the training cut (see protocol for its length)")
    ax.set_ylabel("NDCG@10 (full ranking)")
    ax.set_title(f"{payload['dataset']}: NDCG@10 per replay step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--datasets", nargs="+", default=["ml-100k"], choices=sorted(SETS))
    parser.add_argument("--models", default="interest-text+id,als")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--start-quantile", type=float, default=0.8)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--retrain-every", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1, help="partial_fit epochs per step")
    parser.add_argument("--replay", type=float, default=1.0, help="replay windows per new window")
    parser.add_argument("--repeats", default="exclude", choices=REPEATS,
                        help="history policy: exclude (every history item masked, a step item the user had "
                             "before is a miss) or allow (nothing masked)")
    parser.add_argument("--encoder", default="st")
    args = parser.parse_args(argv)
    args.models, args.strategies = args.models.split(","), args.strategies.split(",")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    command = "python benchmarks/run_replay.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for name in args.datasets:
        run(args, name, command.strip())
    write_results_md()


if __name__ == "__main__":
    main()
