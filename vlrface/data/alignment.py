"""The alignment stage: a raw release's faces, aligned to the ArcFace 112x112 template.

Training and evaluation read aligned faces only. A release is *raw* when its photos are not
already ``image_size`` squares (raw CASIA-WebFace 250x250, CelebA's loose ~200 px crops, raw LFW
250x250, VGGFace2 loose crops, SCface); insightface packs (``ms1m_retinaface``,
``casia_webface_pack``) and trees of ``image_size`` squares (the synthetic demo set, an already
aligned export) are aligned already. ``data.align`` says how a raw release is aligned:

* ``auto`` (default): with the release's own landmarks where it has them (VGGFace2's 5 loose
  landmarks, the ``landmarks`` column; SCface's 4 annotated points, ``landmarks4``), with the face
  detector (``vlrface.align.DlibDetector``: 5 points from iBUG-68) otherwise; an aligned release
  is read as it is.
* ``landmarks``: the release's landmarks only; an image without them is an error naming it.
* ``detector``: the detector for every image, landmarks or not.
* ``none``: no alignment; refused for a raw release (``DataError`` naming the layout and a file):
  resizing whole photos to 112x112 is not what any model here was trained or measured on.

Native low-resolution releases (TinyFace, SurvFace: 20 px faces, no landmarks, too small for any
detector) are read as they are under ``auto``.

``align_manifest`` writes every face, warped by the 5 (or 4) point similarity of
``vlrface.align``, as a JPEG (quality 95, like the insightface packs) under ``out`` at the same
relative path, so the aligned tree has the release's layout and its reader and GX suite still
apply. A photo in which the detector finds no face is **left out and listed** (``no_face.txt``,
the report's ``no_face``), never resized whole. Landmarks that do not fit their image (outside
it, or all at one point: a landmark file that does not match the images) raise ``DataError``
naming the image. The work is spread over a process pool (``workers``, default every core);
each worker builds its own detector.

The output folder is complete or absent: faces are written into a temporary sibling that is
renamed into place with ``alignment.json`` (the report) and ``manifest.parquet`` (the aligned
manifest: rows of the faces written, their new size and sha256, the provenance with an
``alignment`` entry). ``align_manifest`` on an existing complete ``out`` reads it back instead
of aligning again, so a folder named after the data version (``cache_dir``) is a cache.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from vlrface.progress import tqdm

from vlrface.errors import DataError

MODES = ("auto", "landmarks", "detector", "none")
PACKS = ("ms1m_retinaface", "casia_webface_pack")
NATIVE_LR = ("tinyface", "survface")
LANDMARK_COLUMNS = ("landmarks", "landmarks4")  # 5 points (VGGFace2, IJB), 4 points (SCface)
REPORT = "alignment.json"
MANIFEST = "manifest.parquet"
NO_FACE = "no_face.txt"
JPEG_QUALITY = 95


def code_version() -> str:
    """sha256 (12 hex) of this stage's code and the geometry it uses: part of the cache key."""
    h = hashlib.sha256()
    for module in (__file__, Path(__file__).parents[1] / "align.py"):
        h.update(Path(module).read_bytes())
    return h.hexdigest()[:12]


def cache_dir(base: str | Path, name: str, data_md5: str, mode: str, image_size: int) -> Path:
    """Where the aligned copy of data version ``data_md5`` lives under ``base``."""
    return Path(base) / f"{name}-{data_md5[:12]}-{mode}-{image_size}px-{code_version()}"


