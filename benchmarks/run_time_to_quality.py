"""Time to quality: validation NDCG@10 against wall seconds of training, for the sequential models.

    python benchmarks/run_time_to_quality.py --data ../shared/data --datasets ml-100k ml-1m-u3k

Each model trains with run_core's hyper-parameters for the data set (early stopping on
validation NDCG@10, patience; the wall-clock cap only a safety cap) and records, per epoch, the
wall seconds since training began (validation included) and the validation NDCG@10.
`seconds_to_converged` is the first time the curve came within 2 % of the run's best validation
NDCG@10; the test NDCG@10 is of the restored best weights (leave-one-out, full ranking).
Writes benchmarks/results/time-to-quality.json (rows `<dataset>/<model>`, the curves under
"curve") and time-to-quality.png.
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
import _report  # noqa: E402
from migrec import pipeline  # noqa: E402
from migrec.evaluation.evaluator import evaluate, repeats_note  # noqa: E402
from migrec.evaluation.memory import PeakMemory  # noqa: E402
from migrec.hardware import machine_description  # noqa: E402
from migrec.registry import MODELS  # noqa: E402

MODELS_RUN = ["sasrec", "interest-text+id"]
WITHIN = 0.02
MATMUL_NOTE = ("matmul_GFLOP/s: a 2048 x 2048 matmul's rate in the row's training precision (bf16 where native), "
               "the ceiling achieved_GFLOP/s is set against")
# RecBole's SASRec, measured on this machine kind (2 cores, 1 thread): seconds per epoch, for scale
RECBOLE_EPOCH_SECONDS = {"ml-100k": 198, "ml-1m-u3k": 1012}


def converged_at(curve: list[dict], within: float = WITHIN) -> tuple[float, int]:
    """(seconds, epoch) of the first point within `within` of the curve's best validation NDCG@10."""
    best = max(p["valid_NDCG@10"] for p in curve)
    first = next(p for p in curve if p["valid_NDCG@10"] >= (1 - within) * best)
    return first["seconds"], first["epoch"]


def run(name: str, data: Path, models: list[str], encoder: str, cap: float | None,
        patience: int | None = None) -> list[dict]:
    split = pipeline.prepare_split(run_core.load(name, data), encoder=encoder)
    rows = []
    for model_name in models:
        params = dict(run_core.PARAMS[name][model_name])
        if cap is not None:
            params["max_train_seconds"] = cap
        if patience is not None:
            params["patience"] = patience
        model = MODELS[model_name](**params)
        with PeakMemory() as mem:
            model.fit(split.train, split.valid)
        curve = [{"epoch": r["epoch"], "seconds": round(r["seconds"], 2), "valid_NDCG@10": r["valid_NDCG@10"]}
                 for r in model.history_ if "valid_NDCG@10" in r]
        seconds, epoch = converged_at(curve)
        test = evaluate(model, split.test, split.train, ks=(10,), beyond=False, segments=False)
        rows.append({
            "model": f"{name}/{model_name}",
            "metrics": {"seconds_to_converged": round(seconds, 1), "epochs_to_converged": epoch,
                        "best_valid_NDCG@10": max(p["valid_NDCG@10"] for p in curve),
                        "NDCG@10": test.metrics["NDCG@10"], "HR@10": test.metrics["HR@10"],
                        "epochs_run": len(model.history_),
                        "seconds_per_epoch": round(curve[-1]["seconds"] / curve[-1]["epoch"], 2),
                        "recbole_seconds_per_epoch": RECBOLE_EPOCH_SECONDS.get(name)},
            "stopped_by": model.training_["stopped_by"], "precision": model.training_["precision"],
            "params": params, "curve": curve,
            "train_seconds": round(mem.seconds, 1), "peak_rss_mb": round(mem.peak_mb)})
        print(f"{name}/{model_name}: {rows[-1]['metrics']} ({rows[-1]['stopped_by']})", flush=True)
    return rows


