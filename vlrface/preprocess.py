"""Image decoding and the network's input normalisation, in one place.

BinaryFaceNet (and the insightface Keras models) take RGB ``(x - 127.5) / 128`` (docs/datasets.md);
every embedder, trainer and exporter in vlrface goes through ``normalize``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vlrface.data.records import DataError, read_bytes
from vlrface.fileio import check_image


def decode_rgb(raw: bytes, size: int | None, where: str | Path) -> np.ndarray:
    """Encoded image bytes -> ``HxWx3`` uint8 RGB, resized (inter-area) to ``size x size`` if
    given; ``DataError`` naming ``where`` if they do not decode, are truncated (no end
    marker), name another format, or are too large (``fileio.check_image``, before decoding)."""
    check_image(raw, where)
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR) if raw else None
    if img is None:
        raise DataError(f"{where}: cannot decode image (truncated or not an image)")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if size is not None and img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def load_rgb(path: str | Path, size: int | None = None) -> np.ndarray:
    """Decode an image file to ``HxWx3`` uint8 RGB, resized to ``size x size`` if given."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: cannot decode image (missing, truncated or not an image)")
    return decode_rgb(path.read_bytes(), size, path)


def load_face(root: str | Path, path: str, size: int | None = None) -> np.ndarray:
    """A manifest row's face (a file under ``root``, or a record of a RecordIO pack), RGB."""
    return decode_rgb(read_bytes(root, path), size, f"{root}/{path}")


def normalize(batch: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB ``(..., 3)`` -> float32 ``(x - 127.5) / 128``. With ``out`` (float32, the
    batch's shape) the result is written there, with no temporaries; the values are the same bit
    for bit (both steps are exact in float32)."""
    if out is None:
        return (batch.astype(np.float32) - 127.5) / 128.0
    np.subtract(batch, np.float32(127.5), out=out, dtype=np.float32)
    return np.divide(out, np.float32(128.0), out=out)


def split_faces(manifest, root: str | Path, size: int, split: str, n: int) -> np.ndarray:
    """The first ``n`` faces of a manifest's ``split`` (uint8 RGB, ``size`` px): the held-out
    faces an export's parity is checked on, the training faces int8 ranges come from."""
    rows = manifest[manifest.split == split].head(n)
    return np.stack([load_face(root, p, size) for p in rows.path])
