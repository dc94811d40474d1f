"""Export a PyTorch model (``vlrface.models.torch``) to ONNX: export, check, census, parity.

``to_onnx`` runs the TorchScript exporter (``dynamo=False``: the dynamo exporter needs
onnxscript, which cannot be installed beside TF 2.16; docs/mlops.md) at opset 17 with a
dynamic batch axis, and records the model's ``Preprocessing`` in the ``vlrface.preprocessing``
metadata so that ``ONNXEmbedder`` feeds the graph in the right channel order. ``census`` counts
each op type, the initializer elements and the file size; ``parity`` compares ``TorchEmbedder``
with ``ONNXEmbedder`` on the same inputs. ``export`` does all of it and writes the file
atomically only once parity clears the floor; below it, it raises ``OnnxParityError`` and writes
nothing (the style of ``vlrface.export.lce``).
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from vlrface.embedders import ONNXEmbedder, TorchEmbedder
from vlrface.export.parity import ParityError, compare, floor
from vlrface.fileio import write_atomic

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"


class OnnxParityError(ParityError):
    """The ONNX model disagrees with the PyTorch model beyond the configured floor."""


def _hw(input_size) -> tuple[int, int]:
    return (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)


def to_onnx(model, input_size) -> bytes:
    """Serialised ONNX of ``model`` (eval mode) for NCHW ``input_size`` inputs, batch dynamic."""
    import onnx
    import torch

    param = next(model.parameters(), None)
    dummy = torch.zeros(1, 3, *_hw(input_size), device=None if param is None else param.device)
    training = model.training
    model.eval()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # dynamo=False: the legacy exporter on purpose (module docstring); quiet its notice
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (dummy,),
                buf,
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
    finally:
        model.train(training)
    proto = onnx.load_from_string(buf.getvalue())
    meta = {"vlrface.input_layout": "NCHW"}
    if getattr(model, "name", None):
        meta["vlrface.model"] = model.name
    spec = getattr(model, "preprocessing", None)
    if spec is not None:
        meta["vlrface.preprocessing"] = json.dumps(spec.to_dict(), sort_keys=True)
    onnx.helper.set_model_props(proto, meta)
    return proto.SerializeToString()


def check(data: bytes) -> None:
    """``onnx.checker`` with shape inference; raises ``onnx.checker.ValidationError``."""
    import onnx

    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)


def census(data: bytes) -> dict:
    """Count of each op type, parameters, opset and file size of a serialised ONNX.

    ``params`` counts the initializer elements each node takes, once per use: the PyTorch count,
    after the exporter's constant folding (BN folded into the convolution before it).
    ``stored_params`` counts each stored initializer once: the exporter shares identical tensors
    (e.g. the zero biases of a fresh model), so it can be lower.
    """
    import onnx

    proto = onnx.load_from_string(data)
    ops = Counter(node.op_type for node in proto.graph.node)
    sizes = {t.name: int(np.prod(t.dims)) for t in proto.graph.initializer}
    uses = [i for node in proto.graph.node for i in node.input if i in sizes]
    return {
        "ops": dict(sorted(ops.items())),
        "nodes": sum(ops.values()),
        "params": sum(sizes[i] for i in uses),
        "stored_params": sum(sizes.values()),
        "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "size_bytes": len(data),
    }


def parity_inputs(input_size, preprocessing=None, samples: int = 8, seed: int = 0) -> np.ndarray:
    """Real-looking normalised NHWC RGB inputs: synthetic faces of ``samples`` identities
    (``vlrface.data.synthetic``), resized to ``input_size`` and normalised by ``preprocessing``
    (``(x - 127.5) / 128`` without one)."""
    import cv2

    from vlrface.data.synthetic import render_face
    from vlrface.preprocess import normalize

    h, w = _hw(input_size)
    faces = [render_face(seed, i, 0) for i in range(samples)]
    faces = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in faces])
    return preprocessing.normalize(faces) if preprocessing is not None else normalize(faces)


def parity(model, data: bytes, inputs: np.ndarray) -> dict:
    """Cosine (min, mean) and max abs diff of PyTorch vs onnxruntime on ``inputs`` (NHWC)."""
    return compare(TorchEmbedder(model), ONNXEmbedder(data), inputs)


def export(
    model, out: str | Path, input_size, min_cosine: float, inputs: np.ndarray | None = None
) -> dict:
    """Export ``model`` to ``out`` (ONNX, opset 17, dynamic batch) and return the report.

    ``inputs`` (normalised NHWC RGB) default to ``parity_inputs`` in the model's preprocessing;
    with more than one of them the parity check also runs the dynamic batch axis (the graph is
    traced at batch 1). Raises ``OnnxParityError`` below ``min_cosine``, writing nothing.
    """
    data = to_onnx(model, input_size)
    check(data)
    if inputs is None:
        inputs = parity_inputs(input_size, getattr(model, "preprocessing", None))
    par = parity(model, data, inputs)
    report = {
        "format": "onnx",
        "census": census(data),
        "checker": "passed",
        **floor(par, min_cosine, "ONNX", OnnxParityError, f"; {out} not written"),
    }
    report["path"] = str(write_atomic(out, data))
    report["sha256"] = hashlib.sha256(data).hexdigest()
    return report


def export_faces(model, out: str | Path, faces: np.ndarray, min_cosine: float) -> dict:
    """``export`` with parity checked on ``faces`` (uint8 RGB crops) put through the model's own
    preprocessing (its geometry, then its normalisation)."""
    spec = model.preprocessing
    inputs = spec.normalize(spec.geometry(faces))
    return export(model, out, spec.input_size, min_cosine, inputs=inputs)


def export_checkpoint(model: bytes, faces: np.ndarray, min_cosine: float) -> tuple[bytes, dict]:
    """A ``vlrface.training.torch.save_model`` checkpoint as ONNX bytes and the export report
    (``export_faces``); raises ``OnnxParityError`` below ``min_cosine``."""
    import tempfile

    from vlrface.training import torch as tt

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        report = export_faces(tt.load_model(model), out, faces, min_cosine)
        data = out.read_bytes()
    report.pop("path", None)
    return data, report
