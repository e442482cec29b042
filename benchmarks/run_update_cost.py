"""Does the cost of `partial_fit` follow the update, not the log?

    python benchmarks/run_update_cost.py --data ../shared/data

MovieLens-1M users 1-2999 (the 487,650 timed ratings ../shared/data holds) in time order. A SASRec model is fitted (a few epochs) on the first 100k
events; then, for logs of growing size L, the same-size update (the next `--update`
events after L, 1 % of the log by default) is applied with `partial_fit(update,
histories=<the first L events>, epochs=1, replay=1.0)` on a clone of that model, and timed.
The update reads only the affected users' histories and a replay sample, so its time
follows the update's own work (the targets in its windows: `seconds_per_1k_targets` should
stay flat as L grows; the number of targets depends on which users the update touches). For contrast, the row `re-window whole log` times what the previous
`partial_fit` did before any training: cut every window of every history in the log.

Writes benchmarks/results/update-cost.json (+ .png) and regenerates RESULTS.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from migrec import pipeline  # noqa: E402
from migrec.data import Histories  # noqa: E402
from migrec.data.split import TrainSet  # noqa: E402
from migrec.evaluation import PeakMemory  # noqa: E402
from migrec.hardware import machine_description  # noqa: E402
from migrec.models.sasrec import SASRec  # noqa: E402
from migrec.models.training import training_windows  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import RESULTS, write_json, write_results_md  # noqa: E402


def trainset(frame, catalogue) -> TrainSet:
    item_ids = catalogue["item_id"].astype(str).to_numpy(dtype=object)
    hist = Histories.from_frame(frame)
    index = {it: i for i, it in enumerate(item_ids)}
    users = hist.users()
    seqs = [np.asarray([index[i] for i in hist[u]], dtype=np.int64) for u in users]
    return TrainSet(np.asarray(users, dtype=object), item_ids, seqs, catalogue.reset_index(drop=True))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--update", type=int, default=5_000, help="events per update (1 %% of the log)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 100_000, 200_000, 400_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    command = "python benchmarks/run_update_cost.py " + " ".join(sys.argv[1:] if argv is None else argv)

    ds = pipeline.load_dataset("ml-1m", str(Path(args.data) / "ml-1m"))
    log = ds.interactions.sort_values("timestamp", kind="stable").reset_index(drop=True)
    print(f"ML-1M: {len(log)} events, {ds.catalogue.shape[0]} items")
    base_train = trainset(log.iloc[:100_000], ds.catalogue)
    model = SASRec(hidden=64, layers=2, heads=2, max_len=200, dropout=0.2, lr=2e-3, epochs=3, device="cpu",
                   progress=True, seed=0)
    with PeakMemory() as mem:
        model.fit(base_train)
    print(f"fitted SASRec on 100k events in {mem.seconds:.0f} s")

    rows = []
    for size in args.sizes:
        if size + args.update > len(log):
            raise SystemExit(f"log size {size} + update {args.update} exceeds the {len(log)} events")
        hist = Histories.from_frame(log.iloc[:size])
        update = log.iloc[size:size + args.update]
        seconds = []
        for r in range(args.repeats):
            clone = model.clone()
            with PeakMemory() as m:
                clone.partial_fit(update, histories=hist, epochs=1, replay=1.0, seed=r)
            seconds.append(m.seconds)
        rec = clone.partial_history_[-1]
        t0 = time.perf_counter()
        sequences = [clone.item_index(hist[u]) for u in hist]
        training_windows(sequences, model.max_len)
        rewindow = time.perf_counter() - t0
        per_1k = 1000 * float(np.median(seconds)) / max(rec["positions"], 1)
        print(f"log {size:>7} events: partial_fit {np.median(seconds):.2f} s (median of {args.repeats}), "
              f"{rec['new_windows']} new + {rec['replay_windows']} replay windows, {rec['positions']} targets "
              f"({per_1k:.2f} s per 1k targets); re-windowing the whole log would add {rewindow:.2f} s")
        rows.append({"model": f"partial_fit, log {size // 1000}k events",
                     "metrics": {"update_seconds": float(np.median(seconds)), "log_events": size,
                                 "update_events": args.update, "targets": rec["positions"],
                                 "seconds_per_1k_targets": per_1k, "new_windows": rec["new_windows"],
                                 "replay_windows": rec["replay_windows"], "log_users": len(hist)},
                     "train_seconds": float(np.median(seconds)), "peak_rss_mb": m.peak_mb})
        rows.append({"model": f"re-window whole log, log {size // 1000}k events",
                     "metrics": {"update_seconds": rewindow, "log_events": size},
                     "train_seconds": rewindow, "peak_rss_mb": None})
    payload = {"dataset": "update-cost", "machine": machine_description(), "command": command,
               "protocol": f"MovieLens-1M users 1-2999 (487,650 timed events) in time order; SASRec (hidden 64, 2 layers, max_len 200) fitted 3 epochs "
                           f"on the first 100k events; per log size L, partial_fit of the {args.update} events after "
                           f"L with histories = the first L events, epochs=1, replay=1.0, on a clone; median of "
                           f"{args.repeats} seeds. 're-window whole log' = training_windows over every history of "
                           f"the log (the step the previous partial_fit ran first).",
               "rows": rows}
    write_json(payload)
    _chart(rows)
    write_results_md()


def _chart(rows) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fits = [r for r in rows if r["model"].startswith("partial_fit")]
    log_k = [r["metrics"]["log_events"] / 1000 for r in fits]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(log_k, [r["metrics"]["update_seconds"] for r in fits], "o-", label="partial_fit")
    rewindow = [r for r in rows if r["model"].startswith("re-window")]
    left.plot([r["metrics"]["log_events"] / 1000 for r in rewindow], [r["metrics"]["update_seconds"] for r in rewindow],
              "s--", label="re-window whole log")
    left.set_ylabel("seconds")
    left.set_title(f"one update of {fits[0]['metrics']['update_events']} events")
    left.legend()
    right.plot(log_k, [r["metrics"]["seconds_per_1k_targets"] for r in fits], "o-", color="C2")
    right.set_ylim(bottom=0)
    right.set_ylabel("seconds per 1000 trained targets")
    right.set_title("the update's cost per unit of its own work")
    for ax in (left, right):
        ax.set_xlabel("log size (thousand events)")
        ax.grid(alpha=0.3)
    fig.suptitle("ML-1M users 1-2999: partial_fit cost against log size")
    fig.tight_layout()
    fig.savefig(RESULTS / "update-cost.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
