"""How fast does `migrec serve` answer, ingest and reflect events, on 2 cores, over loopback?

    python benchmarks/run_serving.py --data /work/shared/data            # SQLite and PostgreSQL
    python benchmarks/run_serving.py --data /work/shared/data --quick    # a small smoke run

Worlds (built once, cached under --work, default runs/serving):
- ml-1m-u3k: MovieLens-1M users 1-2999 (487,650 timed events, 3,883 items) imported with
  `migrec.serving.bootstrap.import_dataset` (what `migrec import` runs): interest-text+id (bundled
  MiniLM text vectors, embedding cache) in the migration-aware blend, trained only `--epochs` epochs,
  since latency, not accuracy, is measured here.
- 100k: the same model grown by `add_items` to a 100,000-item catalogue (3,883 real items +
  96,117 synthetic ones whose text vectors are drawn from a Gaussian mixture fitted to the real
  ones), with a synthetic log of `--synthetic-users` users (20-400 events each, two topic
  clusters per user, a switch in between).
- 1m-items (`--worlds million`): the same, grown to 1,000,000 items (30,000 with --quick, whose
  model gets ann_threshold=15,000 so that the smoke run goes through the index too). From the
  model's `ann_threshold` (100,000) items on, LiveModel answers recommend and similar from the
  model's FAISS index (models.retrieval), exact below; its rows: recommend, recommend with
  explanations, similar items.

For each store backend (SQLite file; PostgreSQL in a fresh database, dropped afterwards) a fresh
store is filled with the world's catalogue and log, `migrec serve` is started as a subprocess on
127.0.0.1 (writes need an API key made with the store's create_key, as `migrec keys create`
does), and benchmarks/loadgen.py runs each scenario as a second process with keep-alive
connections. Every run is bounded in count and time. The server's resident memory is sampled
every 50 ms during each scenario (peak_rss_mb: that process only, not PostgreSQL's). Headline
figures go to each row's `metrics`, the rest (counts, maxima, overload flag, load) to `details`.
Then one request at a time is timed end-to-end and split into its parts in this process
(store read, LiveModel.recommend, JSON; the remainder is framework/HTTP): see `profile`.

Writes benchmarks/results/serving.json and regenerates RESULTS.md (not with --quick, which writes
<work>/serving-quick.json).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import RESULTS, write_json, write_results_md  # noqa: E402

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
ORDER = ["recommend-ml-1m-u3k", "recommend-explain-ml-1m-u3k", "recommend-100k", "recommend-1m-items",
         "recommend-explain-1m-items", "similar-1m-items", "ingest-single",
         "ingest-batch100", "event-to-effect", "read-your-writes"]
ORDER = ORDER + [f"{name}-postgres" for name in ORDER]
CATALOGUE_SIZE = 100_000
MILLION, MILLION_QUICK = 1_000_000, 30_000     # the 1m-items world's catalogue (full run, --quick)
PROFILES: dict = {}          # backend -> where one request's time goes (see profile)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- worlds ----------------------------------------------------------------------------------------
def build_ml1m(work: Path, data: Path, epochs: int, dataset: str) -> dict:
    """The ML-1M users 1-2999 model (import_dataset into a scratch SQLite store); cached."""
    folder = work / dataset
    meta_file = folder / "world.json"
    if meta_file.exists():
        return json.loads(meta_file.read_text())
    from migrec.serving import Store
    from migrec.serving.bootstrap import import_dataset

    if folder.exists():
        shutil.rmtree(folder)
    kind, path = ("ml-1m", data / "ml-1m") if dataset == "ml-1m-u3k" else ("ml-100k", data / "ml-100k")
    log(f"building {dataset}: import_dataset({kind}, interest-text+id in the blend, {epochs} epochs)")
    store = Store.open(f"sqlite:///{(folder / 'build.db').resolve()}")
    started = time.perf_counter()
    version = import_dataset(store, folder / "versions", kind, str(path), model="interest-text+id", blend=True,
                             encoder="st", params=dict(epochs=epochs, device="cpu", seed=0, progress=True),
                             cache_dir=True, progress=True)
    seconds = time.perf_counter() - started
    store.close()
    (folder / "build.db").unlink()
    for extra in ("build.db-wal", "build.db-shm"):
        (folder / extra).unlink(missing_ok=True)
    meta = {"name": dataset, "kind": kind, "path": str(path), "model": str((folder / version["path"]).resolve()),
            "train_seconds": seconds, "epochs": epochs}
    meta_file.write_text(json.dumps(meta, indent=1))
    return meta


def synthetic_vectors(real: np.ndarray, n: int, seed: int = 0):
    """n unit rows drawn from an 8-component Gaussian mixture fitted to `real`, and the mixture."""
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(8, covariance_type="full", random_state=seed, reg_covar=1e-4).fit(real)
    rows, _ = gmm.sample(n)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows[np.random.default_rng(seed).permutation(n)].astype(np.float32), gmm


def synthetic_log(item_ids: np.ndarray, clusters: np.ndarray, users: int, seed: int = 0):
    """Per user 20-400 events: items of one cluster, then of another from a random switch point on;
    within a cluster a skewed popularity (index ~ n * u^2 of a shuffled order)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    members = [rng.permutation(np.flatnonzero(clusters == c)) for c in range(clusters.max() + 1)]
    members = [m for m in members if len(m)]
    rows = []
    start = 1.6e9
    for u in range(users):
        n = int(rng.integers(20, 401))
        a, b = rng.choice(len(members), 2, replace=False)
        switch = int(n * rng.uniform(0.3, 0.8))
        picks = [members[a if j < switch else b] for j in range(n)]
        idx = [m[int(len(m) * rng.random() ** 2)] for m in picks]
        times = start + u * 3600.0 + np.cumsum(rng.integers(60, 3600, n))
        rows.append(pd.DataFrame({"user_id": f"syn{u:05d}", "item_id": item_ids[idx], "domain": "movies",
                                  "event": "interaction", "timestamp": times.astype(np.float64)}))
    return pd.concat(rows, ignore_index=True)


