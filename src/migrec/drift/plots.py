"""Interest timeline: stacked topic shares over time, detected migrations marked."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .profiles import timeline


def plot_timeline(rows: np.ndarray, names: list[str], alarms=(), path: str | Path | None = None,
                  every: int = 10, truth=(), top: int = 8, title: str = "", ax=None):
    """Stacked area of topic shares per period of `every` events (x = event index).

    Only the `top` topics with the largest overall share are drawn; the rest are pooled in
    "other" so the legend stays readable. `alarms` (detections) are red lines, `truth` (known
    change points, in benchmarks) black dashed lines. Writes `path` when given; returns the figure.
    """
    import matplotlib
    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = np.asarray(rows, dtype=float)
    if rows.ndim != 2 or rows.shape[1] != len(names):
        raise ValueError(f"rows must be [n_events, {len(names)}] topic shares; got shape {rows.shape}")
    line = timeline(rows, every=every)
    shares = line.drop(columns="n_events").to_numpy()
    keep = np.argsort(-rows.sum(axis=0))[:top]
    other = 1.0 - shares[:, keep].sum(axis=1)
    labels = [names[i] for i in keep] + (["other"] if rows.shape[1] > top else [])
    layers = [shares[:, i] for i in keep] + ([np.clip(other, 0, 1)] if rows.shape[1] > top else [])
    x = np.asarray(line.index, dtype=float) + line["n_events"].to_numpy() / 2.0   # period centres
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 4))
    else:
        fig = ax.figure
    ax.stackplot(x, layers, labels=labels, alpha=0.85,
                 colors=plt.cm.tab20(np.linspace(0, 1, len(layers))))
    for i, t in enumerate(alarms):
        ax.axvline(t, color="red", lw=2, label="detected migration" if i == 0 else None)
    for i, t in enumerate(truth):
        ax.axvline(t, color="black", ls="--", lw=1.5, label="true change" if i == 0 else None)
    ax.set_xlim(0, len(rows))
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"event index (shares per {every} events)")
    ax.set_ylabel("share of interest")
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
