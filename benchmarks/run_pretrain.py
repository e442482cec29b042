"""Many-domain pre-training: does pre-training on five Amazon categories transfer better than on two?

    python benchmarks/run_pretrain.py --data ../shared/data
    python benchmarks/run_pretrain.py --data ../shared/data --targets scientific --save-dir /tmp/bank-pretrain

One item universe holds every part: five Amazon 2014/2018 categories from seqrec-benchmark
(Beauty, Clothing, Health, Toys, Electronics; `--users-per-domain` users drawn from each, so the
five-domain set is about as large as the two-domain one: more domains, not more events), the
two-domain Food+Kitchen set, UniSRec's Scientific, and Steam (a games platform in neither
pre-training set). Every transfer model is run_transfer's interest model (text + ID, domain
adapters, the same settings as run_transfer.py), pre-trained on one source set:

  5-domain   Beauty+Clothing+Health+Toys+Electronics (held-out users of each early-stop it)
  2-domain   Food+Kitchen (its loader's held-out users early-stop it)

then, per target, zero-shot (target items known by text only), adapter fine-tuning (the text
adapters only, UniSRec's parameter-efficient step) and full fine-tuning, against target-only,
target-domain popularity and text neighbours (the newest events' text similarity: no training at
all, the floor zero-shot should clear); transfer-mix is the validation-chosen mix of target-only with
the best of them (never below target-only on validation). Targets: Scientific and Steam
(leave-one-out within the target, full ranking over its items; in no pre-training set), and
with `--targets food,kitchen` also Food and Kitchen (their held-out users; the 2-domain model
then saw the target domain, so only the 5-domain rows are transfer from elsewhere).

Writes benchmarks/results/many-domain.json (rows `<target>/target-only`, `<target>/popularity`, `<target>/text-knn`,
`<target>/<source>:<regime>`; `vs-target-only:NDCG@10` with a paired 95 % bootstrap interval)
and many-domain.png, and regenerates benchmarks/RESULTS.md. Fitted models are kept in
`--save-dir` and reused, so each pre-trained model trains once for every target.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import RESULTS, read, write_json, write_results_md  # noqa: E402
from migrec.cli.common import parse_value  # noqa: E402
from migrec.data import load_amazon_food_kitchen, load_seqrec, load_unisrec  # noqa: E402
from migrec.data.multidomain import combine, hold_out_users, sample_users  # noqa: E402
from migrec.evaluation.evaluator import repeats_note  # noqa: E402
from migrec.evaluation.plots import segment_chart  # noqa: E402
from migrec.hardware import machine_description  # noqa: E402
from migrec.transfer.run import run_transfer  # noqa: E402

FIVE = ["amazon2014-beauty", "amazon2014-clothing", "amazon2014-health", "amazon2014-toy",
        "amazon2018-electronic_1000000"]
SOURCES = {"5-domain": FIVE, "2-domain": ["food", "kitchen"]}
REGIMES = ["transfer-zero-shot", "transfer-adapter", "transfer-full", "transfer-mix"]
KEEP = ["NDCG@10", "HR@10", "Recall@10", "NDCG@50", "Recall@50", "MRR@10", "sampled:NDCG@10", "sampled:HR@10",
        "valid:NDCG@10", "vs-target-only:NDCG@10", "vs-target-only:NDCG@10:lo95", "vs-target-only:NDCG@10:hi95"]


def universe(data: Path, users_per_domain: int, heldout_per_domain: int, seed: int):
    """Every part in one item universe (user ids of different parts are different people)."""
    five = sample_users(load_seqrec(data / "seqrec-benchmark", FIVE), users_per_domain, seed=seed)
    five = hold_out_users(five, FIVE, valid=heldout_per_domain, seed=seed)
    steam = load_seqrec(data / "seqrec-benchmark", "steam_100000")
    fk = load_amazon_food_kitchen(data / "amazon-food-kitchen")
    sci = load_unisrec(data / "amazon-scientific-unisrec", "Scientific")
    return combine(five, fk, sci, steam, name="many-domain")   # seqrec user ids carry their folder already


BASELINES = ["popularity", "text-knn"]


def rows_for(result, target: str, source: str, first: bool) -> list[dict]:
    """The result's rows named `<target>/<model>` (baselines and target-only: from the first source
    only) or `<target>/<source>:<regime>`."""
    rows = []
    for r in result.rows:
        name = r["model"]
        if name in (*BASELINES, "target-only"):
            if not first:
                continue
            label = f"{target}/{name}"
        else:
            label = f"{target}/{source}:{name}"
        row = {"model": label, "metrics": {k: r["metrics"][k] for k in KEEP if k in r["metrics"]},
               "train_seconds": r["train_seconds"], "peak_rss_mb": r["peak_rss_mb"], "repeats": r["repeats"],
               "test_cases": len(result.task.test)}
        for k in ("mix_weight", "mixed_with", "versus_target_only", "negative_transfer"):
            if k in r:
                row[k] = r[k]
        rows.append(row)
    return rows


def order(names) -> list[str]:
    """Row names grouped by target: baselines, target-only, then each source's regimes."""
    first = [*BASELINES, "target-only"]

    def key(name):
        target, _, rest = name.partition("/")
        if rest in first:
            return target, 0, "", first.index(rest)
        source, _, regime = rest.rpartition(":")
        return target, 1, source, REGIMES.index(regime) if regime in REGIMES else len(REGIMES)
    return sorted(names, key=key)