def build_large(work: Path, base: dict, size: int, users: int, name: str | None = None,
                ann_threshold: int | None = None) -> dict:
    """The base model grown to `size` items with add_items, saved as a model folder; a synthetic log.
    `ann_threshold`: set on the (base) model, e.g. lower for a --quick world to go through the index."""
    import pandas as pd

    from migrec.registry import load_model
    from migrec.serving.bootstrap import write_model_folder

    name = name or f"{size // 1000}k"
    folder = work / f"{base['name']}-{name}"
    meta_file = folder / "world.json"
    if meta_file.exists():
        return json.loads(meta_file.read_text())
    if folder.exists():
        shutil.rmtree(folder)
    log(f"building the {size:,}-item world from {base['model']}")
    model = load_model(base["model"])
    catalogue = pd.read_parquet(Path(base["model"]) / "catalogue.parquet")
    real = np.asarray(model.item_vectors_, dtype=np.float32)
    n_new = size - len(model.item_ids_)
    started = time.perf_counter()
    vectors, gmm = synthetic_vectors(real, n_new)
    ids = np.array([f"s{i:06d}" for i in range(n_new)], dtype=object)
    clusters = gmm.predict(np.vstack([real, vectors]))
    model.add_items(list(ids), vectors, domains=["movies"] * n_new, encoder=model.encoder_info()["model_id"])
    if ann_threshold is not None:
        getattr(model, "base", model).set_params(ann_threshold=ann_threshold)
    grow_seconds = time.perf_counter() - started
    extra = pd.DataFrame({"item_id": ids, "domain": "movies", "title": [f"Synthetic item {i}" for i in range(n_new)],
                          "category": [f"cluster {c}" for c in clusters[len(real):]]})
    catalogue = pd.concat([catalogue, extra], ignore_index=True)
    out = write_model_folder(model, catalogue, folder / "versions" / "v0001", "st", None,
                             {"dataset": f"{base['name']} + {n_new} synthetic items"})
    all_ids = np.asarray(model.item_ids_, dtype=object)
    events = synthetic_log(all_ids, clusters, users)
    events.to_parquet(folder / "log.parquet", index=False)
    meta = {"name": name, "model": str(out.resolve()), "log": str((folder / "log.parquet").resolve()),
            "train_seconds": base["train_seconds"] + grow_seconds, "grow_seconds": grow_seconds,
            "items": int(len(all_ids)), "events": int(len(events)), "users": users}
    meta_file.write_text(json.dumps(meta, indent=1))
    log(f"{len(all_ids):,} items, {len(events):,} synthetic events for {users} users")
    return meta


