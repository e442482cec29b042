"""Multi-interest benchmark: K interests per user against the single-vector interest model.

    python benchmarks/run_multi_interest.py --data ../shared/data                        # all three
    python benchmarks/run_multi_interest.py --datasets ml-100k --max-train-seconds 240
    python benchmarks/run_multi_interest.py --quick        # smoke: ml-100k, short training, scratch output

Rows `<dataset>/interest` (InterestModel, text + ID) and `<dataset>/multi-interest` (MultiInterestModel,
K=4, trained as ComiRec, items scored by their best interest), plus the same fitted multi-interest model
scored as a mix weighted by the current interest shares or by their Markov forecast, and its calibrated
top-10 (greedy proportional allocation over the active interests); `:max-objective` is a second
multi-interest model trained on the scores it ranks by (every item by its best interest), alone and
calibrated. Metrics: NDCG@10, HR@10, intra-list
diversity and coverage of the top-10, and the same split by how many genres/topics a history spans
(narrow vs eclectic users). Writes benchmarks/results/multi-interest.json and regenerates RESULTS.md;
--quick writes to a scratch folder (default /tmp/migrec-quick) and leaves results/ alone.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))
import _report  # noqa: E402
import run_core  # noqa: E402

from migrec import pipeline  # noqa: E402
from migrec.data import load_amazon_food_kitchen  # noqa: E402
from migrec.drift.topics import TextTopics, category_topics  # noqa: E402
from migrec.encoders import encode_catalogue, make_encoder  # noqa: E402
from migrec.evaluation import metrics as M  # noqa: E402
from migrec.evaluation.evaluator import REPEATS, evaluate, repeats_note  # noqa: E402
from migrec.evaluation.memory import PeakMemory  # noqa: E402
from migrec.hardware import machine_description  # noqa: E402
from migrec.models.interest import InterestModel  # noqa: E402
from migrec.models.multi_interest import MultiInterestModel  # noqa: E402
from migrec.transfer.domains import make_task  # noqa: E402
from migrec.transfer.run import INTEREST as TRANSFER_PARAMS  # noqa: E402

DATASETS = ["ml-1m-u3k", "ml-100k", "food-to-kitchen"]
VARIANTS = ["interest", "multi-interest", "multi-interest:mix-current", "multi-interest:mix-forecast",
            "multi-interest:calibrated", "multi-interest:max-objective", "multi-interest:max-objective+calibrated"]
K_INTERESTS = 4
# the interest model's settings of run_core (ML: batch 32, early stopping by patience, a safety cap;
# ML-1M scores by dot product with ALiBi recency) and of run_transfer (Food -> Kitchen); both models share them
PARAMS = {"ml-100k": run_core.PARAMS["ml-100k"]["interest-text+id"],
          "ml-1m-u3k": run_core.PARAMS["ml-1m-u3k"]["interest-text+id"],
          "food-to-kitchen": {k: v for k, v in TRANSFER_PARAMS.items() if k != "use_id"} | {"domain_adapters": True}}
QUICK = dict(epochs=6, patience=6, max_train_seconds=900)   # a fixed number of epochs: fair on a busy machine


class Calibrated:
    """The model's calibrated top-k as scores the evaluator reads: the list first, in its order,
    then every other item by the model's own score."""

    def __init__(self, model: MultiInterestModel, k: int = 10, candidates=None):
        self.model, self.k, self.name = model, k, "multi-interest:calibrated"
        self.candidates = None if candidates is None else list(model.item_ids_[candidates])

    def score_histories(self, histories):
        scores = np.array(self.model.score_histories(histories), dtype=np.float32, copy=True)
        top = scores.max(initial=0.0) + 1.0 + self.k
        for row, h in enumerate(histories):
            ids, _, _ = self.model.recommend_calibrated(self.model.item_ids_[h], k=self.k, candidates=self.candidates)
            scores[row, self.model.item_index(ids)] = top - np.arange(len(ids))
        return scores


