"""Export to a Larq Compute Engine flatbuffer: convert, census the ops, check parity.

``convert`` runs LCE's converter on a Keras model. ``census`` reads the flatbuffer back with
TFLite's own schema and counts each op type and the MACs of the ops that carry them: binary MACs
in ``LceBconv2d``, float MACs in ``CONV_2D``, ``DEPTHWISE_CONV_2D`` and ``FULLY_CONNECTED``.
``binary_mac_share`` tells whether LCE really runs a network as binary: the published
BinaryFaceNet's DoReFa convolutions come out as float ``CONV_2D`` (notes/lce_arm.md, Addendum 2).
``parity`` compares the Keras model with LCE's interpreter on the same inputs.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from vlrface.embedders import KerasEmbedder, LCEEmbedder
from vlrface.errors import VlrfaceError
from vlrface.fileio import write_atomic  # noqa: F401  (part of this module's API)

BINARY_OPS = {"LceBconv2d"}


class ParityError(VlrfaceError):
    """The exported model disagrees with the Keras model beyond the configured floor."""


def convert(model) -> bytes:
    """Convert a Keras (larq) model to an LCE flatbuffer."""
    import larq_compute_engine as lce

    return bytes(lce.convert_keras_model(model))


def _op_name(model, op) -> str:
    from tensorflow.lite.python import schema_py_generated as schema

    code = model.operatorCodes[op.opcodeIndex]
    if code.customCode:
        return code.customCode.decode()
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return names.get(builtin, f"BUILTIN_{builtin}")


def _macs(name: str, op, shape) -> tuple[int, int]:
    """``(binary MACs, float MACs)`` of one op (batch 1)."""
    out = shape(op.outputs[0])
    if name == "LceBconv2d":
        from flatbuffers import flexbuffers

        opts = flexbuffers.Loads(bytes(op.customOptions))
        cout, kh, kw = shape(op.inputs[1])[:3]
        cin = int(opts["channels_in"]) // int(opts.get("groups", 1) or 1)
        return int(np.prod(out[1:3])) * cout * kh * kw * cin, 0
    if name == "CONV_2D":
        cout, kh, kw, cin = shape(op.inputs[1])
        return 0, int(np.prod(out[1:3])) * cout * kh * kw * cin
    if name == "DEPTHWISE_CONV_2D":
        _, kh, kw, cout = shape(op.inputs[1])
        return 0, int(np.prod(out[1:3])) * cout * kh * kw
    if name == "FULLY_CONNECTED":
        units, fan_in = shape(op.inputs[1])
        return 0, int(np.prod(out[:-1])) * units * fan_in
    return 0, 0


def op_table(flatbuffer: bytes) -> list[dict]:
    """One row per op of a TFLite/LCE flatbuffer (batch 1): its name, the shapes of its first
    input and output, its kernel shape where it has one, whether its output is bitpacked
    (``INT32``, as LCE writes binary activations), and its binary and float MACs."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    rows = []
    for graph in model.subgraphs:
        shape = lambda i, g=graph: [int(d) for d in g.tensors[i].shape]  # noqa: E731
        for op in graph.operators:
            name = _op_name(model, op)
            inputs = [i for i in op.inputs if i >= 0]
            binary, floating = _macs(name, op, shape)
            rows.append(
                {
                    "op": name,
                    "in": shape(inputs[0]) if inputs else [],
                    "out": shape(op.outputs[0]),
                    "kernel": shape(inputs[1]) if len(inputs) > 1 else [],
                    "bitpacked_out": graph.tensors[op.outputs[0]].type == schema.TensorType.INT32,
                    "int8_out": graph.tensors[op.outputs[0]].type == schema.TensorType.INT8,
                    "binary_macs": binary,
                    "float_macs": floating,
                }
            )
    return rows


def census(flatbuffer: bytes) -> dict:
    """Op counts and MACs of a TFLite/LCE flatbuffer, and the features of the ARM cost model
    (``vlrface.latency.costmodel``) that the latency gate prices."""
    from vlrface.latency.costmodel import features

    rows = op_table(flatbuffer)
    ops = Counter(row["op"] for row in rows)
    binary = sum(row["binary_macs"] for row in rows)
    floating = sum(row["float_macs"] for row in rows)
    total = binary + floating
    return {
        "ops": dict(sorted(ops.items())),
        "binary_macs": binary,
        "float_macs": floating,
        "binary_mac_share": binary / total if total else 0.0,
        "int8_ops": sum(row["int8_out"] for row in rows),
        "size_bytes": len(flatbuffer),
        "cost_features": features(rows),
    }


def parity(model, flatbuffer: bytes, inputs: np.ndarray) -> dict:
    """Cosine (min, mean) and max abs diff of Keras vs the LCE interpreter on ``inputs``."""
    a = KerasEmbedder(model)(inputs).astype(np.float64)
    b = LCEEmbedder(flatbuffer)(inputs).astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "max_abs_diff": float(np.abs(a - b).max()),
        "samples": int(len(inputs)),
    }


def export(
    model, inputs: np.ndarray, min_cosine: float, int8_representative: np.ndarray | None = None
) -> tuple[bytes, dict]:
    """Convert, census and check parity on ``inputs``; raise ``ParityError`` below the floor.

    With ``int8_representative`` the float parts are quantized to int8, their ranges calibrated
    on those images (``export.int8``). Returns ``(flatbuffer, report)``; the report holds the
    census, the parity figures and ``parity_passed``.
    """
    if int8_representative is None:
        flatbuffer = convert(model)
    else:
        from vlrface.export.int8 import convert_int8

        flatbuffer = convert_int8(model, int8_representative)
    par = parity(model, flatbuffer, inputs)
    report = {
        "census": census(flatbuffer),
        "parity": par,
        "parity_min_cosine": min_cosine,
        "parity_passed": par["cosine_min"] >= min_cosine,
        "int8": int8_representative is not None,
    }
    if int8_representative is not None:
        report["int8_calibration_samples"] = int(len(int8_representative))
    if not report["parity_passed"]:
        raise ParityError(
            f"LCE parity cosine {par['cosine_min']:.4f} < floor {min_cosine} "
            f"(max abs diff {par['max_abs_diff']:.4g}, {par['samples']} inputs)"
        )
    return flatbuffer, report
