"""Transfer benchmark: regimes vs target-only vs baselines, Food <-> Kitchen and Food+Kitchen -> Scientific.

    python benchmarks/run_transfer.py --data ../shared/data                     # everything
    python benchmarks/run_transfer.py --data ../shared/data --only food-kitchen
    python benchmarks/run_transfer.py --data ../shared/data --only scientific

Writes benchmarks/results/{food-to-kitchen,kitchen-to-food,scientific}.json (plain keys:
full ranking within the target domain; `sampled:` keys: the target among 999 items
sampled from the target domain; segment keys such as `cold-users:NDCG@10`), a chart
per file comparing the regimes per segment, and regenerates benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import RESULTS, read, write_json, write_results_md  # noqa: E402
from migrec.cli.common import parse_value  # noqa: E402
from migrec.data import load_amazon_food_kitchen, load_unisrec  # noqa: E402
from migrec.data.multidomain import combine  # noqa: E402
from migrec.hardware import machine_description  # noqa: E402
from migrec.evaluation.evaluator import REPEATS, repeats_note  # noqa: E402
from migrec.evaluation.plots import segment_chart  # noqa: E402
from migrec.transfer import ALL, flag_negative_transfer  # noqa: E402
from migrec.transfer.run import run_transfer  # noqa: E402

ORDER = ["popularity", "text-knn", "sasrec", "emcdr-mf", "target-only", "transfer-zero-shot",
         "transfer-zero-shot+text", "transfer-adapter", "transfer-full", "transfer-joint", "transfer-mapping",
         "transfer-mix", "transfer-mix+text"]
# rows that start from the pre-trained source model: with --pretrain-params they carry its tag
PRETRAINED = ("transfer-zero-shot", "transfer-zero-shot+text", "transfer-adapter", "transfer-full", "transfer-mix",
              "transfer-mix+text")
SEGMENTS = ["cold-users", "target-events:1-3", "target-events:4+", "cold-items", "warm-items"]


def save(result, dataset: str, command: str, extra_protocol: str = "", tag: str = "") -> None:
    task = result.task
    if tag:      # a pre-training variant: its regimes' rows are named apart, the plain rows stay
        result.rows = [{**r, "model": r["model"] + tag} for r in result.rows if r["model"] in PRETRAINED]
        extra_protocol += (f" Rows ending in {tag} start from a source model pre-trained with those overrides "
                           "(run_transfer.py --pretrain-params); transfer-mix may pick transfer-joint, which has none.")
    skipped = task.notes.get("skipped")
    protocol = (f"{task.protocol}. Sources: {', '.join(task.source)}; target: {task.target}. History policy: "
                f"{repeats_note(result.repeats)}. Plain keys: full ranking among the target domain's items; "
                f"sampled: keys: the target among 999 target-domain items sampled uniformly from those the policy "
                f"leaves rankable; segment keys: the same metrics on "
                f"cases whose history has 0 target events (cold-users: target events removed from the held-out "
                f"histories), 1-3 or 4+ target events, or whose target is a held-out item (cold-items). "
                f"valid:NDCG@10 decides the negative-transfer flag; vs-target-only:NDCG@10 is the regime's test "
                f"NDCG@10 minus target-only's over the same cases, with a paired 95 % bootstrap interval "
                f"(:lo95, :hi95; 2000 resamples of the cases). transfer-mix mixes target-only with the other "
                f"regime of best validation NDCG@10 (mixed_with) at the weight chosen on validation "
                f"(mix_weight); transfer-mix+text mixes transfer-mix with text neighbours (the last event's "
                f"text similarity) at a weight chosen on validation from 0-0.5; transfer-zero-shot+text mixes the "
                f"zero-shot model with text neighbours at a weight chosen on the source domains' validation cases "
                f"(no target data). train_seconds of a transfer regime include its pre-training.{extra_protocol}")
    if skipped:
        protocol += f" Not applicable (no overlapping users): {', '.join(skipped)}."
    rows = []
    for r in result.rows:
        m = r["metrics"]
        segs = {"all": {"n": len(task.test), "NDCG@10": m["NDCG@10"], "HR@10": m["HR@10"]}}
        for s in SEGMENTS:
            if f"{s}:NDCG@10" in m:
                segs[s] = {"n": m[f"{s}:n"], "NDCG@10": m[f"{s}:NDCG@10"], "HR@10": m[f"{s}:HR@10"]}
        rows.append({**r, "segments": segs})
    payload = {"dataset": dataset, "protocol": protocol, "repeats": result.repeats, "machine": machine_description(),
               "command": command, "rows": rows}
    # rows of models not re-run stay; flags are redone against the current target-only
    order = ORDER + [n + tag for n in ORDER if n in PRETRAINED] if tag else ORDER
    rows = read(write_json(payload, order, finalize=flag_negative_transfer))["rows"]
    segment_chart(rows, "NDCG@10", RESULTS / f"{dataset}.png", title=f"{dataset}: NDCG@10 per segment")
    result.rows = rows
    print(f"\n## {dataset}\n{result.to_markdown()}")
    if result.negative_transfer:
        print("negative transfer (valid NDCG@10 below target-only):", ", ".join(result.negative_transfer))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--only", choices=["food-kitchen", "scientific"], default=None)
    parser.add_argument("--models", default=",".join(ALL))
    parser.add_argument("--max-train-seconds", type=float, default=600)
    parser.add_argument("--text-layers", type=int, default=0,
                        help="the interest models fine-tune MiniLM's top k layers (InterestModel(text_layers=k))")
    parser.add_argument("--save-dir", default=None, help="keep fitted models here and reuse them on a re-run")
    parser.add_argument("--repeats", default="exclude", choices=REPEATS,
                        help="history policy: exclude (every history item masked, a repeated target is a miss) "
                             "or allow (nothing masked)")
    parser.add_argument("--extra-valid", type=int, default=0, metavar="N",
                        help="Food-Kitchen: N training users active in both domains give their last event to "
                             "validation (make_task(extra_valid=N)); the held-out valid users alone are few")
    parser.add_argument("--pretrain-params", default="",
                        help="Food-Kitchen: overrides for the source models the regimes start from, e.g. "
                             "domain_dropout=0.5; their rows read transfer-full[domain_dropout=0.5] and so on")
    parser.add_argument("--seed", type=int, default=0,
                        help="Food-Kitchen: draws the cold items, the --extra-valid users and the models' seeds; "
                             "a seed other than 0 writes <direction>-seed<N>.json beside the seed-0 files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = "python benchmarks/run_transfer.py " + " ".join(sys.argv[1:] if argv is None else argv)
    models = args.models.split(",")
    params = {"max_train_seconds": args.max_train_seconds}
    if args.text_layers:
        params["text_layers"] = args.text_layers
    pretrain = {k: parse_value(v) for k, _, v in (p.partition("=") for p in args.pretrain_params.split(",") if p)}
    tag = "".join(f"[{k}={v}]" for k, v in sorted(pretrain.items()))
    data = Path(args.data)
    fk = load_amazon_food_kitchen(data / "amazon-food-kitchen")
    if args.only in (None, "food-kitchen"):
        to_kitchen, to_food = run_transfer(fk, targets=["kitchen", "food"], models=models, params=params,
                                           save_dir=args.save_dir and Path(args.save_dir) / "food-kitchen",
                                           repeats=args.repeats, extra_valid=args.extra_valid,
                                           pretrain=pretrain, seed=args.seed)
        suffix = f"-seed{args.seed}" if args.seed else ""
        save(to_kitchen, "food-to-kitchen" + suffix, command, tag=tag)
        save(to_food, "kitchen-to-food" + suffix, command, tag=tag)
    if args.only in (None, "scientific") and (pretrain or args.seed):
        raise SystemExit("--pretrain-params and --seed apply to --only food-kitchen")
    if args.only in (None, "scientific"):
        sci = load_unisrec(data / "amazon-scientific-unisrec", "Scientific")
        both = combine(fk, sci, name="food+kitchen+scientific")
        result, = run_transfer(both, targets=["scientific"], source=["food", "kitchen"], models=models,
                               params=params, validate_on=["food", "kitchen"], cold_item_share=0.0,
                               save_dir=args.save_dir and Path(args.save_dir) / "scientific",
                               repeats=args.repeats)
        save(result, "scientific", command,
             " Pre-training: Food+Kitchen (their held-out valid users early-stop it); UniSRec's Scientific files, "
             "leave-one-out, full ranking over its 4,385 items; no items held out here, so the figures compare with "
             "published Scientific results.")
    write_results_md()


if __name__ == "__main__":
    main()
