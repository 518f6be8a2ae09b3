"""EXPERIMENTS.md's ablation curves: one PNG per ablation, each method's all-steps MSE (mean
over seeds, bar: std over seeds) against the ablated setting, drawn from the snapshots."""

from __future__ import annotations

import io as _io
from pathlib import Path

import numpy as np

from gptjax import io

CURVE_NAME = "ablation_curve.png"

# One point per variant: (mean over seeds, std over seeds), or None where the variant has no
# figure for that method (not run, or run before the method existed).
Point = tuple[float, float] | None


def ablation_curve(path: Path, title: str, variants: list[str], series: dict[str, list[Point]]):
    """Draw ``series`` (method -> one point per variant) against the variants, evenly spaced
    (the settings are categories: orders, intervals, encoders, sizes), and write the PNG
    atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(variants))
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for i, (name, points) in enumerate(series.items()):
        have = [j for j, p in enumerate(points) if p is not None]
        if not have:
            continue
        mean = np.asarray([points[j][0] for j in have])
        std = np.asarray([points[j][1] for j in have])
        # Methods side by side at each setting, so equal figures stay readable.
        shift = (i - (len(series) - 1) / 2) * 0.06
        ax.errorbar(x[have] + shift, mean, yerr=std, marker="o", capsize=3, label=name)
    ax.set_xticks(x, variants)
    ax.set_ylabel("all-steps MSE (loss), held-out runs")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    io.atomic_write_bytes(path, buffer.getvalue())
