"""Frozen vs fine-tuned language model: the interest model with the sentence model's top layers trained.

    python benchmarks/run_lm_tuning.py --data ../shared/data                      # ML-1M users 1-2999, Scientific
    python benchmarks/run_lm_tuning.py --data ../shared/data --datasets scientific --layers 1 2

Per data set, the text+ID interest model with its frozen MiniLM vectors (`frozen`) against the
same model whose sentence model's top k layers train on the recommendation loss
(`tuned-top<k>`, InterestModel(text_layers=k)); every other hyper-parameter is the one the
data set's main benchmark uses (run_core for ML-1M, run_transfer's target-only model for
Scientific). Test set, leave-one-out, full ranking, repeats=exclude. The tuned rows' train
seconds include the one pass of the sentence model's lower layers (`lower_states_seconds`).
Writes benchmarks/results/lm-tuning.json (rows `<dataset>/<variant>`), lm-tuning.png, RESULTS.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_core  # noqa: E402
from _report import RESULTS, read, write_json, write_results_md  # noqa: E402
from migrec import pipeline  # noqa: E402
from migrec.data import load_unisrec  # noqa: E402
from migrec.encoders.tuning import encode_lower_states  # noqa: E402
from migrec.evaluation import Experiment  # noqa: E402
from migrec.evaluation.evaluator import repeats_note  # noqa: E402
from migrec.hardware import machine_description  # noqa: E402
from migrec.transfer.run import INTEREST  # noqa: E402

DATASETS = ["ml-1m-u3k", "scientific"]


def load(name: str, data: Path):
    if name == "scientific":
        return load_unisrec(data / "amazon-scientific-unisrec", "Scientific")
    return run_core.load(name, data)


CAP = 3600   # a safety cap only (tuned epochs cost more): patience ends every run


# Scientific alone: run_transfer's target-only settings, except the full softmax (4,385 items), batch 64,
# patience 5 and dot-product scoring with ALiBi recency, the best validation NDCG@10 (0.0838, test 0.0754)
# of an 11-setting sweep on a 2-core Xeon (AMX, bf16); run_transfer's own (sampled softmax, batch 256, cosine): 0.0756 / 0.0707
SCIENTIFIC = dict(negatives=None, batch_size=64, patience=5, normalize=False, temperature=1.0, recency=True)


def params_for(name: str) -> dict:
    if name == "scientific":
        params = {**{k: v for k, v in INTEREST.items() if k != "use_id"}, **SCIENTIFIC}
    else:
        params = dict(run_core.PARAMS[name]["interest-text+id"])
    return {**params, "max_train_seconds": CAP}


def run(name: str, data: Path, layers: list[int], with_frozen: bool, max_tokens: int, rows_per_step: int) -> list[dict]:
    split = pipeline.prepare_split(load(name, data), encoder="st")
    models = {}
    if with_frozen:
        models[f"{name}/frozen"] = pipeline.build_model("interest-text+id", **params_for(name))
    rows = []
    for k in layers:
        started = time.time()
        split.train.item_states = encode_lower_states(split.train.catalogue, "st", layers=k, max_tokens=max_tokens)
        lower_seconds = time.time() - started
        label = f"{name}/tuned-top{k}"
        model = pipeline.build_model("interest-text+id", **params_for(name), text_layers=k, text_rows=rows_per_step)
        result = Experiment(split, {label: model}, ks=(10, 20, 50), repeats="exclude").run()
        row, = result.rows
        row["train_seconds"] = round(row["train_seconds"] + lower_seconds, 2)
        row["lower_states_seconds"] = round(lower_seconds, 2)
        row["training"] = dict(model.training_)
        rows.append(row)
    if models:
        result = Experiment(split, models, ks=(10, 20, 50), repeats="exclude").run()
        for r in result.rows:
            r["training"] = dict(models[r["model"]].training_)
        rows = result.rows + rows
    for r in rows:
        print(f"{r['model']}: test NDCG@10 {r['metrics']['NDCG@10']:.4f} HR@10 {r['metrics']['HR@10']:.4f} "
              f"Recall@10 {r['metrics']['Recall@10']:.4f}, {r['train_seconds']:.0f} s, {r['training']}", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--layers", nargs="+", type=int, default=[1], help="top layers to fine-tune, one row each")
    parser.add_argument("--no-frozen", action="store_true", help="skip the frozen rows (kept from an earlier run)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens kept per item text")
    parser.add_argument("--text-rows", type=int, default=64, help="items whose vectors get gradients per step")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    command = "python benchmarks/run_lm_tuning.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for name in args.datasets:
        rows = run(name, Path(args.data), args.layers, not args.no_frozen, args.max_tokens, args.text_rows)
        payload = {"dataset": "lm-tuning",
                   "protocol": f"test, leave-one-out, full ranking over each data set's catalogue; "
                               f"{repeats_note('exclude')}; text encoder st (all-MiniLM-L6-v2); tuned rows fine-tune "
                               f"the sentence model's top k layers over its lower layers' token states (item texts cut "
                               f"to {args.max_tokens} tokens), at most {args.text_rows} items' vectors recomputed per step, "
                               f"text_lr 1e-4; train_seconds include the lower-layer pass; max_train_seconds {CAP} "
                               f"(a safety cap; training_.stopped_by says what ended each run)",
                   "machine": machine_description(), "command": command.strip(), "rows": rows}
        write_json(payload)
    _chart(read(RESULTS / "lm-tuning.json"))
    write_results_md()


def _chart(payload: dict) -> None:
    from migrec.evaluation.plots import bar_chart

    bar_chart(payload["rows"], RESULTS / "lm-tuning.png", metrics=("NDCG@10", "HR@10", "Recall@50"),
              title="frozen vs fine-tuned sentence model: test, full ranking")


if __name__ == "__main__":
    main()