def _points(value) -> np.ndarray | None:
    """A manifest landmark cell as ``(n, 2)``, or None where the row has none."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    points = np.asarray(value, dtype=np.float64).reshape(-1, 2)
    return points if len(points) in (4, 5) else None


def row_landmarks(manifest: pd.DataFrame) -> list[np.ndarray | None]:
    """Each row's release landmarks (5 points, else SCface's 4), or None."""
    cols = [c for c in LANDMARK_COLUMNS if c in manifest]
    out = []
    for i in range(len(manifest)):
        found = None
        for c in cols:
            found = _points(manifest[c].iloc[i])
            if found is not None:
                break
        out.append(found)
    return out


def _is_pack(manifest: pd.DataFrame) -> bool:
    return bool(manifest["path"].str.contains(r"\.rec#\d+$", regex=True).all())


def template_size(image_size: int) -> int:
    """The size faces are aligned at for a model input of ``image_size``: itself where the
    ArcFace template scales to it (multiples of 112 or 128), else 112 (the model's loader
    resizes from there, as it does for the insightface packs)."""
    return image_size if image_size % 112 == 0 or image_size % 128 == 0 else 112


def _unaligned(manifest: pd.DataFrame, image_size: int) -> pd.DataFrame:
    """Rows whose image is not a square of the aligned size (112, or ``image_size``); an image
    that does not decode is left to the GX suite, which names it."""
    if "width" not in manifest or "height" not in manifest:
        return manifest
    sides = {112, image_size, template_size(image_size)}
    off = (manifest["width"] != manifest["height"]) | ~manifest["width"].isin(sides)
    if "decodable" in manifest:
        off &= manifest["decodable"].astype(bool)
    return manifest[off]


def plan(
    manifest: pd.DataFrame, layout: str, mode: str, image_size: int = 112, root: str | Path = ""
) -> str:
    """What ``mode`` means for this release: ``"align"`` or ``"none"`` (read as it is).

    ``DataError`` for a raw release with ``mode == "none"`` (naming the layout and a file), for
    ``landmarks``/``detector`` on a pack, and for an unknown mode."""
    if mode not in MODES:
        raise DataError(f"data.align: {mode!r} is not one of {', '.join(MODES)}")
    if layout in PACKS or _is_pack(manifest):
        if mode in ("landmarks", "detector"):
            raise DataError(
                f"{root}: the {layout} pack is aligned already (insightface 112x112); "
                f"data.align must be auto or none, not {mode}"
            )
        return "none"
    if layout in NATIVE_LR and mode in ("auto", "none"):
        return "none"
    raw = _unaligned(manifest, image_size)
    if mode == "none":
        if len(raw):
            first = raw.iloc[0]
            size = f"{first.get('width', '?')}x{first.get('height', '?')}"
            raise DataError(
                f"{Path(root) / first['path']}: the {layout} layout at {root} holds unaligned "
                f"photos ({size}, not {image_size}x{image_size}; {len(raw)} of {len(manifest)}) "
                "and data.align is none: training and evaluation read aligned faces only; set "
                "data.align: auto (or landmarks / detector)"
            )
        return "none"
    if mode == "auto" and not len(raw):
        return "none"  # an aligned tree already (the synthetic demo set, an aligned export)
    return "align"


def _check_landmarks(points: np.ndarray, shape: tuple, where: str) -> None:
    h, w = shape[:2]
    margin = 0.25
    inside = (
        (points[:, 0] >= -margin * w)
        & (points[:, 0] <= (1 + margin) * w)
        & (points[:, 1] >= -margin * h)
        & (points[:, 1] <= (1 + margin) * h)
    )
    spread = np.ptp(points, axis=0).max() if np.isfinite(points).all() else 0.0
    if not np.isfinite(points).all() or not inside.all() or spread < 2.0:
        raise DataError(
            f"{where}: its landmarks {np.round(points, 1).ravel().tolist()} do not fit its "
            f"{w}x{h} image (the landmark file does not match the images)"
        )


_DETECTOR = None


def _detector(upsample: int):
    global _DETECTOR
    if _DETECTOR is None:
        from vlrface.align import DlibDetector

        _DETECTOR = DlibDetector(upsample=upsample)
    return _DETECTOR


def align_image(image: np.ndarray, landmarks, method: str, image_size: int, upsample: int = 1):
    """``(face, method used, 2x3 matrix)`` of one RGB image: ``method`` ``landmarks`` warps with
    the given points, ``detector`` with the best detection's; ``(None, "no_face", None)`` when
    the detector finds no face."""
    from vlrface.align import align_face, detect_and_align, estimate_norm

    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if method == "landmarks":
        return (
            align_face(image, landmarks, image_size),
            "landmarks",
            estimate_norm(landmarks, image_size),
        )
    found = detect_and_align(image, _detector(upsample), image_size)
    if found is None:
        return None, "no_face", None
    return found[0], "detector", estimate_norm(found[1].landmarks, image_size)


def _work(task: tuple) -> tuple:
    """One image (runs in a pool worker): read, align, write. ``(index, status, info)`` with
    status ``landmarks``/``detector`` (written), ``no_face`` or ``error`` (info: the message)."""
    from vlrface.data.records import describe_bytes, read_bytes
    from vlrface.preprocess import decode_rgb

    index, root, path, out, landmarks, method, image_size, upsample = task
    where = f"{Path(root) / path}"
    try:
        image = decode_rgb(read_bytes(root, path), None, where)
        if landmarks is not None:
            _check_landmarks(np.asarray(landmarks, float).reshape(-1, 2), image.shape, where)
        face, status, matrix = align_image(image, landmarks, method, image_size, upsample)
    except DataError as exc:
        return index, "error", str(exc)
    if face is None:
        return index, status, None
    ok, jpeg = cv2.imencode(
        ".jpg", cv2.cvtColor(face, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    target = Path(out) / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(jpeg.tobytes())
    return index, status, {**describe_bytes(jpeg.tobytes()), "matrix": matrix.tolist()}


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _run(tasks: list[tuple], workers: int, progress: bool, desc: str):
    bar = tqdm(total=len(tasks), desc=desc, unit="img", disable=not progress)
    if workers <= 1:
        _init_worker()
        for task in tasks:
            yield _work(task)
            bar.update()
    else:
        context = multiprocessing.get_context("spawn")  # no fork of a process running TF
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
            chunk = max(1, min(32, len(tasks) // (workers * 8) or 1))
            for result in pool.map(_work, tasks, chunksize=chunk):
                yield result
                bar.update()
    bar.close()


def align_manifest(
    manifest: pd.DataFrame,
    root: str | Path,
    out: str | Path,
    *,
    mode: str = "auto",
    layout: str | None = None,
    image_size: int = 112,
    workers: int | None = None,
    upsample: int = 1,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """Align ``manifest``'s faces (paths under ``root``) into ``out``; ``(aligned manifest,
    report)``. See the module docstring; ``layout`` defaults to each row's ``source``.

    The report: ``mode``, ``image_size``, ``workers``, ``seconds``, ``images``, ``written``,
    ``per_source`` (``{source: {images, landmarks, detector, no_face}}``) and ``no_face`` (the
    paths of the photos without a face)."""
    import time

    out = Path(out)
    if (out / REPORT).is_file() and (out / MANIFEST).is_file():
        from vlrface.data.manifest import load_manifest

        return load_manifest(out / MANIFEST), json.loads((out / REPORT).read_text())
    if mode not in MODES or mode == "none":
        raise DataError(f"align_manifest: mode must be auto, landmarks or detector, not {mode!r}")
    workers = max(1, workers or os.cpu_count() or 1)
    marks = row_landmarks(manifest)
    sources = manifest["source"].astype(str).tolist() if "source" in manifest else None
    methods = []
    for i, points in enumerate(marks):
        if mode == "landmarks" and points is None:
            raise DataError(
                f"{Path(root) / manifest['path'].iloc[i]}: no landmarks in the release for this "
                "image, and data.align is landmarks (use auto to detect the face instead)"
            )
        methods.append("landmarks" if points is not None and mode != "detector" else "detector")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tasks = [
        (
            i,
            str(root),
            manifest["path"].iloc[i],
            str(tmp),
            None if methods[i] == "detector" else marks[i].ravel().tolist(),
            methods[i],
            image_size,
            upsample,
        )
        for i in range(len(manifest))
    ]
    start = time.perf_counter()
    status, infos = [None] * len(tasks), [None] * len(tasks)
    try:
        for index, state, info in _run(tasks, workers, progress, f"align {Path(root).name}"):
            if state == "error":
                raise DataError(info)
            status[index], infos[index] = state, info
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    per_source: dict[str, Counter] = {}
    for i, state in enumerate(status):
        src = sources[i] if sources else (layout or "images")
        counts = per_source.setdefault(src, Counter(images=0, landmarks=0, detector=0, no_face=0))
        counts["images"] += 1
        counts[state] += 1
    kept = [i for i, s in enumerate(status) if s != "no_face"]
    no_face = [str(manifest["path"].iloc[i]) for i, s in enumerate(status) if s == "no_face"]
    if not kept:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{root}: no face found in any of its {len(manifest)} images")
    aligned = manifest.iloc[kept].reset_index(drop=True)
    for col in ("width", "height", "channels", "decodable", "size_bytes", "sha256"):
        if col in aligned:
            aligned[col] = [infos[i][col] for i in kept]
    for col in LANDMARK_COLUMNS:  # the release's points, carried into the aligned faces
        if col in aligned:
            aligned[col] = [_moved(manifest[col].iloc[i], infos[i]["matrix"]) for i in kept]
    report = {
        "mode": mode,
        "image_size": image_size,
        "root": str(root),
        "workers": workers,
        "seconds": round(seconds, 3),
        "images_per_second": round(len(tasks) / max(seconds, 1e-9), 2),
        "images": len(tasks),
        "written": len(kept),
        "per_source": {k: dict(v) for k, v in sorted(per_source.items())},
        "no_face": no_face,
        "code_version": code_version(),
    }
    aligned.attrs = {
        **manifest.attrs,
        "provenance": {
            **manifest.attrs.get("provenance", {}),
            "alignment": {k: v for k, v in report.items() if k != "no_face"},
        },
    }
    from vlrface.data.manifest import write_manifest

    (tmp / NO_FACE).write_text("".join(f"{p}\n" for p in no_face))
    write_manifest(aligned, tmp / MANIFEST)
    (tmp / REPORT).write_text(json.dumps(report, indent=2))
    if out.exists():  # an incomplete earlier attempt
        shutil.rmtree(out)
    tmp.rename(out)
    return aligned, report


def _moved(value, matrix):
    from vlrface.align import transform_points

    points = _points(value)
    if points is None:
        return value
    return tuple(round(float(v), 2) for v in transform_points(points, np.asarray(matrix)).ravel())


def summary(report: dict) -> str:
    """One line: how many faces each source gave, and how."""
    parts = []
    for source, c in report.get("per_source", {}).items():
        parts.append(
            f"{source}: {c['images'] - c['no_face']}/{c['images']} faces "
            f"({c['landmarks']} by landmarks, {c['detector']} by detector, "
            f"{c['no_face']} without a face)"
        )
    return "; ".join(parts)
