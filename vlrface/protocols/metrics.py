"""1:1 verification metrics: ROC, AUC, EER, TAR@FAR under named rules, FRR@FAR, SurvFace 1:1.

Scores are similarities (higher = more alike; a pair is accepted when ``score >= threshold``),
``same`` marks genuine pairs. Every function is pure: numpy in, floats or arrays out.

ROC (``roc_curve``): one point per distinct score, from each class's sorted scores (impostors
sorted in two threads) and counts at each distinct value; no argsort of all pairs, no
scikit-learn. With ``drop_intermediate`` it keeps exactly the points ``sklearn.metrics.roc_curve``
keeps (a point is dropped where neither count changes its step), so the IJB rule below
reproduces insightface's numbers point for point.

TAR@FAR, three rules that differ by at most one ROC step; name the rule with the figure:

* **nearest** (IJB, docs/datasets.md; ``eval_ijbc.py``/``ijb_evals.py``): on the
  sklearn ROC, the TPR of the point whose FPR is nearest the target; on a tie the larger TPR.
* **interpolated** (SurvFace 1:1): FAR/TAR on a fixed grid of L2-distance thresholds,
  linear interpolation of TAR at the target FAR.
* **floor** (LFW-style; ``verification.tar_at_far``): the largest TAR whose FAR <= target.
  ``frr_at_far`` (VGGFace2 cross-pose, SqueezeFacePoseNet: EER and FRR@FAR 1 % / 0.1 %) is
  ``1 - floor`` TAR.

EER: FAR = FRR, linearly interpolated between the two ROC points that bracket the crossing.

SurvFace 1:1: L2 distance of L2-normalised features (``d = sqrt(2 - 2 cos)``); thresholds
``0.2:0.001:2.0``, ``FAR(t) = mean(neg < t)``, ``TAR(t) = mean(pos < t)``; TAR@FAR 30/10/1/0.1 %
interpolated, ``AUC = trapz(TAR, FAR)``; mean accuracy over 10 folds, each made of 532
consecutive genuine and 532 consecutive impostor pairs (``class_block_folds``), the threshold
chosen on the other 9 folds by the exact optimum of the insightface routine
(``verification.best_threshold``) rather than on the 0.001 grid of the MATLAB script.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from vlrface.protocols.verification import heldout_accuracies, tar_at_far

SURVFACE_FARS = (0.3, 0.1, 0.01, 0.001)
SURVFACE_THRESHOLDS = np.arange(0.2, 2.0 + 0.001, 0.001)  # L2 distance, accept if d < t


@dataclass(frozen=True)
class Roc:
    """ROC points, thresholds descending (first ``inf``): accept a pair if score >= threshold."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def _check_pairs(scores, same) -> tuple[np.ndarray, np.ndarray]:
    scores, same = np.asarray(scores), np.asarray(same, bool)
    if scores.ndim != 1 or scores.shape != same.shape:
        raise ValueError(f"scores {scores.shape} and labels {same.shape} must be equal 1-d")
    if same.all() or not same.any():
        raise ValueError("need genuine and impostor pairs")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    return scores, same


def _sort(x: np.ndarray) -> np.ndarray:
    """``np.sort``; a long array is split at a sampled median and its halves sorted in two
    threads (numpy sorts without the GIL)."""
    if len(x) < 1 << 18:
        return np.sort(x)
    below = x < np.median(x[:: len(x) // 4096])
    with ThreadPoolExecutor(2) as pool:
        return np.concatenate(list(pool.map(np.sort, (x[below], x[~below]))))


def roc_curve(scores, same, drop_intermediate: bool = True) -> Roc:
    """ROC of similarity ``scores``; identical to ``sklearn.metrics.roc_curve`` (see module)."""
    scores, same = _check_pairs(scores, same)
    neg, pos = _sort(scores[~same]), np.sort(scores[same])
    # ascending distinct values; at value v: fps = #impostors >= v, tps = #genuine >= v
    first = np.flatnonzero(np.r_[True, neg[1:] != neg[:-1]])
    values, fps = neg[first], len(neg) - first
    del first
    pos_v = pos[np.r_[True, pos[1:] != pos[:-1]]]
    at = np.searchsorted(values, pos_v)  # merge the genuine values in: O(n) inserts, no re-sort
    new = (at == len(values)) | (values[np.minimum(at, len(values) - 1)] != pos_v)
    values = np.insert(values, at[new], pos_v[new])
    fps = np.insert(fps, at[new], len(neg) - np.searchsorted(neg, pos_v[new]))
    del neg
    tps = np.zeros(len(values), fps.dtype)
    tps[np.searchsorted(values, pos_v)] = len(pos) - np.searchsorted(pos, pos_v)
    np.maximum.accumulate(tps[::-1], out=tps[::-1])  # genuine counts hold between their values
    thresholds, fps, tps = values[::-1], fps[::-1], tps[::-1]  # descending thresholds
    if drop_intermediate and len(fps) > 2:
        keep = np.ones(len(fps), bool)
        keep[1:-1] = (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0)
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    return Roc(
        fpr=np.r_[0.0, fps / fps[-1]],
        tpr=np.r_[0.0, tps / tps[-1]],
        thresholds=np.r_[np.inf, thresholds],
    )


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid area under ``y(x)`` for ``x`` sorted either way (``sklearn.metrics.auc``)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return abs(float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2)))


