"""Text-only and text+ID interest models, and their validated mix, on one target domain.

    python benchmarks/run_text_mix.py --data ../shared/data [--targets scientific,steam_100000]

Per target (leave-one-out within the domain, full ranking over its items, repeats=exclude), two
target-only interest models with run_transfer's settings: `text+id` as run_transfer fits it (item =
adapted text + ID embedding), and `text-only` (use_id=False: items known only through their text,
UniSRec's inductive setting; batch 64 and the full softmax, the best of a small sweep on Scientific's
validation), then `text+id+text-only` = transfer.ValidatedMix of the two, its weight chosen on
validation NDCG@10 (0 = text+id alone, so it is never below text+id on validation), and
`text+id+text-only+text-knn` = that mix mixed in turn with text neighbours (models.text_knn: the
newest events' text similarity, no training), the weight again chosen on validation from
transfer.regimes.TEXT_GRID (0 = the mix), as run_transfer's transfer-mix+text does. Each row's
`vs-text+id:NDCG@10` is the test difference to text+id over the same cases with a paired 95 %
bootstrap interval. `--seeds 0,1,2` repeats it with other model seeds (rows `...[seed=s]`): bf16 training
on 2 threads is not bit-reproducible, so seeds show the spread. Writes benchmarks/results/text-mix.json
and regenerates benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_json, write_results_md  # noqa: E402
from migrec.data import load_seqrec, load_unisrec  # noqa: E402
from migrec.evaluation import metrics as M  # noqa: E402
from migrec.evaluation.evaluator import evaluate, repeats_note  # noqa: E402
from migrec.evaluation.memory import PeakMemory  # noqa: E402
from migrec.models.text_knn import TextNeighbours  # noqa: E402
from migrec.hardware import machine_description  # noqa: E402
from migrec.transfer.mix import ValidatedMix  # noqa: E402
from migrec.transfer.regimes import TEXT_GRID, TransferExperiment, paired_difference  # noqa: E402
from migrec.transfer.run import transfer_setup  # noqa: E402

TEXT_ONLY = {"use_id": False, "batch_size": 64, "negatives": None}
# text neighbours of the two newest events, equally weighted: the best mean validation NDCG@10 over model
# seeds 0-2 on Scientific among last 1, 2, 3, 5 and decay 0.3, 0.5, 1 (0.0926; TextNeighbours' default 0.0912)
KNN = {"last": 2, "decay": 1.0}


def load(data: Path, name: str):
    if name == "scientific":
        return load_unisrec(data / "amazon-scientific-unisrec", "Scientific")
    return load_seqrec(data / "seqrec-benchmark", name)


def fit(dataset, target: str, params: dict, seed: int):
    """A target-only interest model with run_transfer's settings plus `params`; (model, task, train, seconds, MB)."""
    tasks, bank = transfer_setup(dataset, [target], params=params, cold_item_share=0.0, seed=seed)
    with PeakMemory() as mem:
        model = TransferExperiment(tasks[0], bank, ["target-only"]).build("target-only")[0]
    return model, tasks[0], bank.train, mem.seconds, mem.peak_mb


def run(data: Path, target: str, seed: int = 0) -> list[dict]:
    dataset = load(data, target)
    base, task, train, base_s, base_mb = fit(dataset, target, {}, seed)
    text, _, _, text_s, text_mb = fit(dataset, target, TEXT_ONLY, seed)
    with PeakMemory() as mem:
        mix = ValidatedMix(base, text, candidates=task.candidates).fit(train, task.valid)
    mix_s, mix_mb = base_s + text_s + mem.seconds, max(base_mb, text_mb, mem.peak_mb)
    with PeakMemory() as mem:
        knn = ValidatedMix(mix, TextNeighbours(**KNN).fit(train), candidates=task.candidates,
                           grid=TEXT_GRID).fit(train, task.valid)
    kw = dict(candidates=task.candidates, beyond=False, segments=False, repeats="exclude", ks=(10, 50))
    rows, reference = [], None
    for label, model, seconds, peak in (("text+id", base, base_s, base_mb), ("text-only", text, text_s, text_mb),
                                        ("text+id+text-only", mix, mix_s, mix_mb),
                                        ("text+id+text-only+text-knn", knn, mix_s + mem.seconds,
                                         max(mix_mb, mem.peak_mb))):
        test = evaluate(model, task.test, train, **kw)
        gains = M.accuracy_per_user(test.per_user["ranks"], 10)["NDCG"]
        reference = gains if reference is None else reference
        diff, low, high = paired_difference(gains, reference)
        metrics = {k: test.metrics[k] for k in ("NDCG@10", "HR@10", "Recall@10", "Recall@50")}
        metrics["valid:NDCG@10"] = evaluate(model, task.valid, train, **kw).metrics["NDCG@10"]
        metrics.update({"vs-text+id:NDCG@10": diff, "vs-text+id:low": low, "vs-text+id:high": high,
                        "cases": len(task.test)})
        name = f"{target}/{label}" + (f"[seed={seed}]" if seed else "")
        row = {"model": name, "metrics": metrics, "train_seconds": seconds, "peak_rss_mb": peak}
        if isinstance(model, ValidatedMix):
            row.update(mix_weight=model.weight_, valid_by_weight=model.valid_ndcg_)
        print(name, {k: round(v, 4) for k, v in metrics.items()}, flush=True)
        rows.append(row)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--targets", default="scientific", help="scientific and/or seqrec-benchmark folder names")
    parser.add_argument("--seeds", default="0", help="model seeds (rows of seed s > 0 end in [seed=s])")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = "python benchmarks/run_text_mix.py " + " ".join(sys.argv[1:] if argv is None else argv)
    rows = []
    for target in args.targets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            rows += run(Path(args.data), target, seed)
    protocol = (f"Per target: leave-one-out within the domain (last event = test, the one before = validation), "
                f"full ranking over the domain's items; {repeats_note('exclude')}. text+id: run_transfer's "
                f"target-only interest model (text + ID, hidden 64, 2 layers, max_len 50, cosine/0.07, batch 256, "
                f"2048 sampled negatives, dropout 0.3, patience 3, bf16 where native); text-only: the same with "
                f"{TEXT_ONLY} (no ID embeddings; full softmax); text+id+text-only: ValidatedMix of the two, "
                f"(1-w) z(text+id) + w z(text-only), w from 0, 0.1, ..., 1 by validation NDCG@10 (mix_weight, "
                f"valid_by_weight); text+id+text-only+text-knn: that mix and TextNeighbours({KNN}) mixed "
                f"the same way, the text neighbours' weight from {TEXT_GRID}. vs-text+id: test NDCG@10 "
                f"minus text+id's over the same cases, paired 95 % "
                f"bootstrap interval (low, high). train_seconds of a mix: both fits and the weight searches.")
    write_json({"dataset": "text-mix", "protocol": protocol, "machine": machine_description(),
                "command": command, "rows": rows})
    write_results_md()


if __name__ == "__main__":
    main()
