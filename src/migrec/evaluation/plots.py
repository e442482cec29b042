"""PNG charts of experiment rows (matplotlib, headless Agg backend)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")          # no display needed (servers, CI)
    import matplotlib.pyplot as plt
    return plt


def _grouped(groups: list, series: dict, path, title: str, ylabel: str) -> Path:
    """Bars: one cluster per group, one bar per series key, each bar labelled with its value."""
    plt = _pyplot()
    n_series = max(len(series), 1)
    width = 0.8 / n_series
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 1.2 * len(groups) * max(1, n_series / 2))), 4.5))
    try:
        for i, (name, values) in enumerate(series.items()):
            vals = [v if v is not None and not math.isnan(v) else 0.0 for v in values]
            bars = ax.bar(x + (i - (n_series - 1) / 2) * width, vals, width, label=name)
            ax.bar_label(bars, labels=[f"{v:.3f}" if v is not None and not math.isnan(v) else "n/a"
                                       for v in values], fontsize=7, rotation=90, padding=2)
        ax.set_xticks(x, groups, rotation=30 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.margins(y=0.2)          # room for the value labels
        if len(series) > 1:
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


def bar_chart(rows: list, path, metrics=("NDCG@10", "HR@10"), title: str | None = None) -> Path:
    """Grouped bars: one cluster per model (row["model"]), one bar per metric."""
    models = [r["model"] for r in rows]
    series = {m: [r["metrics"].get(m, float("nan")) for r in rows] for m in metrics}
    return _grouped(models, series, path, title or ", ".join(metrics), "score")


def segment_chart(rows: list, metric: str, path, title: str | None = None) -> Path:
    """Grouped bars: one cluster per segment (e.g. "hist:1-5"), one bar per model."""
    segs = []
    for r in rows:
        segs += [s for s in r.get("segments", {}) if s not in segs]
    series = {r["model"]: [r.get("segments", {}).get(s, {}).get(metric, float("nan")) for s in segs] for r in rows}
    labels = [f"{s}\n(n={_n(rows, s)})" for s in segs]
    return _grouped(labels, series, path, title or f"{metric} by segment", metric)


def _n(rows, seg):
    for r in rows:
        if seg in r.get("segments", {}):
            return r["segments"][seg].get("n", "?")
    return "?"
