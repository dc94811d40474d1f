"""Shared plumbing of the protocol runners (``vlrface.protocols.runners``).

Every runner loads a dataset through its reader, brings each face to ``size x size`` (aligned to
the ArcFace template where the release ships landmarks, else a box or centre crop resized),
degrades it with ``vlrface.degrade.degrade`` (``down`` to ``r x r``, ``up`` back), and embeds it
with any ``Embedder``. Images are processed in chunks: each chunk is decoded and aligned once and
embedded at every resolution, so no dataset-sized pixel array ever exists.

Resolution keys: an int ``r`` (degraded to ``r x r`` and back; ``r >= size`` leaves the face as
it is) or ``None`` for the face as loaded (metric names say ``full``, or the native size).

Metric names are ``eval.<protocol>.<variant>.<res>.<metric>``; rates are written with
``exp_suffix`` (``1e-3``, ``3e-1``) so names hold only ``[A-Za-z0-9_.-]`` (MLflow-safe).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from vlrface.align import align_face, as_points
from vlrface.data.records import DataError
from vlrface.degrade import degrade, resize
from vlrface.preprocess import load_face, normalize
from vlrface.progress import tqdm

SIZE = 112
CHUNK = 512


def exp_suffix(x: float) -> str:
    """``1e-3`` -> ``1e-3``, ``0.3`` -> ``3e-1``, ``1.0`` -> ``1e0`` (no dots in names)."""
    mantissa, e = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(e)}"


def name(protocol: str, variant: str, res, metric: str) -> str:
    return f"eval.{protocol}.{variant}.{'full' if res is None else res}.{metric}"


def check_root(root) -> Path:
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data root does not exist")
    return root


def _valid_points(landmarks) -> np.ndarray | None:
    if landmarks is None or (isinstance(landmarks, float) and np.isnan(landmarks)):
        return None
    points = as_points(landmarks)
    return points if len(points) in (4, 5) and np.isfinite(points).all() else None


def to_size(img: np.ndarray, size: int, up: str) -> np.ndarray:
    """Resize to ``size x size``: inter-area when shrinking, ``up`` when enlarging."""
    if img.shape[:2] == (size, size):
        return img
    return resize(img, size, size, "area" if min(img.shape[:2]) >= size else up)


def prepare(
    img: np.ndarray,
    size: int = SIZE,
    up: str = "area",
    landmarks=None,
    bbox=None,
    center_crop: float | None = None,
) -> np.ndarray:
    """One decoded RGB face as ``size x size`` uint8: aligned with its 5 (or 4) ``landmarks``
    where given, else cropped to ``bbox`` (x, y, w, h) or its central ``center_crop`` share,
    then resized (``to_size``)."""
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    points = _valid_points(landmarks)
    if points is not None:
        return align_face(img, points, size)
    if bbox is not None and not (isinstance(bbox, float) and np.isnan(bbox)):
        x, y, w, h = (int(round(v)) for v in bbox)
        crop = img[max(y, 0) : max(y, 0) + max(h, 1), max(x, 0) : max(x, 0) + max(w, 1)]
        img = crop if crop.size else img
    elif center_crop:
        h, w = img.shape[:2]
        ch, cw = max(1, int(round(h * center_crop))), max(1, int(round(w * center_crop)))
        img = img[(h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 : (w - cw) // 2 + cw]
    return to_size(img, size, up)


ALIGN_MODES = ("auto", "landmarks", "detector", "none")


def face_loader(
    root: Path,
    paths: Sequence[str],
    size: int = SIZE,
    up: str = "area",
    landmarks: Sequence | None = None,
    bboxes: Sequence | None = None,
    center_crop: float | None = None,
    detector=None,
    align: str | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """``load(indices) -> (n, size, size, 3)`` uint8 faces of ``paths`` (relative to ``root``).

    ``align`` (``vlrface.data.alignment``'s modes): ``auto`` aligns with the release's
    ``landmarks`` where a face has them and with the face ``detector`` (``DlibDetector`` unless
    given) otherwise; ``landmarks`` / ``detector`` use only those; ``none`` crops and resizes.
    A face that cannot be aligned as asked (no landmarks, no face found) falls back to the box /
    centre crop, and is counted: ``load.stats`` holds ``{"align", "landmarks", "detector",
    "fallback", "none"}`` (faces loaded so far). ``align=None`` keeps the older call: landmarks
    where given, the ``detector`` only if one is passed."""
    if align is not None and align not in ALIGN_MODES:
        raise ValueError(f"align must be one of {', '.join(ALIGN_MODES)}, got {align!r}")
    mode = align or ("auto" if detector is not None else "landmarks")
    use_marks = mode in ("auto", "landmarks")
    use_detector = mode == "detector" or (
        mode == "auto" and (align is not None or detector is not None)
    )
    stats = {"align": mode, "landmarks": 0, "detector": 0, "fallback": 0, "none": 0}
    state = {"detector": detector}

    def detect(img):
        if state["detector"] is None:
            from vlrface.align import DlibDetector

            state["detector"] = DlibDetector(upsample=1)
        faces = state["detector"].detect(img)
        return faces[0].landmarks if faces else None

    def load(indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), size, size, 3), np.uint8)
        for k, i in enumerate(indices):
            img = load_face(root, paths[i])
            given = None if landmarks is None or not use_marks else landmarks[i]
            marks, how = (given, "landmarks") if _valid_points(given) is not None else (None, "")
            if marks is None and use_detector and img.shape[:2] != (size, size):
                marks = detect(img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2))
                how = "detector" if marks is not None else ""
            elif marks is None and use_detector:
                how = "none"  # an aligned crop already
            stats[how or ("none" if mode == "none" else "fallback")] += 1
            box = None if bboxes is None else bboxes[i]
            out[k] = prepare(img, size, up, marks, box, center_crop)
        return out

    load.stats = stats
    return load


def alignment_line(stats: dict) -> str:
    """How a protocol's faces were aligned (its ``artifacts["alignment"]``), in one line."""
    n = stats["landmarks"] + stats["detector"] + stats["fallback"] + stats["none"]
    return (
        f"{stats['align']} ({n} faces: {stats['landmarks']} by landmarks, {stats['detector']} "
        f"by detector, {stats['fallback']} fell back to a crop, {stats['none']} as they are)"
    )


def degraded(images: np.ndarray, r: int | None, down: str = "area", up: str = "area"):
    """``images`` with every face degraded to ``r x r`` and back (``None``: unchanged)."""
    if r is None or r >= min(images.shape[1:3]):
        return images
    return np.stack([degrade(img, r, down, up) for img in images])


def _raw(embedder, x: np.ndarray, flip: bool, batch_size: int) -> np.ndarray:
    out = []
    for s in range(0, len(x), batch_size):
        b = np.ascontiguousarray(x[s : s + batch_size])
        e = np.asarray(embedder(b), np.float32).reshape(len(b), -1)
        if flip:
            e = e + np.asarray(embedder(np.ascontiguousarray(b[:, :, ::-1])), np.float32).reshape(
                len(b), -1
            )
        out.append(e)
    return np.concatenate(out)


def embed_at(
    embedder,
    load: Callable[[np.ndarray], np.ndarray],
    n: int,
    resolutions: Sequence[int | None],
    *,
    flip: bool = True,
    down: str = "area",
    up: str = "area",
    normalise: bool = True,
    progress: bool = True,
    desc: str = "embed",
    chunk: int = CHUNK,
    batch_size: int = 64,
) -> dict:
    """``{res: (n, D) descriptors}`` of the ``n`` faces at each resolution: ``f(x) + f(flip x)``
    (flip TTA), L2-normalised if ``normalise`` (IJB templates want them raw)."""
    parts: dict = {r: [] for r in resolutions}
    bar = tqdm(total=n * len(resolutions), desc=desc, unit="img", disable=not progress)
    for s in range(0, n, chunk):
        faces = load(np.arange(s, min(s + chunk, n)))
        for r in resolutions:
            x = normalize(degraded(faces, r, down, up))
            parts[r].append(_raw(embedder, x, flip, batch_size))
            bar.update(len(faces))
    bar.close()
    out = {}
    for r, p in parts.items():
        e = np.concatenate(p) if p else np.zeros((0, 0), np.float32)
        if normalise and len(e):
            e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        out[r] = e
    return out


def parse_resolutions(value) -> list[int]:
    """``"7,14,28"`` or an iterable of ints -> a list of ints (>= 1)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = [int(v) for v in items if str(v).strip()]
    if any(r < 1 for r in out):
        raise ValueError(f"resolutions must be >= 1 px, got {out}")
    return out
