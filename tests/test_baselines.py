"""QuickNet and BinaryDenseNet baselines against BinaryFaceNet's Table 2 (112x112 input).

Table 2 (papers/binaryfacenet.md §4.1) measures the backbones without an output head, as it does
for BinaryFaceNet itself (tests/test_models.py): those figures are checked on the backbone (the
network below the head, the same as ``output_head=False``), and the 128-d head on top of it is
checked to cost exactly a ``C x 128`` Dense and a 128-channel BN. Each model is built once (the
build, not the profile, is what takes time).
"""

from functools import cache

import numpy as np
import pytest

from vlrface._keras import tf
from vlrface.models.keras.binarydensenet import build_binarydensenet
from vlrface.models.keras.quicknet import BinomialBlur, build_quicknet

EMBEDDING = 128

# Each model with its 128-d head.
BUILDERS = {
    "quicknet": lambda: build_quicknet("quicknet"),
    "quicknet_small": lambda: build_quicknet("quicknet_small"),
    "quicknet_large": lambda: build_quicknet("quicknet_large"),
    "binary_densenet28": lambda: build_binarydensenet(28),
    "binary_densenet37": lambda: build_binarydensenet(37),
    "binary_densenet45": lambda: build_binarydensenet(45),
}

# Binary MACs, float MACs, params.
TABLE_2 = {
    "quicknet": (431.75e6, 6.85e6, 12.7e6),
    "binary_densenet28": (893.25e6, 49.99e6, 4.55e6),
    "binary_densenet37": (1.12e9, 48.97e6, 8.06e6),
    "binary_densenet45": (1.59e9, 59.71e6, 13.1e6),
}


@cache
def model(name: str) -> tf.keras.Model:
    """The model with its 128-d head."""
    return BUILDERS[name]()


def backbone(m: tf.keras.Model) -> tf.keras.Model:
    """The network below the head (QuickNet's starts with a ReLU, BinaryDenseNet's with a pool)."""
    first = "head_relu" if any(layer.name == "head_relu" for layer in m.layers) else "head_pool"
    return tf.keras.Model(m.input, m.get_layer(first).input)


def larq_profile(m: tf.keras.Model) -> dict:
    """larq's efficiency figures of one model (batch 1)."""
    import larq as lq

    p = lq.models.ModelProfile(m)
    return {
        "binary_macs": p.op_count("mac", 1),
        "float_macs": p.op_count("mac", 32),
        "params": p.weight_count(),
    }


@cache
def profile(name: str, head: bool) -> dict:
    return larq_profile(model(name) if head else backbone(model(name)))


@pytest.mark.parametrize("name", sorted(TABLE_2))
def test_backbone_matches_table_2(name):
    measured = profile(name, head=False)
    for key, target in zip(("binary_macs", "float_macs", "params"), TABLE_2[name], strict=True):
        assert measured[key] == pytest.approx(target, rel=0.01), key


def test_backbone_is_the_model_without_head():
    plain = build_quicknet("quicknet_small", output_head=False)
    assert plain.output_shape == backbone(model("quicknet_small")).output_shape == (None, 3, 3, 512)
    assert larq_profile(plain) == profile("quicknet_small", head=False)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_head_is_one_dense_and_a_bn(name):
    features = backbone(model(name)).output_shape[-1]
    full, body = profile(name, head=True), profile(name, head=False)
    assert full["binary_macs"] == body["binary_macs"]
    assert full["float_macs"] - body["float_macs"] == features * EMBEDDING
    # weight_count counts a BN as its two moving statistics per channel.
    assert full["params"] - body["params"] == features * EMBEDDING + 2 * EMBEDDING


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_outputs_a_128d_embedding(name):
    m = model(name)
    assert m.input_shape == (None, 112, 112, 3)
    assert m.output_shape == (None, EMBEDDING)


# Binary convolutions: one per residual block (QuickNet) or per dense layer (BinaryDenseNet).
BINARY_CONVS = {
    "quicknet": 16,
    "quicknet_small": 16,
    "quicknet_large": 32,
    "binary_densenet28": 23,
    "binary_densenet37": 32,
    "binary_densenet45": 40,
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_binary_where_the_zoo_binarizes(name):
    """Each block's 3x3 conv, and nothing else, has sign-quantized inputs and weights."""
    import larq as lq

    quantized = [
        layer
        for layer in model(name).layers
        if getattr(layer, "input_quantizer", None) or getattr(layer, "kernel_quantizer", None)
    ]
    assert len(quantized) == BINARY_CONVS[name]
    for layer in quantized:
        assert isinstance(layer, lq.layers.QuantConv2D) and layer.kernel_size == (3, 3)
        assert isinstance(layer.input_quantizer, lq.quantizers.SteSign)
        assert isinstance(layer.kernel_quantizer, lq.quantizers.SteSign)


def test_blur_kernel_is_a_normalised_binomial():
    kernel = BinomialBlur()((3, 3, 4, 1)).numpy()
    np.testing.assert_allclose(kernel[:, :, 0, 0], np.outer([1, 2, 1], [1, 2, 1]) / 16)
    np.testing.assert_allclose(kernel.sum(axis=(0, 1)), 1.0)


def test_unknown_variants_are_named():
    with pytest.raises(ValueError, match="quicknet_small"):
        build_quicknet("quicknet_tiny")
    with pytest.raises(ValueError, match="known"):
        build_binarydensenet(30)