def load(name: str, data: Path, encoder: str):
    """(train, valid, test, candidates or None, topic rows per item, protocol) of one benchmark data set."""
    if name == "food-to-kitchen":
        task = make_task(load_amazon_food_kitchen(data / "amazon-food-kitchen"), target="kitchen", seed=0)
        made_by = make_encoder(encoder)
        task.train.item_vectors = encode_catalogue(task.train.catalogue, made_by, cache_dir=True)
        task.train.encoder = made_by.model_id
        topics = TextTopics(20, seed=0).fit(task.train.item_vectors, task.train.catalogue["title"]).topic_space()
        return task.train, task.valid, task.test, task.candidates, topics, (
            f"Food -> Kitchen: {task.protocol}; both models trained jointly on every domain's sequences "
            f"(the transfer-joint regime, domain adapters), histories mixed; topics: 20 named k-means "
            f"clusters of the item text vectors")
    if name == "ml-100k":
        dataset = pipeline.load_dataset("ml-100k", str(data / "ml-100k"))
    elif name == "ml-1m-u3k":
        dataset = pipeline.load_dataset("ml-1m", str(data / "ml-1m"), ratings="ratings_users_1-2999.dat")
    else:
        raise ValueError(f"unknown benchmark data set {name!r}; choose from {DATASETS}")
    split = pipeline.prepare_split(dataset, encoder=encoder)
    return split.train, split.valid, split.test, None, category_topics(split.train.catalogue), (
        f"{split.protocol}; full ranking over all {split.train.n_items} items; topics: the genres")


def eclecticism(histories, item_topics: np.ndarray) -> np.ndarray:
    """Effective number of topics a history spans: exp(entropy) of its mean topic shares."""
    out = np.ones(len(histories))
    for i, h in enumerate(histories):
        if len(h):
            p = item_topics[np.asarray(h)].mean(0)
            p = p[p > 0] / p.sum()
            out[i] = float(np.exp(-(p * np.log(p)).sum()))
    return out


def measure(scorer, train, test, candidates, eclectic: np.ndarray, repeats: str) -> dict:
    result = evaluate(scorer, test, train, ks=(10,), item_vectors=train.item_vectors, segments=False,
                      candidates=candidates, repeats=repeats)
    m = {k: result.metrics[k] for k in ("NDCG@10", "HR@10", "diversity@10", "coverage@10")}
    per = M.accuracy_per_user(result.per_user["ranks"], 10)
    for label, sel in (("narrow", ~eclectic), ("eclectic", eclectic)):
        m[f"{label}:n"] = int(sel.sum())
        m[f"{label}:NDCG@10"] = float(per["NDCG"][sel].mean())
        m[f"{label}:HR@10"] = float(per["HR"][sel].mean())
        m[f"{label}:diversity@10"] = float(np.nanmean(result.per_user["diversity@10"][sel]))
    return m


