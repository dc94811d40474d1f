"""Laplacian image quality and the quality-adaptive margin (numpy; no framework).

Lozhkina's "Identity-Preserving Low-Resolution Face Recognition" proposal 2 (slides, EPFL 2023,
"Proposed method 2"; docs/papers.md; anchor code ``arinaLozhkina/LowResolutionFaceRecognition``,
``data/training_dataset.py:get_sharpness`` and ``head/adaptiveface.py``) gives every image its own
ArcFace margin ``m_i = 1 / q_i``, ``q_i`` the mean absolute response of the 3x3 Laplacian
``[[0,1,0],[1,-4,1],[0,1,0]]`` (``cv2.Laplacian`` with ``ksize=1``, border reflect-101) over all
pixels and channels of the 112x112 uint8 face: blurry (LR) faces get large margins. The slides'
"mean(||x||_2^2)" values (15.7 for an HR face, 2.3 for an LR one) are this mean absolute response.
``statistic="var"`` uses the variance of the Laplacian (the classic focus measure) instead.

The report notes the unbounded ``1/q`` gives HR faces too small a margin and suggests bounding
it; ``margin_from_quality`` clips to ``[min_margin, max_margin]`` (the anchor: no bound).
The Keras and PyTorch heads compute the same quantities with tf / torch ops.
"""

from __future__ import annotations

import math

import numpy as np

STATISTICS = ("mean_abs", "var")


def laplacian(img: np.ndarray) -> np.ndarray:
    """The 4-neighbour Laplacian of an ``HxW`` or ``HxWxC`` image (float64, reflect-101 border);
    equal to ``cv2.Laplacian(img, cv2.CV_64F)``."""
    x = np.asarray(img, np.float64)
    pad = [(1, 1), (1, 1)] + [(0, 0)] * (x.ndim - 2)
    p = np.pad(x, pad, mode="reflect")  # numpy "reflect" = OpenCV BORDER_REFLECT_101
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4.0 * p[1:-1, 1:-1]


def check_statistic(statistic: str) -> str:
    """``statistic`` if it is one of ``STATISTICS`` (the configuration, both frameworks' heads
    and quality functions check it here), else ``ValueError`` naming the choices."""
    if statistic not in STATISTICS:
        raise ValueError(f"unknown quality statistic {statistic!r}; choose one of {STATISTICS}")
    return statistic


def laplacian_quality(img: np.ndarray, statistic: str = "mean_abs") -> float:
    """Image quality of one uint8 face: mean |Laplacian| (anchor) or its variance."""
    lap = laplacian(img)
    if check_statistic(statistic) == "mean_abs":
        return float(np.abs(lap).mean())
    return float(lap.var())


def margin_from_quality(
    quality, quality_scale: float = 1.0, min_margin: float = 0.0, max_margin: float = math.pi
):
    """``clip(quality_scale / quality, min_margin, max_margin)`` (quality floored at 1e-6)."""
    q = np.maximum(np.asarray(quality, np.float64), 1e-6)
    return np.clip(quality_scale / q, min_margin, max_margin)