def tar_at_far_nearest(roc: Roc, far: float) -> float:
    """IJB rule: TPR of the ROC point with the FPR nearest ``far``, the larger TPR on a tie."""
    fpr, tpr = roc.fpr[::-1], roc.tpr[::-1]
    return float(tpr[np.argmin(np.abs(fpr - far))])


def eer(roc: Roc) -> float:
    """Equal error rate: where FAR = FRR on the ROC, interpolated between bracketing points."""
    gap = (1 - roc.tpr) - roc.fpr  # FRR - FAR: 1 at the first point, -1 at the last
    i = int(np.argmax(gap <= 0))
    a = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(roc.fpr[i - 1] + a * (roc.fpr[i] - roc.fpr[i - 1]))


def frr_at_far(scores, same, far: float) -> float:
    """False-reject rate at the threshold with FAR <= ``far`` (the floor rule's 1 - TAR)."""
    return 1.0 - tar_at_far(scores, same, far)


def verification_1to1(scores, same, fars=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)) -> dict:
    """IJB 1:1 report: ``{"auc", "eer", "tar@far=<f>"}``, TAR by the nearest rule."""
    roc = roc_curve(scores, same)
    out = {"auc": auc(roc.fpr, roc.tpr), "eer": eer(roc)}
    out.update({f"tar@far={f:g}": tar_at_far_nearest(roc, f) for f in fars})
    return out


def threshold_sweep(distances, same, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """``(FAR, TAR)`` at each distance threshold (accept if ``d < t``), sorted by FAR."""
    distances, same = _check_pairs(distances, same)
    thresholds = np.asarray(thresholds)
    neg, pos = np.sort(distances[~same]), np.sort(distances[same])
    far = np.searchsorted(neg, thresholds, side="left") / len(neg)
    tar = np.searchsorted(pos, thresholds, side="left") / len(pos)
    order = np.argsort(far, kind="stable")
    return far[order], tar[order]


def tar_at_far_interpolated(far_curve, tar_curve, far: float) -> float:
    """SurvFace rule: TAR linearly interpolated at ``far`` on a FAR-sorted threshold sweep."""
    return float(np.interp(far, far_curve, tar_curve))


def class_block_folds(same, fold_size: int) -> np.ndarray:
    """Fold of each pair: the k-th genuine (impostor) pair goes to fold ``k // fold_size``.

    SurvFace: 5,320 + 5,320 pairs and ``fold_size=532`` give 10 folds of 532 + 532 pairs.
    """
    same = np.asarray(same, bool)
    rank_in_class = np.where(same, np.cumsum(same), np.cumsum(~same)) - 1
    return rank_in_class // fold_size


def survface_verification(scores, same, fold_size: int = 532, fars=SURVFACE_FARS) -> dict:
    """SurvFace 1:1 report from cosine ``scores`` of L2-normalised features.

    ``{"tar@far=<f>", "auc", "mean_acc"}``: TAR by the interpolated rule on the L2-distance grid.
    """
    scores, same = _check_pairs(np.asarray(scores, np.float64), same)
    dist = np.sqrt(np.maximum(2.0 - 2.0 * scores, 0.0))
    far_c, tar_c = threshold_sweep(dist, same, SURVFACE_THRESHOLDS)
    out = {f"tar@far={f:g}": tar_at_far_interpolated(far_c, tar_c, f) for f in fars}
    out["auc"] = auc(far_c, tar_c)
    folds = class_block_folds(same, fold_size)
    out["mean_acc"] = float(heldout_accuracies(scores, same, folds).mean())
    return out