def chart(rows: list, path: Path) -> None:
    """One cluster per target, one bar per (source, regime): test NDCG@10."""
    bars = {}
    for r in rows:
        target, _, label = r["model"].partition("/")
        seg = bars.setdefault(label, {"model": label, "segments": {}})["segments"]
        seg[target] = {"n": r.get("test_cases", "?"), "NDCG@10": r["metrics"]["NDCG@10"]}
    segment_chart(list(bars.values()), "NDCG@10", path, title="Pre-training on 5 domains vs 2: test NDCG@10")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--targets", default="scientific,steam_100000",
                        help="comma-separated target domains (scientific, steam_100000, food, kitchen)")
    parser.add_argument("--sources", default=",".join(SOURCES))
    parser.add_argument("--users-per-domain", type=int, default=10000)
    parser.add_argument("--heldout-per-domain", type=int, default=500)
    parser.add_argument("--max-train-seconds", type=float, default=1800,
                        help="safety cap per model (training stops by patience; the cap is reported if it fired)")
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument("--pretrain-params", default="",
                        help="overrides for the pre-trained models only, e.g. id_dropout=0.5 or domain_adapters=False "
                             "(values as `--param` reads them; rows then read "
                             "`<target>/<source>[id_dropout=0.5]:<regime>`)")
    parser.add_argument("--save-dir", default=None, help="keep fitted models here and reuse them on a re-run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = "python benchmarks/run_pretrain.py " + " ".join(sys.argv[1:] if argv is None else argv)
    data = Path(args.data)
    dataset = universe(data, args.users_per_domain, args.heldout_per_domain, args.seed)
    save_dir = Path(args.save_dir or tempfile.mkdtemp(prefix="migrec-pretrain-"))
    params = {"max_train_seconds": args.max_train_seconds}
    pretrain = {k: parse_value(v) for k, _, v in (p.partition("=") for p in args.pretrain_params.split(",") if p)}
    tag = "".join(f"[{k}={v}]" for k, v in sorted(pretrain.items()))
    rows, protocols = [], {}
    for target in args.targets.split(","):
        first = True
        for source in args.sources.split(","):
            domains = SOURCES[source]
            if target in domains:
                continue
            # target-only runs with every source (the mix and the paired differences need it); the
            # baselines only with the first
            models = [*(BASELINES if first else []), "target-only", *args.regimes.split(",")]
            result, = run_transfer(dataset, targets=[target], source=domains, params=params, validate_on=domains,
                                   models=models, cold_item_share=0.0, save_dir=save_dir, seed=args.seed,
                                   pretrain=pretrain)
            protocols[target] = result.task.protocol
            rows += rows_for(result, target, source + tag, first)
            first = False
            print(f"\n## {target} from {source}\n{result.to_markdown()}", flush=True)
    sizes = dataset.interactions.groupby("domain").agg(users=("user_id", "nunique"), events=("item_id", "size"))
    protocol = (
        "Pre-training sets: 5-domain = " + "+".join(FIVE) + f" from seqrec-benchmark, {args.users_per_domain} users "
        f"drawn per category (seed {args.seed}), {args.heldout_per_domain} of them per category held out to "
        "early-stop the pre-training; 2-domain = amazon-food-kitchen (Food+Kitchen, its held-out users "
        "early-stop it). Events per domain in the universe: "
        + ", ".join(f"{d} {int(r.events):,} ({int(r.users):,} users)" for d, r in sizes.iterrows())
        + ". One item universe, run_transfer's interest model (text+ID, domain adapters, hidden 64, 2 layers, "
        "max_len 50, sampled softmax with 2048 negatives, patience 3, bf16 where native); zero-shot = the "
        "pre-trained model, target items by text only; adapter = its text adapters fine-tuned on the target "
        "users; full = every weight fine-tuned (lr 5e-4); transfer-mix = target-only mixed with the regime of "
        "best validation NDCG@10 at the validation-chosen weight. Per target: "
        + "; ".join(f"{t}: {p}" for t, p in protocols.items())
        + ". text-knn: the newest events' text similarity (models.text_knn), no training. A source label "
        "followed by [name=value] (e.g. 5-domain[id_dropout=0.5]) is a pre-trained model fitted with those "
        "overrides (run_pretrain --pretrain-params)"
        + f". History policy: {repeats_note('exclude')}. vs-target-only:NDCG@10: test NDCG@10 minus target-only's "
        "over the same cases with a paired 95 % bootstrap interval (2000 resamples). train_seconds of a transfer "
        "regime include its pre-training.")
    payload = {"dataset": "many-domain", "protocol": protocol, "machine": machine_description(),
               "command": command, "repeats": "exclude", "rows": rows}
    earlier = read(RESULTS / "many-domain.json")
    out = write_json(payload, order([r["model"] for r in rows + (earlier["rows"] if earlier else [])]))
    chart(read(out)["rows"], RESULTS / "many-domain.png")
    write_results_md()


if __name__ == "__main__":
    main()
