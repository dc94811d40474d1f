"""Image decoding and the network's input normalisation, in one place.

BinaryFaceNet (and the insightface Keras models) take RGB ``(x - 127.5) / 128`` (notes/datasets.md
§0.2); every embedder, trainer and exporter in vlrface goes through ``normalize``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vlrface.data.records import DataError


def load_rgb(path: str | Path, size: int | None = None) -> np.ndarray:
    """Decode an image file to ``HxWx3`` uint8 RGB, resized to ``size x size`` if given."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{path}: cannot decode image (missing, truncated or not an image)")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if size is not None and img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def normalize(batch: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(..., 3)`` -> float32 ``(x - 127.5) / 128``."""
    return (batch.astype(np.float32) - 127.5) / 128.0
