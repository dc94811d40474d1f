"""Figures logged with runs (matplotlib, headless)."""

from __future__ import annotations

import textwrap

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


def _title(ax, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)


def cmc_figure(curves: dict[str, np.ndarray], title: str):
    """CMC curves: ``curves[name][k - 1]`` is the identification rate at rank ``k``."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, rates in curves.items():
        rates = np.asarray(rates, float)
        ax.plot(
            np.arange(1, len(rates) + 1), rates, marker="." if len(rates) < 30 else None, label=name
        )
    ax.set_xscale("log")
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate")
    ax.set_ylim(0, 1.02)
    _title(ax, title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def det_figure(scores: dict[str, np.ndarray], same, title: str):
    """DET curves (FRR vs FAR on normal-deviate axes) of similarity ``scores``; ``same`` is one
    label array for all score sets or a dict with one per set."""
    from scipy.stats import norm

    from vlrface.protocols.metrics import roc_curve

    ticks = np.array([1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5, 0.8])
    clip = (1e-5, 1 - 1e-5)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, s in scores.items():
        labels = same[name] if isinstance(same, dict) else same
        roc = roc_curve(s, labels, drop_intermediate=False)
        far, frr = np.clip(roc.fpr, *clip), np.clip(1 - roc.tpr, *clip)
        ax.plot(norm.ppf(far), norm.ppf(frr), label=name)
    ax.set_xticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
    ax.set_yticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
    ax.set_xlim(norm.ppf(clip[0]), norm.ppf(0.9))
    ax.set_ylim(norm.ppf(clip[0]), norm.ppf(0.9))
    ax.set_xlabel("FAR")
    ax.set_ylabel("FRR")
    _title(ax, title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def heatmap_figure(matrix, rows, columns, title: str, metric: str = "", fmt: str = "{:.2f}"):
    """A cross-resolution matrix: ``matrix[i, j]`` at row ``rows[i]`` (probe resolution) and
    column ``columns[j]`` (gallery resolution), each cell annotated; NaN cells left blank."""
    m = np.asarray(matrix, float)
    size = (max(5.0, 1.8 + 0.7 * len(columns)), max(3.8, 1.2 + 0.6 * len(rows)))
    fig, ax = plt.subplots(figsize=size)
    im = ax.imshow(np.ma.masked_invalid(m), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if np.isfinite(m[i, j]):
                ax.text(
                    j,
                    i,
                    fmt.format(m[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if m[i, j] < 0.6 else "black",
                )
    ax.set_xticks(range(len(columns)), [str(c) for c in columns])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel("gallery resolution (px)")
    ax.set_ylabel("probe resolution (px)")
    ax.set_title("\n".join(textwrap.wrap(title, 48)), fontsize=9)
    fig.colorbar(im, ax=ax, label=metric)
    fig.tight_layout()
    return fig


def protocol_figures(protocol: str, artifacts: dict, model: str) -> dict:
    """``{artifact file name: figure}`` for a runner's artifacts: ROC and DET of its score sets,
    CMC of its CMC curves, a heatmap per cross-resolution matrix; titled protocol and model."""
    figs = {}
    scores, same = artifacts.get("scores"), artifacts.get("same", artifacts.get("labels"))
    if scores and same is not None:
        if isinstance(same, dict):  # per-set labels: DET handles them, ROC needs one set
            figs[f"evaluation/det_{protocol}.png"] = det_figure(
                scores, same, f"{protocol}: {model}"
            )
        else:
            figs[f"evaluation/roc_{protocol}.png"] = roc_figure(
                scores, same, f"{protocol}: {model}"
            )
            figs[f"evaluation/det_{protocol}.png"] = det_figure(
                scores, same, f"{protocol}: {model}"
            )
    if artifacts.get("cmc_curves"):
        figs[f"evaluation/cmc_{protocol}.png"] = cmc_figure(
            artifacts["cmc_curves"], f"{protocol}: {model}"
        )
    cross = artifacts.get("cross_resolution")
    if cross:
        res = cross["resolutions"]
        for metric, m in cross.items():
            if metric != "resolutions":
                figs[f"evaluation/cross_resolution_{protocol}_{metric}.png"] = heatmap_figure(
                    m, res, res, f"{protocol} cross-resolution {metric}: {model}", metric
                )
    return figs
