"""Cold items in Food <-> Kitchen: does borrowing neighbours' ID parts make never-clicked items compete?

    python benchmarks/run_cold_items.py --data ../shared/data --save-dir /tmp/bank-fk

run_transfer's Food <-> Kitchen task (10 % of each domain's items held out of all training data),
its fitted interest models (target-only, transfer-full, transfer-joint; reused from `--save-dir`,
where run_transfer.py --save-dir keeps them), each scored with InterestModel(cold_neighbours=k)
for every k of `--ks`: an item with no training events gets, at inference only, the cosine-weighted
mean ID part of its k nearest seen items by text (same domain); k = 0 is the text-only row the
models were trained with, so every row of one model shares the same weights. Text neighbours
(text-knn: no training) are the reference, and `<model>+text-on-cold` mixes them into the model's
scores of the unseen items only (transfer.ValidatedMix(items=...)), the weight chosen on validation;
`+fresh-slot` keeps place 10 of the list for the model's best-scored unseen item (models.FreshSlot).
Writes benchmarks/results/cold-items.json (rows `<direction>/<model>[cold_neighbours=k]`;
`cold-items:*` over the test cases whose target is a held-out item, `cold-items:median_rank` the
median full-ranking rank of those targets, 1 = top; `*-among-cold`: the same targets ranked among
the cold items only, the ceiling of any policy reserving places for cold items; `cold-events:*`: every
cold target-domain event of the same test users, after its prefix, a cold set several times larger)
and regenerates benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_json, write_results_md  # noqa: E402
from migrec.data import load_amazon_food_kitchen  # noqa: E402
from migrec.evaluation import metrics as M  # noqa: E402
from migrec.evaluation.evaluator import evaluate, policy_ranks, repeats_note  # noqa: E402
from migrec.hardware import machine_description  # noqa: E402
from migrec.models.fresh_slot import FreshSlot  # noqa: E402
from migrec.transfer.mix import ValidatedMix  # noqa: E402
from migrec.transfer.regimes import TransferExperiment  # noqa: E402
from migrec.transfer.run import transfer_setup  # noqa: E402

MODELS = ["target-only", "transfer-full", "transfer-joint"]


def ranks_among(scorer, evalset, item_sets) -> list[np.ndarray]:
    """0-based ranks [cases, 1] of the targets among each of `item_sets` (every history item masked,
    repeats=exclude), from one scoring pass over the cases."""
    scores = np.asarray(scorer.score_histories([np.asarray(h) for h in evalset.histories]), dtype=np.float32)
    out = []
    for items in item_sets:
        part = np.full_like(scores, -np.inf)
        part[:, items] = scores[:, items]
        out.append(policy_ranks(part, evalset.histories, evalset.targets, "exclude"))
    return out


def measure(scorer, task, train) -> dict:
    """Full-ranking test metrics overall and on the cold-item cases, plus validation NDCG@10."""
    # cold targets are also ranked among the target domain's cold items only: the ceiling of any
    # policy that slots cold items into the list (reserved places, a calibrated prior)
    among = np.flatnonzero(task.cold_mask & task.target_mask)
    ranks, inner = ranks_among(scorer, task.test, [task.candidates, among])
    cold = task.cold_item_cases()
    out = {k: v for k, v in M.accuracy_metrics(ranks, (10, 50)).items() if k in ("NDCG@10", "HR@10", "Recall@50")}
    out["valid:NDCG@10"] = evaluate(scorer, task.valid, train, ks=(10,), candidates=task.candidates, beyond=False,
                                    segments=False, repeats="exclude").metrics["NDCG@10"]
    # the validation cases whose target is a cold item: where a setting for cold items is chosen
    cold_valid = task.valid.subset(task.cold_item_cases(task.valid))
    out["valid:cold-items:n"] = len(cold_valid)
    out["valid:cold-items:HR@10"] = evaluate(scorer, cold_valid, train, ks=(10,), candidates=task.candidates,
                                             beyond=False, segments=False, repeats="exclude").metrics["HR@10"]
    out["cold-items:n"] = int(cold.sum())
    out.update({f"cold-items:{k}": v for k, v in M.accuracy_metrics(ranks[cold], (10, 50)).items()
                if k in ("HR@10", "NDCG@10", "HR@50")})
    out["cold-items:median_rank"] = float(np.median(ranks[cold]) + 1)
    out.update({f"cold-items:{k}-among-cold": v for k, v in M.accuracy_metrics(inner[cold], (1, 10)).items()
                if k in ("HR@1", "HR@10")})
    # a larger cold set from the same test users: every cold target-domain event of theirs, after its prefix
    events = task.cold_item_events()
    wide, inner = ranks_among(scorer, events, [task.candidates, among])
    out["cold-events:n"] = len(events)
    out.update({f"cold-events:{k}": v for k, v in M.accuracy_metrics(wide, (10, 50)).items()
                if k in ("HR@10", "HR@50")})
    out.update({f"cold-events:{k}-among-cold": v for k, v in M.accuracy_metrics(inner, (1, 10)).items()
                if k in ("HR@1", "HR@10")})
    out["warm-items:NDCG@10"] = M.accuracy_metrics(ranks[~cold], (10,))["NDCG@10"]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--ks", default="0,3,10,30", help="cold_neighbours values (0: text-only cold rows)")
    parser.add_argument("--save-dir", default=None, help="fitted models kept here (shared with run_transfer.py)")
    parser.add_argument("--extra-valid", type=int, default=0, metavar="N",
                        help="as run_transfer.py --extra-valid (the same N reuses its saved models)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = "python benchmarks/run_cold_items.py " + " ".join(sys.argv[1:] if argv is None else argv)
    ks = [int(k) for k in args.ks.split(",")]
    fk = load_amazon_food_kitchen(Path(args.data) / "amazon-food-kitchen")
    tasks, bank = transfer_setup(fk, ["kitchen", "food"],
                                 save_dir=args.save_dir and Path(args.save_dir) / "food-kitchen",
                                 extra_valid=args.extra_valid)
    rows = []
    for task in tasks:
        exp = TransferExperiment(task, bank, ["text-knn"] + MODELS)
        text, seconds, peak = exp.build("text-knn")
        rows.append({"model": f"{task.name}/text-knn", "metrics": measure(text, task, bank.train),
                     "train_seconds": seconds, "peak_rss_mb": peak})
        for name in MODELS:
            scorer, seconds, peak = exp.build(name)
            model = getattr(scorer, "model", scorer)          # target-only is a DomainView around it
            for k in ks:
                model.set_params(cold_neighbours=k)
                metrics = measure(scorer, task, bank.train)
                label = f"{task.name}/{name}[cold_neighbours={k}]"
                print(label, {m: round(v, 4) for m, v in metrics.items()}, flush=True)
                rows.append({"model": label, "metrics": metrics, "train_seconds": seconds, "peak_rss_mb": peak})
                slot = FreshSlot(scorer, position=10, candidates=task.candidates).fit(bank.train)
                metrics = measure(slot, task, bank.train)
                print(label + "+fresh-slot", {m: round(v, 4) for m, v in metrics.items()}, flush=True)
                rows.append({"model": label + "+fresh-slot", "metrics": metrics, "train_seconds": seconds,
                             "peak_rss_mb": peak})
            model.set_params(cold_neighbours=0)
            unseen = np.flatnonzero(bank.train.item_counts() == 0)
            mix = ValidatedMix(scorer, text, candidates=task.candidates, items=unseen).fit(bank.train, task.valid)
            metrics = measure(mix, task, bank.train)
            print(f"{task.name}/{name}+text-on-cold", mix.weight_, mix.valid_ndcg_, flush=True)
            rows.append({"model": f"{task.name}/{name}+text-on-cold", "metrics": metrics, "train_seconds": seconds,
                         "peak_rss_mb": peak, "mix_weight": mix.weight_, "valid_by_weight": mix.valid_ndcg_})
    protocol = (f"Amazon Food-Kitchen: {tasks[0].protocol}. Both directions (food-to-kitchen, kitchen-to-food), "
                f"the target domain's held-out users; full ranking among the target domain's items; history policy: "
                f"{repeats_note('exclude')}. Models: run_transfer's interest models (text + ID, domain "
                f"adapters), trained once with text-only cold rows; [cold_neighbours=k] scores the same weights "
                f"with each unseen item's ID part borrowed from its k nearest seen items by text (same domain), "
                f"k = 0 being the model as trained; +text-on-cold: text neighbours (the last event's text similarity) "
                f"mixed into the unseen items' standardised scores only, at the weight (0-1) of best validation "
                f"NDCG@10 (mix_weight; valid_by_weight). +fresh-slot: the same scores with place 10 of the list kept "
                f"for the best-scored item without training events when none is in the first 10 (models.FreshSlot). "
                f"valid:cold-items: the validation cases whose target is a held-out item. cold-items: test cases whose target is a held-out item "
                f"(median_rank: 1 = top of the full ranking; HR@k-among-cold: those targets ranked among the "
                f"domain's cold items only, the ceiling of any policy that reserves places for cold items); "
                f"warm-items: the other cases. cold-events: a larger cold set from the same test users, every event "
                f"of theirs (history or target) on a cold target-domain item, the events before it as history "
                f"(TransferTask.cold_item_events; events with nothing before are left out). train_seconds: "
                f"the model's fit (a transfer regime's includes pre-training), the same for every k.")
    write_json({"dataset": "cold-items", "protocol": protocol, "machine": machine_description(),
                "command": command, "rows": rows})
    write_results_md()


if __name__ == "__main__":
    main()
