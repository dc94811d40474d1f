"""Export to a Larq Compute Engine flatbuffer: convert, census the ops, check parity.

``convert`` runs LCE's converter on a Keras model. ``census`` reads the flatbuffer back with
TFLite's own schema and counts each op type and the MACs of the ops that carry them: binary MACs
in ``LceBconv2d``, float MACs in ``CONV_2D``, ``DEPTHWISE_CONV_2D`` and ``FULLY_CONNECTED``.
``binary_mac_share`` tells whether LCE really runs a network as binary: the published
BinaryFaceNet's DoReFa convolutions come out as float ``CONV_2D`` (docs/arm-latency.md).
``parity`` compares the Keras model with LCE's interpreter on the same inputs.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from vlrface.embedders import KerasEmbedder, LCEEmbedder
from vlrface.export.parity import ParityError, compare, floor  # noqa: F401  (ParityError: API)
from vlrface.fileio import write_atomic  # noqa: F401  (part of this module's API)

BINARY_OPS = {"LceBconv2d"}


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


def _window(name: str, op) -> int:
    """The pooling window (filter height x width) of a pooling op, else 0."""
    if name in ("MAX_POOL_2D", "AVERAGE_POOL_2D", "L2_POOL_2D"):
        opts = op.builtinOptions
        return int(opts.filterHeight) * int(opts.filterWidth)
    if name == "LceBMaxPool2d":
        from flatbuffers import flexbuffers

        opts = flexbuffers.Loads(bytes(op.customOptions))
        return int(opts["filter_height"]) * int(opts["filter_width"])
    return 0


def op_table(flatbuffer: bytes) -> list[dict]:
    """One row per op of a TFLite/LCE flatbuffer (batch 1), as the cost model reads it
    (``vlrface.latency.opdata.row_from_tensors``): its name, the shapes and dtypes of its main
    (largest non-constant) input and its output, its kernel shape where it has one, all output
    elements, the pooling window, the input zero point, and its binary and float MACs."""
    from tensorflow.lite.python import schema_py_generated as schema

    from vlrface.latency.opdata import row_from_tensors

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    dtypes = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    rows = []
    for graph in model.subgraphs:
        shape = lambda i, g=graph: [int(d) for d in g.tensors[i].shape]  # noqa: E731

        def tensor(i, g=graph):
            t = g.tensors[i]
            data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
            return {
                "const": data is not None and len(data) > 0,
                "dtype": dtypes.get(t.type, str(t.type)),
                "shape": [int(d) for d in t.shape],
            }

        for op in graph.operators:
            name = _op_name(model, op)
            inputs = [tensor(i) if i >= 0 else None for i in op.inputs]
            main = [i for i in op.inputs if i >= 0 and not tensor(i)["const"]]
            q = graph.tensors[main[0]].quantization if main else None
            zero_point = (
                int(q.zeroPoint[0])
                if q is not None and q.zeroPoint is not None and len(q.zeroPoint)
                else None
            )
            binary, floating = _macs(name, op, shape)
            rows.append(
                row_from_tensors(
                    name,
                    inputs,
                    [tensor(i) for i in op.outputs],
                    binary_macs=binary,
                    float_macs=floating,
                    window=_window(name, op),
                    in_zero_point=zero_point,
                )
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
    return compare(KerasEmbedder(model), LCEEmbedder(flatbuffer), inputs)


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
        from vlrface.export.lce_int8 import convert_int8

        flatbuffer = convert_int8(model, int8_representative)
    report = {
        "census": census(flatbuffer),
        **floor(parity(model, flatbuffer, inputs), min_cosine, "LCE"),
        "int8": int8_representative is not None,
    }
    if int8_representative is not None:
        report["int8_calibration_samples"] = int(len(int8_representative))
    return flatbuffer, report
