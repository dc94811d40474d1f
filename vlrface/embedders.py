"""Embedders: one interface over every runtime a face descriptor can come from.

An ``Embedder`` maps a normalised float32 ``(N, H, W, 3)`` batch to ``(N, D)`` descriptors.
``embed_images`` adds the flip test-time augmentation (``f(x) + f(flip(x))``, then L2
normalisation; notes/datasets.md §0.3) and batching, so every protocol treats a Keras model and
its LCE flatbuffer the same way.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Embedder(Protocol):
    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class KerasEmbedder:
    """A Keras model in inference mode."""

    def __init__(self, model):
        from vlrface._keras import tf

        self.model = model
        self._fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(batch)).reshape(len(batch), -1)


class LCEEmbedder:
    """A Larq Compute Engine flatbuffer run by LCE's interpreter (one thread by default)."""

    def __init__(self, flatbuffer: bytes, num_threads: int = 1):
        from larq_compute_engine.tflite.python.interpreter import Interpreter

        self.interpreter = Interpreter(flatbuffer, num_threads=num_threads)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = self.interpreter.predict(np.ascontiguousarray(batch, np.float32))
        out = out[0] if isinstance(out, list) else out
        return np.asarray(out).reshape(len(batch), -1)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embed_images(
    embedder: Embedder, images: np.ndarray, batch_size: int = 64, flip: bool = True
) -> np.ndarray:
    """L2-normalised descriptors of normalised images, flip-summed if ``flip``."""
    out = []
    for s in range(0, len(images), batch_size):
        x = images[s : s + batch_size]
        e = embedder(x)
        if flip:
            e = e + embedder(np.ascontiguousarray(x[:, :, ::-1]))
        out.append(e)
    return l2_normalize(np.concatenate(out).astype(np.float64))