def matmul_gflops(n: int = 2048, repeats: int = 10, precision: str = "fp32") -> float:
    """The machine's achievable matmul rate (GFLOP/s, torch's threads) in the training precision
    ("fp32" or "bf16"): the ceiling for training."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - started) / 1e9


def measure_flops(name: str, data: Path, model_name: str, encoder: str) -> dict:
    """FLOPs of one training epoch (forward + backward, torch's FlopCounterMode) and the rate one
    uncounted epoch achieves, against the machine's matmul rate."""
    from torch.utils.flop_counter import FlopCounterMode

    split = pipeline.prepare_split(run_core.load(name, data), encoder=encoder)
    params = {**run_core.PARAMS[name][model_name], "epochs": 1, "max_train_seconds": None}
    started = time.perf_counter()
    timed = MODELS[model_name](**params).fit(split.train)
    seconds = time.perf_counter() - started
    with FlopCounterMode(display=False) as counter:
        MODELS[model_name](**params).fit(split.train)
    flops = counter.get_total_flops()
    peak = matmul_gflops(precision=timed.training_["precision"])   # the precision the epoch ran in
    return {"GFLOP_per_epoch": round(flops / 1e9, 1), "train_epoch_seconds": round(seconds, 2),
            "achieved_GFLOP/s": round(flops / seconds / 1e9, 1), "matmul_GFLOP/s": round(peak, 1),
            "share_of_matmul_rate": round(flops / seconds / 1e9 / peak, 3)}


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["model"].split("/")[0] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    for ax, name in zip(axes[0], datasets):
        for r in rows:
            if not r["model"].startswith(name + "/"):
                continue
            xs = [p["seconds"] for p in r["curve"]]
            ys = [p["valid_NDCG@10"] for p in r["curve"]]
            line, = ax.plot(xs, ys, marker=".", label=r["model"].split("/")[1])
            ax.axvline(r["metrics"]["seconds_to_converged"], color=line.get_color(), ls=":", lw=1)
        ax.set_title(f"{name}: validation NDCG@10 while training")
        ax.set_xlabel("wall seconds (validation included)")
        ax.set_ylabel("validation NDCG@10")
        ax.grid(alpha=0.3)
        ax.legend(title=f"dotted: within {WITHIN:.0%} of best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(run_core.HERE.parent.parent / "shared" / "data"))
    p.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m-u3k"], choices=sorted(run_core.PARAMS))
    p.add_argument("--models", default=",".join(MODELS_RUN))
    p.add_argument("--encoder", default="st")
    p.add_argument("--max-train-seconds", type=float, default=None, help="safety cap (default: run_core's)")
    p.add_argument("--patience", type=int, default=None, help="epochs without a better validation score before "
                   "stopping (default: run_core's)")
    p.add_argument("--flops", action="store_true",
                   help="add FLOPs per epoch and the achieved rate to the rows already written (no re-run)")
    args = p.parse_args(argv)
    if args.flops:
        path = _report.RESULTS / "time-to-quality.json"
        payload = _report.read(path)
        for row in payload["rows"]:
            name, model_name = row["model"].split("/")
            if name in args.datasets and model_name in args.models.split(","):
                row["metrics"].update(measure_flops(name, Path(args.data), model_name, args.encoder))
                print(row["model"], row["metrics"], flush=True)
        command = "python benchmarks/run_time_to_quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
        payload["command"] = _report.command_history(payload["command"], command)   # a repeat is named once
        if MATMUL_NOTE not in payload["protocol"]:
            payload["protocol"] += f"; {MATMUL_NOTE}"
        _report.write_json(payload)
        _report.write_results_md()
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = "python benchmarks/run_time_to_quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    rows = []
    for name in args.datasets:
        rows += run(name, Path(args.data), args.models.split(","), args.encoder, args.max_train_seconds,
                    args.patience)
    protocol = (f"sequential models with run_core's hyper-parameters, early stopping on validation NDCG@10 "
                f"(patience; the wall-clock cap is a safety cap, `stopped_by` says which ended a run); "
                f"seconds_to_converged = wall seconds (validation included) until validation NDCG@10 first came "
                f"within {WITHIN:.0%} of the run's best; NDCG@10 / HR@10 = test, leave-one-out, full ranking, "
                f"best weights; {repeats_note('exclude')}; recbole_seconds_per_epoch: RecBole's SASRec per "
                f"epoch on the same machine kind (1 thread), for scale; {MATMUL_NOTE}")
    out = _report.write_json({"dataset": "time-to-quality", "protocol": protocol, "machine": machine_description(),
                              "command": command, "rows": rows},
                             order=[f"{d}/{m}" for d in run_core.PARAMS for m in MODELS_RUN])
    chart(_report.read(out)["rows"], out.with_suffix(".png"))
    _report.write_results_md()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
