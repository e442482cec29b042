"""Cost curves: preparation, one training epoch, evaluation and peak memory against log and catalogue size.

    .venv/bin/python benchmarks/run_scaling.py --data /work/shared/data [--scales 1 4 16]
        [--items 10000 100000 1000000] [--eval-users 1000] [--negatives 512]

Two sweeps, each point measured for the interest model (InterestModel, text + ID, sampled softmax)
and one baseline (ALS):

- log size (rows `events-1x`, `events-4x`, `events-16x`): the ML-1M log of users 1..2999 (487,650
  events) grown 4x and 16x by adding users drawn from it under new ids (every user copied c times,
  copy c of user u is "u~c"; the same logs as benchmarks/run_prepare.py), catalogue = the 3,883
  ML-1M movies, item text vectors = the bundled all-MiniLM-L6-v2 on the catalogue's text (cached).
- catalogue size (rows `items-10k`, `items-100k`, `items-1m`): the 1x log with the ML-1M catalogue
  grown to 10k / 100k / 1M items by synthetic items whose 384-d vectors are drawn from an 8-component
  Gaussian mixture fitted to the real MiniLM vectors (renormalised; `run_ann.synthetic_items`). The
  added items have no events: they are cold catalogue items, so they grow the item table, the
  ID embedding (and its optimiser state), the sampled-softmax pool (softmax_over="all": negatives
  are drawn from the whole catalogue) and the full ranking, not the number of training windows.

Each phase runs in a fresh child process, so its peak is its own (import of torch and the data
loading included): `prepare` = migrec.data.prepare(engine="polars") of the Parquet log into the
prepared layout (dedup, 5-core, min history 3, id coding, leave-one-out); `train` =
read_prepared + item vectors + `fit` for ONE epoch, no validation (`epoch_seconds` = the trainer's
history_[0]["seconds"], the epoch alone; ALS: one alternating sweep, iterations=1, the whole fit);
`eval` = load the saved model + read_prepared + full-ranking `evaluate` (NDCG@10 over every
catalogue item, history excluded) of a fixed sample of `--eval-users` test users, 128 at a time. Peak memory is the
child's process tree RSS sampled every 20 ms (never below its own VmHWM).

Writes benchmarks/results/scaling.json (+ scaling.png) and regenerates RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child import report, rss_mb, run_measured  # noqa: E402

CLEANING = dict(user_k=5, item_k=5, min_history=3)      # as benchmarks/run_prepare.py
MODELS = ("interest", "als")


def label(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 else f"{n // 1000}k"


# -- inputs ---------------------------------------------------------------------------------------
def make_inputs(data: Path, work: Path, scales: list[int], sizes: list[int]) -> dict:
    """Grown logs, catalogues and item-vector files (aligned to each catalogue's order)."""
    import numpy as np
    import pandas as pd

    from run_prepare import make_logs

    made = make_logs(data, work / "logs", sorted(set(scales) | {1}))      # the catalogue sweep runs on 1x
    catalogue = pd.read_parquet(made["catalogue"])
    vec_real = work / f"vectors-{len(catalogue)}.npy"
    if not vec_real.exists():
        from migrec.encoders import encode_catalogue, make_encoder

        enc = make_encoder("st", show_progress=False)
        vectors = encode_catalogue(catalogue, enc, cache_dir=True)      # cached: read, not re-encoded
        np.save(vec_real, vectors.astype(np.float32))
        (work / "encoder.txt").write_text(enc.model_id)
    model_id = (work / "encoder.txt").read_text().strip()
    real = np.load(vec_real)
    cats = {}
    for n in sizes:
        if n < len(catalogue):
            raise SystemExit(f"catalogue size {n} is below the {len(catalogue)} real items")
        cat_path, vec_path = work / f"catalogue-{label(n)}.parquet", work / f"vectors-{label(n)}.npy"
        if not (cat_path.exists() and vec_path.exists()):
            from run_ann import synthetic_items

            extra = [f"syn-{i:07d}" for i in range(n - len(catalogue))]
            frame = pd.concat([catalogue[["item_id", "title"]],
                               pd.DataFrame({"item_id": extra, "title": extra})], ignore_index=True)
            frame.to_parquet(cat_path, index=False)
            np.save(vec_path, synthetic_items(real, n))
        cats[n] = {"catalogue": str(cat_path), "vectors": str(vec_path)}
    return {**made, "vectors": str(vec_real), "catalogues": cats, "encoder": model_id, "n_real": len(catalogue)}


# -- the measured phases (each in its own process) ---------------------------------------------------
def phase_prepare(spec: dict) -> dict:
    from migrec.data.prepare import prepare

    started = time.perf_counter()
    result = prepare(spec["log"], spec["out"], engine="polars", catalogue=spec["catalogue"], **CLEANING)
    return {"seconds": time.perf_counter() - started, "events": int(result.events), "users": int(result.users),
            "items": int(result.items)}


def _split(spec: dict):
    import numpy as np

    from migrec.data.prepare import read_prepared

    split = read_prepared(spec["out"])
    split.train.item_vectors = np.load(spec["vectors"])
    split.train.encoder = spec["encoder"]
    return split


def phase_train(spec: dict) -> dict:
    import torch

    from migrec.models.interest import InterestModel
    from migrec.models.matrix_factorization import ALS

    torch.set_num_threads(spec["threads"])
    base = rss_mb()
    t0 = time.perf_counter()
    split = _split(spec)
    load_seconds, loaded = time.perf_counter() - t0, rss_mb()
    if spec["model"] == "interest":
        model = InterestModel(hidden=64, layers=2, heads=2, max_len=200, batch_size=spec["batch_size"],
                              negatives=spec["negatives"], softmax_over="all", epochs=1, patience=1,
                              device="cpu", progress=False, seed=0)
    else:
        model = ALS(factors=64, iterations=1, threads=spec["threads"], seed=0)
    t0 = time.perf_counter()
    model.fit(split.train)                                   # no valid set: one epoch, no evaluation
    fit_seconds = time.perf_counter() - t0
    epoch = model.history_[0]["seconds"] if spec["model"] == "interest" else fit_seconds
    model.save(spec["model_dir"])
    return {"seconds": epoch, "fit_seconds": fit_seconds, "load_seconds": load_seconds,
            "rss_after_import_mb": base, "rss_after_load_mb": loaded,
            "windows": int(sum(max(0, (len(s) - 2) // 200 + 1) for s in split.train.sequences if len(s) >= 2))
            if spec["model"] == "interest" else None}


def phase_eval(spec: dict) -> dict:
    import numpy as np
    import torch

    from migrec.evaluation import evaluate
    from migrec.registry import load_model

    torch.set_num_threads(spec["threads"])
    split = _split(spec)
    model = load_model(spec["model_dir"])
    rng = np.random.default_rng(0)
    n = min(spec["eval_users"], len(split.test))
    mask = np.zeros(len(split.test), dtype=bool)
    mask[rng.choice(len(split.test), n, replace=False)] = True
    cases = split.test.subset(mask)
    t0 = time.perf_counter()
    # batches of 128 users: a [512, 1M] float32 score block alone would be 2 GB
    got = evaluate(model, cases, split.train, ks=(10,), beyond=False, segments=False, batch_size=128)
    return {"seconds": time.perf_counter() - t0, "users": int(n), "NDCG@10": float(got.metrics["NDCG@10"])}


PHASES = {"prepare": phase_prepare, "train": phase_train, "eval": phase_eval}


def child(phase: str, spec_json: str) -> None:
    report(PHASES[phase](json.loads(spec_json)))


def measure(phase: str, spec: dict) -> dict:
    """Run one phase in a fresh process; its result and the peak RSS of its process tree."""
    return run_measured([sys.executable, __file__, "--child", phase, json.dumps(spec)], f"{phase} {spec}")


# -- the sweep --------------------------------------------------------------------------------------
def run_point(name: str, log: str, catalogue: str, vectors: str, args, made: dict, work: Path, say) -> list:
    out = str(work / f"prepared-{name}")
    prep = measure("prepare", {"log": log, "out": out, "catalogue": catalogue})
    say(f"{name} prepare: {prep['seconds']:.1f} s, peak {prep['peak_rss_mb']:.0f} MB, {prep['events']} events")
    rows = []
    for model in args.models:
        spec = {"out": out, "vectors": vectors, "encoder": made["encoder"], "model": model,
                "model_dir": str(work / f"model-{model}-{name}"), "threads": args.threads,
                "negatives": args.negatives, "batch_size": args.batch_size, "eval_users": args.eval_users}
        tr = measure("train", spec)
        say(f"{name} {model} epoch: {tr['seconds']:.1f} s (fit {tr['fit_seconds']:.1f} s), "
            f"peak {tr['peak_rss_mb']:.0f} MB (after load {tr['rss_after_load_mb']:.0f} MB)")
        ev = measure("eval", spec)
        say(f"{name} {model} eval: {ev['seconds']:.1f} s for {ev['users']} users, peak {ev['peak_rss_mb']:.0f} MB, "
            f"NDCG@10 {ev['NDCG@10']:.4f}")
        peak = max(prep["peak_rss_mb"], tr["peak_rss_mb"], ev["peak_rss_mb"])
        metrics = {"prepare_seconds": round(prep["seconds"], 2), "epoch_seconds": round(tr["seconds"], 2),
                   "eval_seconds": round(ev["seconds"], 2), "peak_rss_mb": round(peak, 1),
                   "prepare_peak_mb": round(prep["peak_rss_mb"], 1), "train_peak_mb": round(tr["peak_rss_mb"], 1),
                   "eval_peak_mb": round(ev["peak_rss_mb"], 1),
                   "events": prep["events"], "users": prep["users"], "items": prep["items"],
                   "train_loaded_mb": round(tr["rss_after_load_mb"], 1),
                   "train_import_mb": round(tr["rss_after_import_mb"], 1),
                   "fit_seconds": round(tr["fit_seconds"], 2), "load_seconds": round(tr["load_seconds"], 2),
                   "eval_users": ev["users"], "eval_ndcg@10": round(ev["NDCG@10"], 4)}
        if tr.get("windows") is not None:
            metrics["windows"] = tr["windows"]
        rows.append({"model": name if model == "interest" else f"{model}/{name}", "recommender": model,
                     "peak_rss_mb": round(peak, 1), "train_seconds": round(tr["fit_seconds"], 2),
                     "metrics": metrics})
        for d in (spec["model_dir"],):
            subprocess.run(["rm", "-rf", d], check=False)
    subprocess.run(["rm", "-rf", out], check=False)
    return rows


def ratios(rows: list, scales: list[int]) -> dict:
    by = {r["model"]: r["metrics"] for r in rows}
    if not scales:
        return {}
    lo, hi = f"events-{min(scales)}x", f"events-{max(scales)}x"
    out = {}
    for prefix, model in (("", "interest"), ("als/", "als")):
        a, b = by.get(prefix + lo), by.get(prefix + hi)
        if not (a and b):
            continue
        for phase, target in (("prepare", 3.0), ("train", 2.0), ("eval", None)):
            name = f"{phase} (polars)" if phase == "prepare" else f"{model} {phase}"
            if f"{name} peak {hi} / {lo}" in out:   # preparation: the first model's rows (one per point)
                continue
            r = b[f"{phase}_peak_mb"] / a[f"{phase}_peak_mb"]
            entry = {"low_mb": a[f"{phase}_peak_mb"], "high_mb": b[f"{phase}_peak_mb"], "ratio": round(r, 2)}
            if target:
                entry.update(target=f"< {target:g}x", met=bool(r < target))
            out[f"{name} peak {hi} / {lo}"] = entry
    return out


def chart(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    sweeps = [("events-", "log events (prepared)", "events"), ("items-", "catalogue items", "items")]
    metrics = [("prepare_seconds", "preparation s"), ("epoch_seconds", "one training epoch s"),
               ("eval_seconds", "evaluation s (fixed users)"), ("peak", "peak RSS MB (per phase)")]
    fig, axes = plt.subplots(2, 4, figsize=(18, 8))
    first = next((m for m in ("interest", "als") if any(r["recommender"] == m for r in rows)), None)
    for i, (prefix, xlabel, xkey) in enumerate(sweeps):
        for j, (key, title) in enumerate(metrics):
            ax = axes[i][j]
            for model, style in (("interest", "o-"), ("als", "s--")):
                pts = sorted((r["metrics"][xkey], r["metrics"]) for r in rows
                             if r["recommender"] == model and r["model"].split("/")[-1].startswith(prefix))
                if not pts:
                    continue
                xs = [p[0] for p in pts]
                if key == "peak":
                    for phase, colour in (("prepare", "tab:green"), ("train", "tab:blue"), ("eval", "tab:red")):
                        if phase == "prepare" and model != first:      # one preparation per point
                            continue
                        ax.plot(xs, [p[1][f"{phase}_peak_mb"] for p in pts], style, color=colour,
                                label=f"{phase}" + ("" if phase == "prepare" else f" ({model})"))
                elif key == "prepare_seconds":
                    if model == first:
                        ax.plot(xs, [p[1][key] for p in pts], style, label="polars prepare")
                else:
                    ax.plot(xs, [p[1][key] for p in pts], style, label=model)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(xlabel)
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    fig.suptitle("migrec cost curves (2 CPU cores): ML-1M u1-2999 log grown 1x/4x/16x; catalogue 10k/100k/1M items")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--scales", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--items", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--eval-users", type=int, default=1000)
    parser.add_argument("--negatives", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="/tmp/migrec-bench-scaling")
    parser.add_argument("--note", default="", help="text appended to the protocol (e.g. the machine's load)")
    parser.add_argument("--no-write", action="store_true", help="smoke test: print, write nothing under results/")
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child)

    from _report import RESULTS, write_json, write_results_md
    from migrec.hardware import machine_description

    command = "python benchmarks/run_scaling.py " + " ".join(sys.argv[1:] if argv is None else argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    def say(msg):
        print(f"[{time.time() - t_start:6.0f} s, load {os.getloadavg()[0]:.1f}] {msg}", flush=True)

    made = make_inputs(Path(args.data), work, args.scales, args.items)
    say(f"inputs ready ({made['encoder']})")
    order = [f"events-{s}x" for s in args.scales] + [f"items-{label(n)}" for n in args.items]
    points = [(f"events-{s}x", made["logs"][s], made["catalogue"], made["vectors"]) for s in args.scales]
    points += [(f"items-{label(n)}", made["logs"][1], made["catalogues"][n]["catalogue"],
                made["catalogues"][n]["vectors"]) for n in args.items]
    rows, load = [], [os.getloadavg()[0]]
    for name, log, catalogue, vectors in points:
        rows += run_point(name, log, catalogue, vectors, args, made, work, say)
        load.append(os.getloadavg()[0])
        minutes = (time.time() - t_start) / 60
        protocol = (
            "Two sweeps on 2 CPU cores, each phase in a fresh child process (peak = its process tree RSS, torch "
            "import and data loading included). Log size: ML-1M users 1..2999 (487,650 events) grown 1x/4x/16x by "
            "adding copies of its users under new ids (as run_prepare), catalogue = 3,883 ML-1M movies with MiniLM "
            "(all-MiniLM-L6-v2) text vectors. Catalogue size: the 1x log, catalogue grown to 10k/100k/1M items by "
            "cold synthetic items (no events) whose 384-d vectors are drawn from a Gaussian mixture fitted to the "
            "real MiniLM vectors. prepare_seconds: migrec.data.prepare engine=polars (dedup, 5-core, min history 3, "
            "id coding, leave-one-out). epoch_seconds: ONE full training epoch, measured (no extrapolation, no "
            "validation): InterestModel text+id, hidden 64, 2 layers, max_len 200, batch "
            f"{args.batch_size}, sampled softmax with {args.negatives} negatives drawn from the whole catalogue "
            "(softmax_over='all'), the trainer's history_ epoch time; als/ rows: ALS 64 factors, one alternating "
            "sweep (iterations=1), the whole fit; they repeat the point's one preparation measurement. "
            "eval_seconds: load the saved model and full-ranking evaluate (NDCG@10 over every catalogue item, "
            f"repeats=exclude: history masked) of {args.eval_users} fixed test users (seed 0), in batches of 128 users. *_peak_mb: per phase; peak_rss_mb: "
            "their maximum. train_loaded_mb: the training child's RSS after read_prepared + item vectors, before "
            "fit. Targets (issue 11): peak at 16x < 3x the 1x peak for preparation, < 2x for a training epoch "
            f"(see `targets`). Run time {minutes:.0f} min; 1-minute load average {min(load):.1f}-{max(load):.1f} "
            "on 2 cores." + (f" {args.note}" if args.note else ""))
        if args.no_write:
            continue
        # written after every point, so an interrupted run keeps what it measured
        out = write_json({"dataset": "scaling", "protocol": protocol, "machine": machine_description(),
                          "command": command, "rows": rows}, order=order + [f"als/{o}" for o in order])
    checks = ratios(rows, args.scales)
    say(json.dumps(checks, indent=1))
    if args.no_write:
        print(json.dumps(rows, indent=1))
        return
    payload = json.loads(out.read_text())
    payload["targets"] = ratios(payload["rows"], args.scales)
    out.write_text(json.dumps(payload, indent=2))
    chart(payload["rows"], RESULTS / "scaling.png")
    write_results_md()
    say(f"wrote {out} and {RESULTS / 'scaling.png'}")

if __name__ == "__main__":
    main()
