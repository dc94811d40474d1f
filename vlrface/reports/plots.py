"""Figures logged with runs (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def roc_figure(scores: dict[str, np.ndarray], same: np.ndarray, title: str):
    """ROC curves (TAR vs FAR, log FAR axis) of several score sets over the same pairs."""
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, s in scores.items():
        far, tar, _ = roc_curve(same, s)
        ax.plot(np.maximum(far, 1e-4), tar, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("FAR")
    ax.set_ylabel("TAR")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
