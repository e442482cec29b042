"""ANN retrieval against exact scoring: recall@10 and per-request latency at 10k, 100k, 1M items.

Item vectors: the trained interest model's real item matrix (ML-100K, 1,682 items, MiniLM
text vectors through the fitted adapter + ID embeddings, unit rows since normalize=True)
plus synthetic rows sampled from a Gaussian mixture (8 components, full covariance) fitted
to those rows and renormalised, up to 10k / 100k / 1M items. Queries: the same model's
query vectors of real ML-100K training histories. One request = one history: its query
vector (the transformer over the history) and its top-10 with the history's items excluded,
by exact scoring (q @ items.T, -inf on seen, argpartition — what recommend does below the
threshold) or by `models.retrieval.search` over the FAISS index (what recommend does above
it). recall@10 = share of the exact top-10 that the ANN top-10 holds. One process, this
machine's 2 cores: torch at 1 thread (one request per thread), faiss at its default
(2 OpenMP threads). top10_p50_ms / top10_p99_ms: the top-10 step alone, without the query vector.

    .venv/bin/python benchmarks/run_ann.py [--requests 500] [--sizes 10000 100000 1000000]
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_json, write_results_md  # noqa: E402
from migrec import pipeline  # noqa: E402
from migrec.evaluation import PeakMemory  # noqa: E402
from migrec.hardware import machine_description  # noqa: E402
from migrec.models.interest import InterestModel  # noqa: E402
from migrec.models.retrieval import build, calibrate_on, search  # noqa: E402

log = logging.getLogger("run_ann")


def label(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 else f"{n // 1000}k"


def synthetic_items(real: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """`real` rows followed by rows drawn from a Gaussian mixture fitted to them (unit length)."""
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(8, covariance_type="full", random_state=seed, reg_covar=1e-4).fit(real)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    out[:len(real)] = real
    for lo in range(len(real), n, 200_000):
        hi = min(n, lo + 200_000)
        rows, _ = gmm.sample(hi - lo)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        out[lo:hi] = rows[np.random.default_rng(seed + lo).permutation(len(rows))]   # sample() groups by component
    return out


def exact_top(query: np.ndarray, matrix: np.ndarray, seen: np.ndarray, k: int = 10):
    scores = matrix @ query
    scores[seen] = -np.inf
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


def percentiles(ms: list) -> dict:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    split = pipeline.prepare_split(pipeline.load_dataset("ml-100k"))
    started = time.perf_counter()
    model = InterestModel(hidden=64, epochs=args.epochs, max_train_seconds=180, progress=False, seed=0)
    model.fit(split.train, split.valid)
    log.info("interest model fitted in %.0f s", time.perf_counter() - started)
    real = model.item_matrix()
    rng = np.random.default_rng(0)
    users = rng.choice(split.train.n_users, min(args.requests, split.train.n_users), replace=False)
    histories = [split.train.sequences[u] for u in users]
    # one request per thread, as a server runs them: intra-op threads only add hand-off jitter
    # to a one-history transformer pass (2 threads: p50 44 ms, p99 660 ms; 1 thread: 9 / 29 ms)
    torch.set_num_threads(1)
    model.query_vectors(histories[:4])                      # warm-up
    # as the service calibrates (serving.live): the model's queries of 256 random histories, recall@10 0.98
    probe = [rng.integers(0, split.train.n_items, int(rng.integers(1, 201))) for _ in range(256)]

    rows, load = [], [os.getloadavg()[0]]
    for n in args.sizes:
        matrix = synthetic_items(real, n)
        gc.collect()
        exact_ms, exact_top_ms, truth = [], [], []
        with PeakMemory() as mem_exact:
            for h in histories:
                t0 = time.perf_counter()
                q = model.query_vectors([h])[0]
                t1 = time.perf_counter()
                truth.append(exact_top(q, matrix, h))
                exact_ms.append((time.perf_counter() - t0) * 1e3)
                exact_top_ms.append((time.perf_counter() - t1) * 1e3)
        rows.append({"model": f"exact-{label(n)}", "metrics": {
            "recall@10": 1.0, **percentiles(exact_ms), "build_seconds": 0.0, "peak_rss_mb": mem_exact.peak_mb,
            **{f"top10_{k}": v for k, v in percentiles(exact_top_ms).items()}}})
        with PeakMemory() as mem_ann:
            t0 = time.perf_counter()
            ann = build(matrix)
            pseudo_nprobe = ann.nprobe
            ann = calibrate_on(ann, model.query_vectors(probe), 0.98)
            build_seconds = time.perf_counter() - t0
            ann_ms, ann_top_ms, hits = [], [], []
            for h, want in zip(histories, truth):
                t0 = time.perf_counter()
                q = model.query_vectors([h])
                t1 = time.perf_counter()
                top, _ = search(ann, q, 10, [np.unique(h)])
                ann_ms.append((time.perf_counter() - t0) * 1e3)
                ann_top_ms.append((time.perf_counter() - t1) * 1e3)
                hits.append(len(np.intersect1d(top[0], want)) / len(want))
        rows.append({"model": f"ann-{label(n)}", "metrics": {
            "recall@10": float(np.mean(hits)), **percentiles(ann_ms), "build_seconds": build_seconds,
            "peak_rss_mb": mem_ann.peak_mb, "nlist": int(ann.index.nlist), "nprobe": int(ann.nprobe),
            "pseudo_nprobe": int(pseudo_nprobe),
            "calibrated_recall": ann.calibrated_recall,
            **{f"top10_{k}": v for k, v in percentiles(ann_top_ms).items()}}})
        for row in rows[-2:]:
            row["peak_rss_mb"] = row["metrics"]["peak_rss_mb"]
        load.append(os.getloadavg()[0])
        log.info("%s", rows[-2:])
        del ann, matrix
        gc.collect()

    protocol = (f"{len(histories)} single-history requests (ML-100K training histories) against item tables of "
                f"{', '.join(label(n) for n in args.sizes)} items: the fitted InterestModel's 1,682 real item rows "
                "+ rows sampled from an 8-component Gaussian mixture fitted to them (unit length). p50/p99: "
                "wall ms per request, query vector (transformer, 1 torch thread) + top-10 with the history "
                "excluded; top10_*: the top-10 step alone. "
                "exact = full dot-product scoring; ann = FAISS IVF-Flat (inner product via one extra coordinate), "
                "nlist ~ 2 sqrt(n), nprobe calibrated at build for recall 0.99 on pseudo queries (pseudo_nprobe), "
                "then, as the service does, raised where needed for recall 0.98 on the model's own queries of 256 "
                "random histories of 1-200 random items (nprobe; retrieval.calibrate_on). "
                "build_seconds = index build (k-means, add, calibration); peak_rss_mb = process peak RSS "
                "during the row (the whole process, model and data included). The service p99 at 1M items "
                "(target <= 20 ms on 2 cores) is measured through `migrec serve` by run_serving.py "
                "(serving.json, rows recommend-1m-items, recommend-explain-1m-items, similar-1m-items). "
                f"1-minute load average during the run: {min(load):.1f}-{max(load):.1f} on {os.cpu_count()} cores.")
    write_json({"dataset": "ann", "protocol": protocol, "machine": machine_description(),
                "command": "python benchmarks/run_ann.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                "rows": rows}, order=[f"{kind}-{label(n)}" for n in args.sizes for kind in ("exact", "ann")])
    write_results_md()


if __name__ == "__main__":
    main()
