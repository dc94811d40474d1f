"""Resolution degradation: one implementation, used for training augmentation and evaluation.

``degrade(img, r)`` down-samples an ``HxWxC`` uint8 image to ``r x r`` and (by default) back to
its original size, with OpenCV interpolation chosen by name. BinaryFaceNet simulates VLR faces
with inter-area down-sampling to 7/14/28/56 px and inter-area up-sampling back to 112x112
(papers/binaryfacenet.md §3.2.1). Results differ across cv2/PIL/TF resamplers, so the library is
fixed (OpenCV) and the policy is logged with every run (``policy_dict``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "bicubic": cv2.INTER_CUBIC,
    "bilinear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST,
}


def _interp(name: str) -> int:
    try:
        return INTERPOLATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown interpolation {name!r}; choose one of {sorted(INTERPOLATIONS)}"
        ) from None


def degrade(img: np.ndarray, r: int, down: str = "area", up: str | None = "area") -> np.ndarray:
    """Down-sample ``img`` to ``r x r`` with ``down``; up-sample back to its size with ``up``.

    ``up=None`` returns the ``r x r`` image. ``r`` at or above the image size returns a copy.
    """
    if img.ndim not in (2, 3):
        raise ValueError(f"degrade expects an HxW or HxWxC image, got shape {img.shape}")
    h, w = img.shape[:2]
    if r < 1:
        raise ValueError(f"resolution must be >= 1 px, got {r}")
    if r >= min(h, w):
        return img.copy()
    small = cv2.resize(img, (r, r), interpolation=_interp(down))
    if up is None:
        return small
    return cv2.resize(small, (w, h), interpolation=_interp(up))


@dataclass(frozen=True)
class VLRPolicy:
    """Random VLR augmentation: with ``probability``, degrade to a size drawn from ``sizes``."""

    probability: float = 0.5
    sizes: tuple[int, ...] = (7, 14, 28, 56)
    down: str = "area"
    up: str = "area"

    def __post_init__(self):
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"VLR probability must be in [0, 1], got {self.probability}")
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"VLR sizes must be positive pixel sizes, got {self.sizes}")
        _interp(self.down), _interp(self.up)

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Return ``(image, r)``; ``r`` is 0 where the image was left at full resolution."""
        if self.probability > 0 and rng.uniform() < self.probability:
            r = int(self.sizes[rng.integers(len(self.sizes))])
            return degrade(img, r, self.down, self.up), r
        return img, 0

    def policy_dict(self) -> dict:
        """The policy as logged with a run (library included)."""
        return {**asdict(self), "sizes": list(self.sizes), "library": f"opencv-{cv2.__version__}"}
