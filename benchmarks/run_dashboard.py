"""How long does each dashboard page take to render in a real browser, with the ML-1M users 1-2999
world loaded?

    python benchmarks/run_dashboard.py --data /work/shared/data
    python benchmarks/run_dashboard.py --data /work/shared/data --build-only    # the world only

The world is run_serving.py's `ml-1m-u3k` (MovieLens-1M users 1-2999: 487,650 events, 3,883 items;
interest-text+id with the bundled MiniLM text vectors in the migration-aware blend, trained
`--epochs` epochs), built by its `build_ml1m` and cached under --work (default runs/dashboard),
with a SQLite store filled by its `fill_store` (also cached: the benchmark only reads). `migrec
serve` runs on 127.0.0.1 (run_serving's `Server`) and Debian's headless chromium, driven by
Playwright, opens each page `--loads` times (several users / items / queries), each in a fresh
browser context (cold: nothing cached), then again in one context after a warm-up load (warm); a
load's time is the page's own window.migrecReadyMs (ms from navigation start until its data are
loaded and its charts drawn), read by benchmarks/_browser.py's `render_ms`, the helper the browser tests use.

Writes benchmarks/results/dashboard.json (rows overview, user, item, models, search with p50_ms,
p99_ms, max_ms of the cold loads and warm_p50_ms, warm_p99_ms, warm_max_ms; overview-idle: the
overview after the service's cached counts expired) and regenerates RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

from _browser import (LAPTOP, PAGES, LoopbackGuard, launch, percentile, render_ms)  # noqa: E402
from _report import RESULTS, write_json, write_results_md  # noqa: E402
from run_serving import Server, build_ml1m, code_version, fill_store, log, machine  # noqa: E402

IDLE = "overview-idle"


def filled_store(work: Path, world: dict) -> tuple[Path, str, dict]:
    """The serve folder (a SQLite store with the world's catalogue, log and model as version 1);
    built once and reused (the benchmark only reads it) while the code that fills it is unchanged."""
    folder = work / "serve"
    meta_file = folder / "filled.json"
    url = f"sqlite:///{(folder / 'store.db').resolve()}"
    code = store_code()
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        if meta.get("code") == code:
            return folder, url, meta
        log("the store code changed since the store was filled: filling it again")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("store.db", "store.db-wal", "store.db-shm", "filled.json"):
        (folder / name).unlink(missing_ok=True)
    _key, info = fill_store(url, world)
    meta = {"code": code, "users": info["users"], "items": info["items"], "counts": info["counts"]}
    meta_file.write_text(json.dumps(meta))
    return folder, url, meta


def store_code() -> str:
    """The last commit of the code that fills the store (and whether it has local changes)."""
    import subprocess

    files = ["src/migrec/serving/bootstrap.py", "src/migrec/serving/store.py"]
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%H", "--", *files], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", *files], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+local" if dirty else "")


def targets(info: dict, catalogue: Path, loads: int, seed: int = 0) -> dict[str, list[str]]:
    """Page kind -> the `loads` page paths (under /dashboard/) to open, drawn with a fixed seed."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    users = [str(u) for u in rng.choice(info["users"], loads, replace=False)]
    items = [str(i) for i in rng.choice(info["items"], loads, replace=False)]
    titles = pd.read_parquet(catalogue, columns=["item_id", "title"]).set_index("item_id")["title"].astype(str)
    # half the queries a word of a title (items), half a user id prefix (users)
    words = [w for t in titles.loc[items] for w in t.replace("(", " ").split() if len(w) > 3 and w.isalpha()]
    queries = [str(rng.choice(words)) if n % 2 == 0 else users[n][:2] for n in range(loads)]
    from urllib.parse import quote

    return {"overview": [""] * loads, "user": [f"users/{quote(u)}" for u in users],
            "item": [f"items/{quote(i)}" for i in items], "models": ["models"] * loads,
            "search": [f"search?q={quote(q)}" for q in queries]}


def measure(base: str, plan: dict[str, list[str]], idle_loads: int = 0,
            idle_seconds: float = 0.0) -> tuple[dict, dict, list[str], int]:
    """Each page's render_ms per load, cold (a fresh browser context per load: nothing cached, as a
    first visit) and warm (one context, after a warm-up load: scripts and styles in the HTTP cache);
    the requests that left loopback (must be none) and the number of requests made."""
    from playwright.sync_api import sync_playwright

    cold, warm, outside, requests = {}, {}, [], 0
    with sync_playwright() as playwright:
        browser = launch(playwright)

        def context():
            ctx = browser.new_context(viewport=LAPTOP)
            return ctx, LoopbackGuard(ctx, block=False)

        def done(ctx, guard):
            nonlocal requests
            outside.extend(guard.outside)
            requests += len(guard.requests)
            ctx.close()

        try:
            for kind in PAGES:
                cold[kind] = []
                for path in plan[kind]:
                    ctx, guard = context()
                    cold[kind].append(render_ms(ctx.new_page(), f"{base}/dashboard/{path}"))
                    done(ctx, guard)
                ctx, guard = context()
                page = ctx.new_page()
                render_ms(page, f"{base}/dashboard/{plan[kind][0]}")            # warm-up: not counted
                warm[kind] = [render_ms(page, f"{base}/dashboard/{path}") for path in plan[kind]]
                done(ctx, guard)
                log(f"{kind}: cold p50 {percentile(cold[kind], 50):.0f} ms, max {max(cold[kind]):.0f} ms; "
                    f"warm p50 {percentile(warm[kind], 50):.0f} ms, max {max(warm[kind]):.0f} ms")
            if idle_loads:                  # the overview after the server's cached counts have expired
                cold[IDLE] = []
                for _ in range(idle_loads):
                    time.sleep(idle_seconds)
                    ctx, guard = context()
                    cold[IDLE].append(render_ms(ctx.new_page(), f"{base}/dashboard/"))
                    done(ctx, guard)
                log(f"{IDLE}: p50 {percentile(cold[IDLE], 50):.0f} ms, max {max(cold[IDLE]):.0f} ms")
        finally:
            browser.close()
    return cold, warm, outside, requests


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--work", default=str(ROOT / "runs" / "dashboard"), help="cache and run folder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--loads", type=int, default=20, help="measured loads per page kind")
    parser.add_argument("--idle-loads", type=int, default=5,
                        help="cold overview loads after --idle-seconds without a request (row overview-idle)")
    parser.add_argument("--idle-seconds", type=float, default=6.0,
                        help="longer than the service's counts_ttl (5 s), so /stats counts the log afresh")
    parser.add_argument("--build-only", action="store_true")
    cfg = parser.parse_args(argv)
    command = "python benchmarks/run_dashboard.py " + " ".join(sys.argv[1:] if argv is None else argv)
    work = Path(cfg.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    world = build_ml1m(work, Path(cfg.data), cfg.epochs, "ml-1m-u3k")
    folder, url, info = filled_store(work, world)
    if cfg.build_only:
        return
    plan = targets(info, Path(world["model"]) / "catalogue.parquet", cfg.loads)
    load_before = os.getloadavg()[0]
    server = Server(folder, url, work / "server.log")
    try:
        started = time.perf_counter()
        cold, warm, outside, requests = measure(f"http://127.0.0.1:{server.port}", plan, cfg.idle_loads,
                                                cfg.idle_seconds)
        seconds = time.perf_counter() - started
        rss = peak_rss_mb(server.proc.pid)
        load_after = os.getloadavg()[0]
    finally:
        server.stop()
    if outside:
        raise SystemExit(f"requests left loopback: {outside[:5]}")
    rows = []
    for kind, v in cold.items():
        metrics = {"p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99), "max_ms": max(v)}
        details = {"loads": len(v), "cold_ms": [round(x, 1) for x in v]}
        if kind in warm:
            metrics.update(warm_p50_ms=percentile(warm[kind], 50), warm_p99_ms=percentile(warm[kind], 99),
                           warm_max_ms=max(warm[kind]))
            details.update(targets=len(set(plan[kind])), warm_ms=[round(x, 1) for x in warm[kind]])
        rows.append({"model": kind, "metrics": metrics, "details": details, "train_seconds": None,
                     "peak_rss_mb": rss})
    counts = info["counts"]
    protocol = (
        f"Code: {code_version()}. Page render time in Debian's headless chromium {_chromium_version()} driven by "
        f"Playwright, at 1280x800: window.migrecReadyMs, the page's own ms from navigation start until its data are "
        f"fetched from the JSON API and its charts drawn (body[data-ready=true]). `migrec serve` (1 process, SQLite "
        f"store, torch 1 thread) on 127.0.0.1 with the ML-1M users 1-2999 world loaded ({counts['users']:,} users, "
        f"{counts['events']:,} events, {counts['items']:,} items; interest-text+id in the migration-aware blend, "
        f"{world['epochs']} epochs); browser and server share the machine's {os.cpu_count()} cores. Per page kind {cfg.loads} "
        f"targets (overview and models {cfg.loads} times, user and item pages of {cfg.loads} different random users "
        f"/ items, search {cfg.loads} queries: a title word or a user-id prefix), each loaded twice: p50/p99/max_ms "
        f"= cold loads, a fresh browser context per load (empty HTTP cache: a first visit); warm_* = the same "
        f"targets in one context after one uncounted warm-up load (scripts, styles and Chart.js cached). "
        f"overview-idle: {cfg.idle_loads} cold overview "
        f"loads, each after {cfg.idle_seconds:g} s without a request, longer than the service's counts_ttl (5 s), so "
        f"GET /stats counts the whole log afresh (the cost a first visit after a quiet spell sees). p50/p99 by "
        f"linear interpolation over the loads. Requests leaving "
        f"loopback: {len(outside)} of {requests}. Target: every page under 500 ms. peak_rss_mb: the server's "
        f"peak resident memory (VmHWM). details: every load's time. {seconds:.0f} s in all; 1-minute load average "
        f"{load_before:.2f} before and {load_after:.2f} after (other work on the machine included).")
    payload = {"dataset": "dashboard", "protocol": protocol, "machine": machine(), "command": command, "rows": rows}
    write_json(payload, order=[*PAGES, IDLE])
    write_results_md()
    log(f"wrote {RESULTS / 'dashboard.json'} and RESULTS.md")
    for r in rows:
        print(f"{r['model']:9s} p50 {r['metrics']['p50_ms']:7.1f} ms  p99 {r['metrics']['p99_ms']:7.1f} ms  "
              f"max {r['metrics']['max_ms']:7.1f} ms")


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident memory (VmHWM of /proc/PID/status), in MiB; None where unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _chromium_version() -> str:
    import subprocess

    from _browser import CHROMIUM

    try:
        out = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "(version unknown)"
    words = [w for w in out.split() if w[:1].isdigit()]
    return words[0] if words else "(version unknown)"


if __name__ == "__main__":
    main()
