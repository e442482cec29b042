"""Fit and evaluate several models on one split, the same way, and report (Cornac style).

    result = Experiment(split, {"pop": Popularity(), "sasrec": SASRec()}).run()
    print(result.to_markdown())
    result.to_json("results/ml1m.json", command="migrec bench ...")
    result.plot("results/ml1m.png")
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from ..data.split import Split
from ..hardware import machine_description
from .evaluator import check_repeats, evaluate, repeats_note
from .memory import PeakMemory
from . import plots


class ExperimentResult:
    """Rows (one dict per model: model, metrics, segments, train_seconds, eval_seconds, peak_rss_mb,
    repeats) and the history policy that ran (`repeats`, also named in every written protocol)."""

    def __init__(self, rows: list, dataset: str = "", protocol: str = "", repeats: str = "exclude"):
        self.rows, self.dataset, self.protocol = rows, dataset, protocol
        self.repeats = check_repeats(repeats)

    def to_markdown(self, columns=("NDCG@10", "HR@10", "MRR@10", "coverage@10", "diversity@10", "novelty@10")) -> str:
        head = ["model", *columns, "train s", "peak MB"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        for r in self.rows:
            cells = [r["model"], *(_fmt(r["metrics"].get(c), 4) for c in columns),
                     _fmt(r.get("train_seconds"), 1), _fmt(r.get("peak_rss_mb"), 0)]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def document(self, dataset: str | None = None, protocol: str | None = None,
                 machine: str | None = None, command: str | None = None) -> dict:
        """{"dataset", "protocol", "repeats", "machine", "command", "rows": [...]}; NaN becomes null.
        The protocol always names the history policy (appended when it does not say repeats=)."""
        protocol = self.protocol if protocol is None else protocol
        if "repeats=" not in protocol:
            protocol = "; ".join(p for p in (protocol, repeats_note(self.repeats)) if p)
        return {
            "dataset": self.dataset if dataset is None else dataset,
            "protocol": protocol,
            "repeats": self.repeats,
            "machine": machine_description() if machine is None else machine,
            "command": " ".join(sys.argv) if command is None else command,
            "rows": _clean(self.rows),
        }

    def to_json(self, path, dataset: str | None = None, protocol: str | None = None,
                machine: str | None = None, command: str | None = None) -> dict:
        """Write `document(...)` to `path` and return it."""
        doc = self.document(dataset, protocol, machine, command)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2, allow_nan=False))
        return doc

    def save(self, folder, dataset: str | None = None, protocol: str | None = None,
             command: str | None = None) -> Path:
        """Write results.json, results.md and comparison.png into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.to_json(folder / "results.json", dataset=dataset, protocol=protocol, command=command)
        (folder / "results.md").write_text(self.to_markdown() + "\n")
        self.plot(folder / "comparison.png")
        return folder

    def plot(self, path, metric: str = "NDCG@10", title: str | None = None) -> Path:
        return plots.bar_chart(self.rows, path, metrics=(metric,), title=title or f"{metric} ({self.dataset})")

    def plot_segments(self, path, metric: str = "NDCG@10", title: str | None = None) -> Path:
        return plots.segment_chart(self.rows, metric, path, title=title)


class Experiment:
    """Fit each model on split.train (with split.valid for early stopping), evaluate on one EvalSet.

    models: {name: model} or a list (names from model.name, made unique with "#2", ...).
    eval_on: "test" or "valid". repeats: the evaluator's history policy ("exclude": every
    history item masked, a repeated target is a miss; "allow": nothing masked), recorded in every
    row and in the result's protocol. Other keyword arguments of `evaluate` go in `eval_kwargs`.
    """

    def __init__(self, split: Split, models, ks=(10, 20, 50), item_vectors=None, sampled_negatives=None,
                 eval_on: str = "test", progress: bool = True, repeats: str = "exclude", **eval_kwargs):
        if eval_on not in ("test", "valid"):
            raise ValueError(f"eval_on must be 'test' or 'valid', not {eval_on!r}")
        self.repeats = check_repeats(repeats)
        self.split, self.ks, self.item_vectors = split, ks, item_vectors
        self.sampled_negatives, self.eval_on, self.progress = sampled_negatives, eval_on, progress
        self.eval_kwargs = eval_kwargs
        self.models = dict(models) if isinstance(models, dict) else _named(models)

    def _log(self, msg: str, end: str = "\n") -> None:
        if self.progress:
            print(msg, end=end, flush=True)

    def run(self) -> ExperimentResult:
        evalset = getattr(self.split, self.eval_on)
        rows, total = [], len(self.models)
        for i, (name, model) in enumerate(self.models.items(), 1):
            self._log(f"[{i}/{total}] fitting {name} ... ", end="")
            with PeakMemory() as fit_mem:
                model.fit(self.split.train, self.split.valid)
            self._log(f"{fit_mem.seconds:.1f} s")
            self._log(f"[{i}/{total}] evaluating {name} on {self.eval_on} ({len(evalset)} users) ... ", end="")
            with PeakMemory() as eval_mem:
                res = evaluate(model, evalset, self.split.train, ks=self.ks, item_vectors=self.item_vectors,
                               sampled_negatives=self.sampled_negatives, repeats=self.repeats,
                               **self.eval_kwargs)
            self._log(f"{res.seconds:.1f} s")
            row = {"model": name, "metrics": res.metrics, "segments": res.segments,
                   "train_seconds": fit_mem.seconds, "eval_seconds": res.seconds,
                   "peak_rss_mb": fit_mem.peak_mb, "eval_peak_rss_mb": eval_mem.peak_mb,
                   "n_users": res.n_users, "repeats": res.repeats}
            if fit_mem.gpu_peak_mb is not None:
                row["gpu_peak_mb"] = fit_mem.gpu_peak_mb
            rows.append(row)
        protocol = "; ".join(p for p in (self.split.protocol, repeats_note(self.repeats)) if p)
        result = ExperimentResult(rows, dataset=self.split.name, protocol=protocol, repeats=self.repeats)
        self._log("\n" + result.to_markdown())
        return result



def _named(models) -> dict:
    out = {}
    for m in models:
        base = getattr(m, "name", type(m).__name__)
        name, i = base, 2
        while name in out:
            name, i = f"{base}#{i}", i + 1
        out[name] = m
    return out


def _fmt(v, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def _clean(obj):
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