def run(name: str, data: Path, encoder: str, quick: bool, cap: float | None, repeats: str) -> tuple[list, str]:
    train, valid, test, candidates, topics, protocol = load(name, data, encoder)
    spread = eclecticism(test.histories, topics.item_topics)
    threshold = float(np.median(spread))
    eclectic = spread > threshold
    params = dict(PARAMS[name], **(QUICK if quick else {}))
    if cap is not None:
        params["max_train_seconds"] = cap
    rows, fitted = [], {}
    for variant, make in (("interest", lambda: InterestModel(use_id=True, **params)),
                          ("multi-interest", lambda: MultiInterestModel(n_interests=K_INTERESTS, **params)),
                          ("multi-interest:max-objective",
                           lambda: MultiInterestModel(n_interests=K_INTERESTS, objective="max", **params))):
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            model = make().fit(train, valid)
            seconds = time.perf_counter() - t0
        model.name = variant
        fitted[variant] = model
        metrics = measure(model, train, test, candidates, eclectic, repeats)
        rows.append({"model": f"{name}/{variant}", "metrics": metrics, "train_seconds": seconds,
                     "peak_rss_mb": mem.peak_mb, "training": dict(model.training_)})
        print(f"{name}/{variant}: {rows[-1]['metrics']} ({seconds:.0f} s)", flush=True)
    multi = fitted["multi-interest"]
    for variant, scorer in (("multi-interest:mix-current", multi.clone().set_params(mode="mix", mix_weights="current")),
                            ("multi-interest:mix-forecast", multi.clone().set_params(mode="mix",
                                                                                     mix_weights="forecast")),
                            ("multi-interest:calibrated", Calibrated(multi, 10, candidates)),
                            ("multi-interest:max-objective+calibrated",
                             Calibrated(fitted["multi-interest:max-objective"], 10, candidates))):
        rows.append({"model": f"{name}/{variant}", "metrics": measure(scorer, train, test, candidates, eclectic,
                                                                      repeats),
                     "train_seconds": None, "peak_rss_mb": None})
        print(f"{name}/{variant}: {rows[-1]['metrics']}", flush=True)
    note = (f"{name}: {protocol}; narrow = test histories spanning at most {threshold:.2f} effective topics "
            f"(exp of the entropy of their mean topic shares; the median), eclectic = more")
    return rows, note


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    p.add_argument("--datasets", nargs="+", default=None, choices=DATASETS, help=f"default: all ({DATASETS})")
    p.add_argument("--encoder", default="st")
    p.add_argument("--max-train-seconds", type=float, default=None,
                   help="safety cap per model (default: the data set's own, as run_core / run_transfer)")
    p.add_argument("--repeats", default="exclude", choices=REPEATS)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: ml-100k only, training capped ({QUICK}), written to --out")
    p.add_argument("--out", default="/tmp/migrec-quick", help="results folder of a --quick run")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    datasets = args.datasets or (["ml-100k"] if args.quick else DATASETS)
    if args.quick:
        _report.RESULTS = Path(args.out)     # a smoke run never touches benchmarks/results
    command = "python benchmarks/run_multi_interest.py " + " ".join(sys.argv[1:] if argv is None else argv)
    # each data set's note and machine are kept per data set, so rows kept from an earlier run keep theirs
    previous = _report.read(_report.RESULTS / "multi-interest.json") or {}
    runs = dict(previous.get("runs", {}))
    rows = []
    for name in datasets:
        r, note = run(name, Path(args.data), args.encoder, args.quick, args.max_train_seconds, args.repeats)
        rows += r
        runs[name] = {"note": note, "machine": machine_description(), "command": command}
    present = [d for d in DATASETS if d in runs]
    machines = {runs[d]["machine"] for d in present}
    machine = machines.pop() if len(machines) == 1 else " | ".join(f"{d} rows: {runs[d]['machine']}"
                                                                   for d in present)
    protocol = (f"{'QUICK SMOKE RUN (training capped, not a result). ' if args.quick else ''}"
                f"InterestModel (text + ID items) vs MultiInterestModel (K={K_INTERESTS} self-attentive interests "
                f"over the same transformer, each target trained on its best interest), same hyper-parameters, "
                f"early stopping on validation NDCG@10; :max-objective trains every softmax item on its best "
                f"interest instead of ComiRec's rule (the target's best interest for all items). Rows :mix-current / "
                f":mix-forecast score the same fitted multi-interest model by log sum_k w_k softmax(sim_k) with "
                f"w = the current interest shares of the newest 20 events / their Markov forecast; :calibrated is a "
                f"model's greedy proportional top-10 over its interests with weight >= 5% (near-duplicates "
                f"merged). diversity@10 = mean pairwise cosine distance of the top-10's text vectors; coverage@10 = "
                f"share of candidate items in any top-10. "
                f"{repeats_note(args.repeats)}. " + " | ".join(runs[d]["note"] for d in present))
    out = _report.write_json({"dataset": "multi-interest", "protocol": protocol, "machine": machine,
                              "command": command, "runs": runs, "rows": rows},
                             order=[f"{d}/{v}" for d in DATASETS for v in VARIANTS], kept_machine=False)
    if not args.quick:
        _report.write_results_md()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