def world_data(world: dict):
    """(catalogue frame, log frame) that fill a fresh store."""
    import pandas as pd

    from migrec import pipeline

    catalogue = pd.read_parquet(Path(world["model"]) / "catalogue.parquet")
    if "log" in world:
        events = pd.read_parquet(world["log"])
    else:
        events = pipeline.load_dataset(world["kind"], world["path"]).interactions
    return catalogue, events


# -- stores and the server -------------------------------------------------------------------------
def fill_store(url: str, world: dict) -> tuple[str, dict]:
    """A fresh store: catalogue, log, the world's model folder as the live version; a write key."""
    from migrec.serving import Store
    from migrec.serving.bootstrap import catalogue_rows, store_log

    catalogue, events = world_data(world)
    started = time.perf_counter()
    store = Store.open(url)
    store.add_items(catalogue_rows(catalogue), replace=True)
    store_log(store, events, progress=True)
    version = store.add_version(world["model"], events_upto=store.last_seq(), metrics={}, note="benchmark")
    store.set_live(version)
    key = store.create_key("bench", "write")
    counts = store.counts()
    store.close()
    log(f"store filled in {time.perf_counter() - started:.0f} s: {counts}")
    users = sorted(events["user_id"].astype(str).unique())
    items = [str(i) for i in catalogue["item_id"]]
    return key, {"users": users, "items": items, "counts": counts}


