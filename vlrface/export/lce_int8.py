"""Post-training int8 for the float parts of an LCE model, calibrated on a representative set.

LCE's converter takes no representative dataset: it quantizes a graph to int8 only where the
graph carries fake-quantization ranges (quantization-aware training), or everywhere with one
made-up range (``experimental_default_int8_range``). We calibrate instead: run the
representative images through the Keras model, record each float activation's range, and
insert ``tf.quantization.fake_quant_with_min_max_vars`` with those ranges before converting.
The converter then runs the float ops (stem and embedding convs, depthwise, adds, PReLU) in int8
and LCE's binary convolutions read and write int8 activations. Weights are quantized per
channel by the converter itself.

Ranges go where a tensor leaves a fusable group: after a conv's BatchNorm and activation, not
between a conv and its BatchNorm (which would stop LCE from folding the BN into the binary
conv's output transform). ``clip_percentile`` trims outliers of the recorded ranges.
"""

from __future__ import annotations

import numpy as np

from vlrface._keras import tf
from vlrface.logs import first_call_filtered

layers = tf.keras.layers

#: consumers a conv output must reach unquantized, so the converter can fuse them
_FUSED = (layers.BatchNormalization, layers.ReLU, layers.Activation)


@tf.keras.utils.register_keras_serializable(package="vlrface")
class FakeQuant(layers.Layer):
    """int8 fake quantization of a tensor to a fixed, calibrated range."""

    def __init__(self, low: float, high: float, **kwargs):
        super().__init__(**kwargs)
        # the range must hold 0 so that zero (padding, ReLU) is exact
        self.low, self.high = min(float(low), 0.0), max(float(high), 0.0)
        if self.high - self.low < 1e-6:
            self.high = self.low + 1e-6

    def call(self, x):
        return tf.quantization.fake_quant_with_min_max_vars(
            x, self.low, self.high, num_bits=8, narrow_range=False
        )

    def get_config(self):
        return {**super().get_config(), "low": self.low, "high": self.high}


class QuantizedOutput(layers.Layer):
    """Runs a layer of the original model (its weights shared), then ``FakeQuant``."""

    def __init__(self, inner, low: float, high: float, **kwargs):
        super().__init__(name=f"{inner.name}_q", **kwargs)
        self.inner = inner
        self.fake_quant = FakeQuant(low, high, name=f"{inner.name}_fq")

    def call(self, *args, **kwargs):
        return self.fake_quant(self.inner(*args, **kwargs))


def _inbound(model) -> dict[str, list[str]]:
    """Layer name -> the names of the layers it reads, from the model's own graph (its config:
    the layers' ``_inbound_nodes`` also hold calls from other models that share them)."""
    inbound = {}
    for spec in model.get_config()["layers"]:
        names = []
        for node in spec["inbound_nodes"]:
            names += [entry[0] for entry in node] if isinstance(node, list) else []
        inbound[spec["name"]] = names
    return inbound


def _reads_signs(layer) -> bool:
    """A binary conv reads only the signs of its input: a range in front of it changes nothing
    and would stop LCE from chaining bitpacked activations into it."""
    import larq as lq

    return isinstance(layer, lq.layers.QuantConv2D) and layer.input_quantizer is not None


def _zero_padded_binary(layer) -> bool:
    """A binary conv with 'same' zero padding: LCE runs it with float output only."""
    return _reads_signs(layer) and layer.padding == "same" and float(layer.pad_values) == 0.0


def quantization_points(model) -> list[str]:
    """Names of the layers whose outputs get an int8 range: every layer that produces a tensor
    other layers read, except where all its readers fuse into it, and except the fused output
    of a zero-padded binary conv (LCE's kernel writes those in float only)."""
    inbound = _inbound(model)
    readers = {name: [] for name in inbound}
    for name, sources in inbound.items():
        for source in sources:
            readers[source].append(model.get_layer(name))
    points = []
    for name, reading in readers.items():
        layer = model.get_layer(name)
        if isinstance(layer, layers.InputLayer) or not reading:
            continue
        if all(isinstance(r, _FUSED) or _reads_signs(r) for r in reading):
            continue
        producers = [model.get_layer(n) for n in inbound[name]]
        if _zero_padded_binary(layer) or (
            isinstance(layer, _FUSED) and any(_zero_padded_binary(p) for p in producers)
        ):
            continue
        points.append(name)
    return points


def calibrate(
    model, representative: np.ndarray, clip_percentile: float = 99.99, batch_size: int = 32
) -> dict[str, tuple[float, float]]:
    """``{layer name: (low, high)}`` of the model input and every quantization point."""
    names = quantization_points(model)
    probe = tf.keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    # the process's first model run may XLA-compile: its start-up lines are dropped (vlrface.logs)
    run = first_call_filtered(lambda batch: probe(batch, training=False))
    values: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for s in range(0, len(representative), batch_size):
        outs = run(representative[s : s + batch_size])
        outs = outs if isinstance(outs, list) else [outs]
        for n, o in zip(names, outs, strict=True):
            values[n].append(np.asarray(o).ravel())
    lo_q, hi_q = 100.0 - clip_percentile, clip_percentile
    ranges = {"input": (float(representative.min()), float(representative.max()))}
    for n, chunks in values.items():
        v = np.concatenate(chunks)
        ranges[n] = (float(np.percentile(v, lo_q)), float(np.percentile(v, hi_q)))
    return ranges


def with_fake_quant(model, ranges: dict[str, tuple[float, float]]):
    """A model computing the same function as ``model`` (sharing its weights) with a
    ``FakeQuant`` after the input and after every calibrated layer."""

    def clone(layer):
        return QuantizedOutput(layer, *ranges[layer.name]) if layer.name in ranges else layer

    body = tf.keras.models.clone_model(model, clone_function=clone)
    inp = layers.Input(model.input_shape[1:], name="input_int8")
    x = FakeQuant(*ranges["input"], name="input_fq")(inp)
    return tf.keras.Model(inp, body(x), name=f"{model.name}_int8")


def convert_int8(model, representative: np.ndarray, clip_percentile: float = 99.99) -> bytes:
    """LCE flatbuffer with the float parts in int8 (float input and output)."""
    import larq_compute_engine as lce

    quantized = with_fake_quant(model, calibrate(model, representative, clip_percentile))
    return bytes(lce.convert_keras_model(quantized))
