"""Shared writer of benchmark results: one JSON per benchmark, one RESULTS.md for all.

Every benchmark script calls `write_json(payload)` (merging rows it did not re-run)
and then `write_results_md()`, which regenerates benchmarks/RESULTS.md from every
results/*.json, so no table is ever edited by hand.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# Columns shown in RESULTS.md, in this order, when a results file has them.
COLUMNS = ["NDCG@10", "HR@10", "MRR@10", "Recall@10", "NDCG@50", "Recall@50",
           "sampled:NDCG@10", "sampled:HR@10",
           "cold-users:NDCG@10", "cold-items:HR@10", "cold-items:HR@50", "cold-items:median_rank",
           "cold-items:HR@1-among-cold", "cold-items:HR@10-among-cold", "cold-events:HR@10",
           "cold-events:HR@1-among-cold", "vs-text+id:NDCG@10", "vs-text+id:low", "vs-text+id:high",
           "coverage@10", "diversity@10", "novelty@10",
           "F1", "precision", "recall", "median_delay", "false_alarm_rate",
           "log_likelihood", "KL", "NDCG@10:after-migration", "HR@10:after-migration", "update_seconds",
           "seconds_to_converged", "epochs_to_converged", "best_valid_NDCG@10", "seconds_per_epoch",
           "recbole_seconds_per_epoch", "GFLOP_per_epoch", "achieved_GFLOP/s", "share_of_matmul_rate"]
MAX_COLUMNS = 10

INTRO = [
    "# Benchmark results", "",
    "Generated from `benchmarks/results/*.json` by the benchmark scripts; do not edit by hand "
    "(`python benchmarks/run_core.py --report-only` redraws it).",
    "Unless a section says otherwise, metrics are full ranking over every candidate item with the user's "
    "history excluded (`repeats=exclude`: every history item masked, so a target the user already had is a "
    "miss; each section's protocol names the policy that ran); `sampled:` metrics rank the target among "
    "sampled negatives. `train s` is the wall "
    "time of `fit`; `peak RSS MB` is the process's peak resident memory during `fit`, data included.", ""]


def read(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def command_history(earlier: str, command: str) -> str:
    """`earlier` commands (joined by " ; then ") followed by `command`, each named once."""
    parts = [c for c in earlier.split(" ; then ") if c and c != command]
    return " ; then ".join(parts + [command])


def row_machines(machine: str, models) -> dict:
    """Model -> the machine that made its row, read from a results file's `machine` (one machine, or
    "rows a, b: M1 | rows c: M2" as machine_history writes it; older files nest "earlier rows: ...")."""
    out: dict = {}
    for part in machine.split(" | "):
        part = part.removeprefix("earlier rows: ")
        names, sep, rest = part.partition(": ")
        if part.startswith("rows ") and sep:
            for name in names[len("rows "):].split(", "):
                out.setdefault(name, rest)
        else:                                   # a plain machine: every row not yet named
            for name in models:
                out.setdefault(name, part)
    return out


def machine_history(earlier: str, kept_models, machine: str, models) -> str:
    """The machine of a results file whose kept rows may come from other machines than `models`'
    rows: each machine once, with the rows it made ("rows a, b: M1 | rows c: M2")."""
    known = row_machines(earlier, kept_models) if earlier else {}
    made = {**{m: known.get(m, "unknown machine") for m in kept_models}, **{m: machine for m in models}}
    groups: dict = {}
    for name, where in made.items():
        groups.setdefault(where, []).append(name)
    if len(groups) == 1:
        return next(iter(groups))
    return " | ".join(f"rows {', '.join(sorted(names))}: {where}" for where, names in groups.items())


def write_json(payload: dict, order: list[str] | None = None, finalize=None, kept_machine: bool = True) -> Path:
    """Write results/<dataset>.json, keeping earlier rows of models this run did not produce.

    finalize(rows) -> rows: recompute what depends on all rows (e.g. flags against a reference row).
    kept_machine: name the kept rows' machine too where it differs (False: the payload's machine
    already names every row's).
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{payload['dataset']}.json"
    previous = read(out)
    new = {r["model"] for r in payload["rows"]}
    kept = [r for r in previous["rows"] if r["model"] not in new] if previous else []
    rows = kept + payload["rows"]
    if kept and previous.get("command"):     # the kept rows came from earlier commands: name them too
        payload = {**payload, "command": command_history(previous["command"], payload["command"])}
    if kept and kept_machine:                # ... and maybe from another machine
        payload = {**payload, "machine": machine_history(previous.get("machine", ""), [r["model"] for r in kept],
                                                         payload["machine"], new)}
    if finalize is not None:
        rows = finalize(rows)
    if order:
        rows.sort(key=lambda r: order.index(r["model"]) if r["model"] in order else len(order))
    payload = {**payload, "rows": _clean(rows)}
    out.write_text(json.dumps(payload, indent=2, allow_nan=False))
    return out


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _columns(rows: list) -> list[str]:
    present = [c for c in COLUMNS if any(c in r["metrics"] for r in rows)]
    if not present:  # a benchmark with its own metric names: show them as they come
        present = list(dict.fromkeys(k for r in rows for k in r["metrics"]))
    return present[:MAX_COLUMNS]


def _cell(value, digits=4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):   # ranks, milliseconds, megabytes: at most one decimal from 100 up
        return f"{value:.{min(digits, 1) if abs(value) >= 100 else digits}f}"
    return str(value)


def write_results_md() -> Path:
    lines = list(INTRO)
    for path in sorted(RESULTS.glob("*.json")):
        payload = read(path)
        cols = _columns(payload["rows"])
        lines += [f"## {payload['dataset']}", "", f"- protocol: {payload['protocol']}",
                  f"- machine: {payload['machine']}", f"- command: `{payload['command']}`", "",
                  "| model | " + " | ".join(cols) + " | train s | peak RSS MB |",
                  "|---|" + "---:|" * (len(cols) + 2)]
        for r in payload["rows"]:
            vals = [_cell(r["metrics"].get(c)) for c in cols]
            lines.append(f"| {r['model']} | " + " | ".join(vals) +
                         f" | {_cell(r.get('train_seconds'), 1)} | {_cell(r.get('peak_rss_mb'), 0)} |")
        for png in sorted(RESULTS.glob(f"{path.stem}*.png")):
            lines += ["", f"![{png.stem}](results/{png.name})"]
        lines.append("")
    out = HERE / "RESULTS.md"
    out.write_text("\n".join(lines))
    return out