def pg_database(name: str, drop_only: bool = False) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m migrec serve` in a subprocess on 127.0.0.1; ready when /readyz answers 200."""

    def __init__(self, data_dir: Path, store_url: str, log_file: Path, ready_timeout: float = 900.0):
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.log_fh = open(log_file, "w")
        cmd = [sys.executable, "-m", "migrec", "serve", "--data-dir", str(data_dir), "--store", store_url,
               "--host", "127.0.0.1", "--port", str(self.port), "--threads", "1"]
        started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=self.log_fh, stderr=subprocess.STDOUT, env=env)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"migrec serve exited ({self.proc.returncode}); see {log_file}:\n"
                                   + log_file.read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.perf_counter() - started > ready_timeout:
                self.stop()
                raise RuntimeError(f"migrec serve not ready after {ready_timeout:.0f} s; see {log_file}")
            time.sleep(0.5)
        self.ready_seconds = time.perf_counter() - started
        log(f"migrec serve ready on port {self.port} in {self.ready_seconds:.1f} s (pid {self.proc.pid})")

    def rss_mb(self) -> float:
        import psutil

        try:
            return psutil.Process(self.proc.pid).memory_info().rss / 2 ** 20
        except psutil.Error:
            return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_fh.close()


def loadgen(server: Server, spec: dict, run_dir: Path, timeout: float) -> dict:
    """Run one scenario in a second process (benchmarks/loadgen.py); sample the server's RSS meanwhile."""
    spec = {"host": "127.0.0.1", "port": server.port, **spec}
    path = run_dir / f"spec-{spec['scenario']}.json"
    path.write_text(json.dumps(spec))
    peak, stop = [server.rss_mb()], threading.Event()

    def sample():
        while not stop.wait(0.05):
            peak.append(server.rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proc = subprocess.Popen([sys.executable, str(LOADGEN), str(path)], stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    stop.set()
    sampler.join()
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"loadgen {spec['scenario']} failed (exit {proc.returncode}): {out[-2000:]}")
    result = json.loads(line[len("RESULT "):])
    result["peak_rss_mb"] = float(np.nanmax(peak))
    result["load_1min"] = os.getloadavg()[0]        # the machine's load as the scenario ended
    return result


# -- scenarios -------------------------------------------------------------------------------------
def recommend_row(server, run_dir, name, users, cfg, explain=False, train_seconds=None) -> dict:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    query = "?k=10" + ("&explain=true" if explain else "")
    paths = [f"/users/{u}/recommendations{query}" for u in rng.choice(users, 4000)]
    loadgen(server, {"scenario": "open", "paths": paths[:200], "rate": 20, "count": 100, "workers": 4},
            run_dir, 120)                                                        # warm-up, not measured
    count = cfg.explain_requests if explain else cfg.requests
    log(f"{name}: open loop, {cfg.rate:g} requests/s, {count} requests")
    fixed = loadgen(server, {"scenario": "open", "paths": paths, "rate": cfg.rate, "count": count,
                             "workers": 16, "seconds": count / cfg.rate + 5},
                    run_dir, count / cfg.rate + 600)
    log(f"{name}: closed loop, {cfg.concurrency} connections, {cfg.saturation_seconds:g} s")
    sat = loadgen(server, {"scenario": "closed", "paths": paths[::-1], "concurrency": cfg.concurrency,
                           "seconds": cfg.saturation_seconds, "count": 100_000},
                  run_dir, cfg.saturation_seconds + 300)
    light = {}
    if explain and cfg.light_requests:
        log(f"{name}: open loop at a light {cfg.light_rate:g} requests/s, {cfg.light_requests} requests")
        got = loadgen(server, {"scenario": "open", "paths": paths[1000:], "rate": cfg.light_rate,
                               "count": cfg.light_requests, "workers": 8,
                               "seconds": cfg.light_requests / cfg.light_rate + 5},
                      run_dir, cfg.light_requests / cfg.light_rate + 300)
        light = {"light_rps": cfg.light_rate, "light_p50_ms": got["p50_ms"], "light_p99_ms": got["p99_ms"],
                 "light_errors": got["errors"]}
    row = {"model": name,
           "metrics": {"p50_ms": fixed["p50_ms"], "p99_ms": fixed["p99_ms"], "rps": fixed["rps"],
                       "errors": fixed["errors"] + sat["errors"], "saturation_rps": sat["rps"],
                       "saturation_p50_ms": sat["p50_ms"], "saturation_p99_ms": sat["p99_ms"],
                       **({"light_p99_ms": light["light_p99_ms"]} if light else {})},
           "details": {"requests": fixed["requests"], "max_ms": fixed["max_ms"], "target_rps": cfg.rate,
                       # the server could not keep the rate: the queue, and so p50/p99, grew with the run's length
                       "overloaded": bool(fixed["rps"] < 0.95 * cfg.rate),
                       "fixed_rate_errors": fixed["errors"], "saturation_requests": sat["requests"],
                       "saturation_errors": sat["errors"], "saturation_connections": cfg.concurrency, **light,
                       "load_1min": max(fixed["load_1min"], sat["load_1min"])},
           "train_seconds": train_seconds, "peak_rss_mb": max(fixed["peak_rss_mb"], sat["peak_rss_mb"])}
    show(row)
    return row


def similar_row(server, run_dir, name, items, cfg) -> dict:
    """GET /items/{id}/similar?k=10 for random catalogue items: open loop at the fixed rate (after a warm-up)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    paths = [f"/items/{i}/similar?k=10" for i in rng.choice(items, 4000)]
    loadgen(server, {"scenario": "open", "paths": paths[:200], "rate": 20, "count": 100, "workers": 4},
            run_dir, 120)                                                        # warm-up, not measured
    log(f"{name}: open loop, {cfg.rate:g} requests/s, {cfg.requests} requests")
    got = loadgen(server, {"scenario": "open", "paths": paths[200:], "rate": cfg.rate, "count": cfg.requests,
                           "workers": 16, "seconds": cfg.requests / cfg.rate + 5},
                  run_dir, cfg.requests / cfg.rate + 600)
    return measured_row(name, got, ("p50_ms", "p99_ms", "rps", "errors"), ("requests", "max_ms"),
                        target_rps=cfg.rate, overloaded=bool(got["rps"] < 0.95 * cfg.rate))


def measured_row(name: str, got: dict, metrics: tuple, details: tuple, **extra) -> dict:
    """A results row from one load-generator run: the named figures as metrics and details."""
    row = {"model": name, "metrics": {k: got[k] for k in metrics},
           "details": {**{k: got.get(k) for k in details}, **extra, "load_1min": got["load_1min"]},
           "train_seconds": None, "peak_rss_mb": got["peak_rss_mb"]}
    show(row)
    return row


def ingest_row(server, run_dir, name, key, info, cfg, batch) -> dict:
    log(f"{name}: closed loop, batches of {batch}, {cfg.concurrency} connections, {cfg.ingest_seconds:g} s")
    got = loadgen(server, {"scenario": "ingest", "headers": {"X-API-Key": key}, "users": info["users"],
                           "items": info["items"], "batch": batch, "concurrency": cfg.concurrency,
                           "seconds": cfg.ingest_seconds, "count": 100_000, "tag": f"{name}-{time.time():.0f}"},
                  run_dir, cfg.ingest_seconds + 300)
    return measured_row(name, got, ("p50_ms", "p99_ms", "rps", "errors", "events_per_s"),
                        ("events", "requests", "seconds", "max_ms", "first_error"), batch=batch,
                        connections=cfg.concurrency)


def effect_row(server, run_dir, name, key, info, cfg) -> dict:
    log(f"{name}: {cfg.effect_trials} trials")
    got = loadgen(server, {"scenario": "effect", "headers": {"X-API-Key": key}, "users": info["users"],
                           "trials": cfg.effect_trials, "seconds": 600, "seed": 1},
                  run_dir, 900)
    return measured_row(name, got, ("p50_ms", "p99_ms", "errors"),
                        ("write_p50_ms", "write_p99_ms", "reads_per_effect", "trials", "max_ms"))


def ryw_row(server, run_dir, name, key, info, cfg) -> dict:
    log(f"{name}: {cfg.ryw_trials} trials on {cfg.concurrency} connections")
    got = loadgen(server, {"scenario": "ryw", "headers": {"X-API-Key": key}, "users": info["users"],
                           "items": info["items"], "trials": cfg.ryw_trials, "concurrency": cfg.concurrency,
                           "seconds": 600, "seed": 2},
                  run_dir, 900)
    return measured_row(name, got, ("share", "p50_ms", "p99_ms", "errors"),
                        ("trials", "completed", "stale_reads", "written_item_recommended"))


def profile(server, run_dir, url, world, info, cfg) -> dict:
    """Where one request's time goes, request by request over one keep-alive connection (no
    concurrency): the request end-to-end against the server, then the same request in this process
    through the service's own parts: store.history, LiveModel.recommend (and, apart, one
    score_histories call of its model on the same history), FastAPI's JSON encoding.
    framework = end-to-end - those parts (HTTP, routing, validation, the thread hop), per request."""
    import http.client

    import torch
    from fastapi.encoders import jsonable_encoder

    from migrec.serving import Service, ServiceConfig

    rng = np.random.default_rng(7)
    users = [str(u) for u in rng.choice(info["users"], cfg.profile_requests)]
    service = Service(ServiceConfig(data_dir=str(run_dir), store=url, auth=True))
    torch.set_num_threads(1)
    live, store = service.live, service.store
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    out = {}
    for explain in (False, True):
        query = "?k=10" + ("&explain=true" if explain else "")
        parts = {"end_to_end": [], "store_history": [], "recommend": [], "score_histories": [], "json": [],
                 "framework": []}
        for u in users:
            t0 = time.perf_counter()
            conn.request("GET", f"/users/{u}/recommendations{query}")
            reply = conn.getresponse()
            reply.read()
            t1 = time.perf_counter()
            if reply.status != 200:
                raise RuntimeError(f"profile: GET recommendations for {u} answered {reply.status}")
            history = store.history(u, limit=200)
            t2 = time.perf_counter()
            events = [(h[1], h[2], h[4]) for h in history]
            idx = live.model.item_index([h[1] for h in history], unknown="drop")[-200:]
            t3 = time.perf_counter()
            live.model.score_histories([idx])
            t4 = time.perf_counter()
            answer = live.recommend(events, k=10, explain=explain, popular=service.popular)
            t5 = time.perf_counter()
            json.dumps(jsonable_encoder({"user_id": u, "model_version": live.version,
                                         "as_of_seq": history[-1][0] if history else 0, **answer}))
            t6 = time.perf_counter()
            parts["end_to_end"].append(t1 - t0)
            parts["store_history"].append(t2 - t1)
            parts["score_histories"].append(t4 - t3)
            parts["recommend"].append(t5 - t4)          # LiveModel.recommend, its own scoring included
            parts["json"].append(t6 - t5)
            parts["framework"].append((t1 - t0) - (t2 - t1) - (t5 - t4) - (t6 - t5))
        key = "explain" if explain else "plain"
        out[key] = {f"{name}_p50_ms": float(np.percentile(v, 50) * 1000) for name, v in parts.items()}
        out[key]["end_to_end_p99_ms"] = float(np.percentile(parts["end_to_end"], 99) * 1000)
    conn.close()
    service.store.close()
    log(f"profile ({len(users)} requests, one connection): {json.dumps(out, indent=1)}")
    return out


def show(row: dict) -> None:
    m = {**row["metrics"], **row.get("details", {})}
    parts = [f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items() if v is not None]
    log(f"  {row['model']}: " + ", ".join(parts) + f", peak_rss_mb={row['peak_rss_mb']:.0f}")


def run_backend(backend: str, worlds: dict, cfg, work: Path) -> list[dict]:
    """Every scenario against one store backend ("sqlite" or "postgresql")."""
    suffix = "" if backend == "sqlite" else "-postgres"
    rows = []
    for wname, world in worlds.items():
        run_dir = work / f"run-{wname}-{backend}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        db = f"migrec_bench_{wname.replace('-', '_')}_{os.getpid()}"
        url = pg_database(db) if backend == "postgresql" else f"sqlite:///{(run_dir / 'store.db').resolve()}"
        log(f"== {wname} on {backend}: filling a fresh store")
        server = None
        try:
            key, info = fill_store(url, world)
            server = Server(run_dir, url, run_dir / "server.log")
            if world.get("role") == "large":
                rows.append(recommend_row(server, run_dir, f"recommend-{world['name']}{suffix}", info["users"], cfg,
                                          train_seconds=world["train_seconds"]))
                if world["name"] == "1m-items":      # above the ANN threshold: explanations and similar too
                    rows.append(recommend_row(server, run_dir, f"recommend-explain-{world['name']}{suffix}",
                                              info["users"], cfg, explain=True, train_seconds=world["train_seconds"]))
                    rows.append(similar_row(server, run_dir, f"similar-{world['name']}{suffix}", info["items"], cfg))
                continue
            label = world["name"]
            rows.append(recommend_row(server, run_dir, f"recommend-{label}{suffix}", info["users"], cfg,
                                      train_seconds=world["train_seconds"]))
            rows.append(recommend_row(server, run_dir, f"recommend-explain-{label}{suffix}", info["users"], cfg,
                                      explain=True, train_seconds=world["train_seconds"]))
            rows.append(ingest_row(server, run_dir, f"ingest-single{suffix}", key, info, cfg, 1))
            rows.append(ingest_row(server, run_dir, f"ingest-batch100{suffix}", key, info, cfg, 100))
            rows.append(effect_row(server, run_dir, f"event-to-effect{suffix}", key, info, cfg))
            rows.append(ryw_row(server, run_dir, f"read-your-writes{suffix}", key, info, cfg))
            if cfg.profile_requests:
                PROFILES[backend] = profile(server, run_dir, url, world, info, cfg)
                (work / f"profile-{backend}.json").write_text(json.dumps(PROFILES[backend], indent=1))
        finally:
            if server is not None:
                server.stop()
            if backend == "postgresql":
                pg_database(db, drop_only=True)
            for f in run_dir.glob("store.db*"):
                f.unlink()
    return rows


def profile_note(cfg) -> str:
    """One sentence per backend: the p50 of each part of a request, from profile()."""
    out = []
    for backend, prof in PROFILES.items():
        for kind, p in prof.items():
            out.append(f"{backend} {kind}: end-to-end p50 {p['end_to_end_p50_ms']:.1f} ms (p99 "
                       f"{p['end_to_end_p99_ms']:.1f}) = store.history {p['store_history_p50_ms']:.2f} + "
                       f"LiveModel.recommend {p['recommend_p50_ms']:.2f} (of which one model.score_histories call "
                       f"{p['score_histories_p50_ms']:.2f}) + JSON {p['json_p50_ms']:.2f} + framework/HTTP "
                       f"{p['framework_p50_ms']:.2f}")
    if not out:
        return ""
    return (f" Where a request's time goes ({cfg.profile_requests} requests of the real-data world over one "
            f"connection, no concurrency; parts timed in-process on the same store and model, p50 each): "
            + "; ".join(out) + ".")


def code_version() -> str:
    """The commit the service ran from, and whether src/ had local changes."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit"
    return f"commit {head}" + (" with local changes in src/" if dirty else "")


def machine() -> str:
    from migrec.hardware import machine_description

    return machine_description()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--work", default=None, help="cache and run folder (default runs/serving, "
                                                     "runs/serving-quick with --quick)")
    parser.add_argument("--quick", action="store_true", help="small smoke run: ML-100K, 10k items, short runs")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--worlds", default="base,large,million",
                        help="base (the real data set), large (the 100k items), million (the 1m-items world)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s of the fixed-rate runs")
    parser.add_argument("--requests", type=int, default=1500, help="requests per fixed-rate run")
    parser.add_argument("--explain-requests", type=int, default=500,
                        help="requests of the fixed-rate explain=true run (fewer: it may not keep the rate)")
    parser.add_argument("--light-rate", type=float, default=5.0,
                        help="requests/s of the extra light-load run of explain=true (its latency without a queue)")
    parser.add_argument("--light-requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4, help="connections of the saturation/ingest runs")
    parser.add_argument("--saturation-seconds", type=float, default=20.0)
    parser.add_argument("--ingest-seconds", type=float, default=15.0)
    parser.add_argument("--effect-trials", type=int, default=300)
    parser.add_argument("--ryw-trials", type=int, default=1000)
    parser.add_argument("--synthetic-users", type=int, default=1000)
    parser.add_argument("--profile-requests", type=int, default=300,
                        help="requests of the per-part latency profile of the real-data world (0: none)")
    parser.add_argument("--build-only", action="store_true")
    cfg = parser.parse_args(argv)
    command = "python benchmarks/run_serving.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if cfg.quick:
        for name, value in dict(requests=200, saturation_seconds=5.0, ingest_seconds=4.0, effect_trials=30,
                                ryw_trials=100, epochs=1, synthetic_users=100, profile_requests=50, explain_requests=100,
                                light_requests=20).items():
            if getattr(cfg, name) == parser.get_default(name):
                setattr(cfg, name, value)
    work = Path(cfg.work or ROOT / "runs" / ("serving-quick" if cfg.quick else "serving")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    code = code_version()
    load = os.getloadavg()
    log(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")

    base = build_ml1m(work, Path(cfg.data), cfg.epochs, "ml-100k" if cfg.quick else "ml-1m-u3k")
    size = 10_000 if cfg.quick else CATALOGUE_SIZE
    worlds = {}
    if "base" in cfg.worlds:
        worlds[base["name"]] = base
    if "large" in cfg.worlds:
        large = build_large(work, base, size, cfg.synthetic_users)
        worlds[large["name"]] = {**large, "role": "large"}
    if "million" in cfg.worlds:
        million = build_large(work, base, MILLION_QUICK if cfg.quick else MILLION, cfg.synthetic_users, "1m-items",
                              ann_threshold=MILLION_QUICK // 2 if cfg.quick else None)
        worlds[million["name"]] = {**million, "role": "large"}
    if cfg.build_only:
        return
    rows, loads = [], []
    for backend in cfg.backends.split(","):
        rows += run_backend(backend, worlds, cfg, work)
        loads.append(os.getloadavg()[0])
    load_note = (f"1-minute load average {load[0]:.2f} before the run and "
                 f"{', '.join(f'{x:.2f}' for x in loads)} after each backend (the server and the load generator "
                 f"themselves load the 2 cores)")
    protocol = (
        f"Code: {code}. `migrec serve` (uvicorn, 1 process, sync endpoints in its thread pool, torch 1 thread per request, "
        f"recommend and similar scored exactly over every item below the model's ann_threshold of 100,000 items, "
        f"from its FAISS index (models.retrieval: IVF-Flat; nprobe calibrated as the version loads: recall@10 "
        f"0.99 on pseudo queries and 0.98 on the model's own queries of 256 random histories) from there on, "
        f"so in the 100k and 1m-items worlds) on 127.0.0.1 with writes behind an API key; the load "
        f"generator (benchmarks/loadgen.py, http.client keep-alive connections) is a second process on the same "
        f"{os.cpu_count()} cores. Worlds: {base['name']} = MovieLens-1M users 1-2999 (487,650 events, 3,883 items) "
        f"imported with import_dataset: interest-text+id (bundled MiniLM text) in the migration-aware blend, "
        f"trained {cfg.epochs} epochs only (latency, not accuracy, is measured; train_seconds = the whole import); "
        f"100k = that model grown by add_items to {size:,} items (synthetic text vectors from a Gaussian mixture "
        f"fitted to the real ones) with a synthetic log of {cfg.synthetic_users} users (20-400 events, two topic "
        f"clusters each); 1m-items = the same, grown to {MILLION_QUICK if cfg.quick else MILLION:,} items (same log "
        f"recipe; its similar-1m-items row: GET /items/ID/similar?k=10 for random items, open loop as below); "
        f"train_seconds = the import + add_items. Each backend gets a fresh store filled with the "
        f"catalogue and log (SQLite file in WAL, synchronous=FULL; PostgreSQL 127.0.0.1 in a new database, "
        f"dropped after). Recommendations: k=10, the user's newest 200 events, users drawn at random from the "
        f"world's users; p50_ms/p99_ms/rps = open loop at {cfg.rate:g} requests/s for {cfg.requests} requests, "
        f"latency from each request's scheduled send time (no coordinated omission), after 100 warm-up requests "
        f"(explain=true: {cfg.explain_requests} requests); when the server cannot keep the rate (details.overloaded: "
        f"achieved rps < 95 % of it) its queue grows for the whole run and p50/p99 grow with the run's length; "
        f"saturation_* = closed loop, {cfg.concurrency} connections, {cfg.saturation_seconds:g} s; explain rows also "
        f"light_* = open loop at {cfg.light_rate:g} requests/s for {cfg.light_requests} requests. Ingestion: "
        f"closed loop on {cfg.concurrency} connections for {cfg.ingest_seconds:g} s, POST /events with one event or "
        f"a batch of 100 (random user and item, fresh event_id), each acknowledged after a durable commit; "
        f"p50/p99 per request, events_per_s accepted. event-to-effect: {cfg.effect_trials} sequential trials: read "
        f"a user's top 10, post an event on the top item, then read until as_of_seq >= the acknowledged last_seq "
        f"and the item left the list; p50/p99 from the acknowledgement to that answer (reads_per_effect: how many "
        f"reads it took). read-your-writes: {cfg.ryw_trials} trials on {cfg.concurrency} connections: random user, "
        f"half the time one of their current top 10 else a random catalogue item, write, read at once; share = "
        f"trials whose read had as_of_seq >= the write's last_seq and did not recommend the item; p50/p99 = write "
        f"+ read. peak_rss_mb: the server process's resident memory, sampled every 50 ms during the row's runs "
        f"(PostgreSQL's own processes not included). Targets (2 cores): recommendation p99 <= 15 ms at 3,883 items "
        f"and <= 30 ms at 100,000 items at 50 requests/s, <= 20 ms at 1,000,000 items (issue 11), explain p99 "
        f"<= 60 ms, ingestion >= 2,000 events/s in "
        f"batches, read-your-writes share 1.0. Each row's `details` hold the rest (counts, maxima, the overload "
        f"flag, the 1-minute load average as the scenario ended). {load_note}. Rows this command measured: "
        f"{', '.join(r['model'] for r in rows)}; any other row is kept from the earlier command named in `command`, "
        f"with the code of its own run (see git history of this file)." + profile_note(cfg))
    payload = {"dataset": "serving", "protocol": protocol, "machine": machine(), "command": command, "rows": rows}
    if cfg.quick:
        out = work / "serving-quick.json"
        out.write_text(json.dumps(payload, indent=2))
        log(f"quick run: wrote {out} (benchmarks/results untouched)")
    else:
        write_json(payload, order=ORDER)
        write_results_md()
        log(f"wrote {RESULTS / 'serving.json'} and RESULTS.md")
    for r in rows:
        show(r)


if __name__ == "__main__":
    main()
