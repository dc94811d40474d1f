"""Embedders: one interface over every runtime a face descriptor can come from.

An ``Embedder`` maps a normalised float32 ``(N, H, W, 3)`` batch to ``(N, D)`` descriptors.
``embed_images`` adds the flip test-time augmentation (``f(x) + f(flip(x))``, then L2
normalisation; docs/datasets.md) and batching, so every protocol treats a Keras model and
its LCE flatbuffer the same way.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Embedder(Protocol):
    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class KerasEmbedder:
    """A Keras model in inference mode: how vlrface runs a Keras model outside training.

    The first call runs under ``vlrface.logs.first_call_filtered``: Keras XLA-compiles grouped
    convolutions on a CPU (BinaryFaceNet's), and a process's first XLA compile prints XLA's
    absl start-up lines."""

    def __init__(self, model):
        from vlrface._keras import tf
        from vlrface.logs import first_call_filtered

        self.model = model
        self._fn = first_call_filtered(
            tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        )

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


class TorchEmbedder:
    """A PyTorch model (``vlrface.models.torch``) in eval mode under ``no_grad``.

    Takes the normalised NHWC RGB batch, hands the model NCHW in its own channel order
    (``model.preprocessing.channel_order``, or ``channel_order``; RGB if neither says) on the
    device of its parameters, and puts the model back in training mode if it found it there.
    """

    def __init__(self, model, channel_order: str | None = None):
        spec = getattr(model, "preprocessing", None)
        self.model = model
        self.preprocessing = spec  # the model's own Preprocessing (None: the Larq convention)
        self.bgr = (channel_order or getattr(spec, "channel_order", "RGB")).upper() == "BGR"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = np.asarray(batch, np.float32)
        x = x[..., ::-1] if self.bgr else x
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        param = next(self.model.parameters(), None)
        x = x.to(param.device) if param is not None else x
        training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model(x)
        finally:
            self.model.train(training)
        return out.float().cpu().numpy().reshape(len(batch), -1)


class ONNXEmbedder:
    """An ONNX model run by onnxruntime on the CPU, one intra- and one inter-op thread.

    The graph takes NCHW in the model's channel order (``vlrface.export.onnx`` writes it, and
    the preprocessing, into the ``vlrface.preprocessing`` metadata); ``channel_order`` overrides.
    """

    def __init__(self, path_or_bytes, num_threads: int = 1, channel_order: str | None = None):
        import json

        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        model = path_or_bytes
        model = bytes(model) if isinstance(model, bytes | bytearray) else str(model)
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        spec = json.loads(meta.get("vlrface.preprocessing", "{}"))
        self.bgr = (channel_order or spec.get("channel_order", "RGB")).upper() == "BGR"
        self.preprocessing = None  # the exported model's own Preprocessing, when it has one
        if spec:
            from vlrface.models.torch import Preprocessing

            self.preprocessing = Preprocessing.from_dict(spec)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, np.float32)
        x = x[..., ::-1] if self.bgr else x
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        out = self.session.run(None, {self.input_name: x})[0]
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
