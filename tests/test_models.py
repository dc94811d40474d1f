"""BinaryFaceNet: the paper's Table 2 exactly, the authors' weights, grouped-conv equivalence."""

import numpy as np
import pytest

from vlrface._keras import tf
from vlrface.models.keras.binaryfacenet import (
    BinaryFaceNetConfig,
    GroupedQuantConv2D,
    build_binaryfacenet,
)


def larq_totals(model):
    import larq as lq

    summary = lq.models.ModelProfile(model)
    return {
        "binary_macs": summary.op_count("mac", 1),
        "float_macs": summary.op_count("mac", 32),
        "params": summary.weight_count(),
        "memory_mib": summary.memory / 8 / 1024**2,
    }


def test_backbone_matches_table_2():
    totals = larq_totals(build_binaryfacenet(output_head=False))
    assert totals["binary_macs"] == 184_992_256
    assert totals["float_macs"] == 3_850_752
    assert round(totals["params"] / 1000) == 506
    assert round(totals["memory_mib"], 2) == 1.32


def test_grouped_conv_equals_native_grouped_conv():
    x = tf.random.stateless_uniform((2, 20, 20, 16), seed=(1, 2), minval=-1, maxval=1)
    ours = GroupedQuantConv2D(8, 3, strides=2, padding="same", groups=4)
    native = tf.keras.layers.Conv2D(8, 3, strides=2, padding="same", groups=4, use_bias=True)
    ours.build(x.shape), native.build(x.shape)
    native.set_weights(ours.get_weights())
    np.testing.assert_allclose(ours(x).numpy(), native(x).numpy(), atol=1e-5)


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="head_groups"):
        build_binaryfacenet(BinaryFaceNetConfig(channels=30))
    with pytest.raises(ValueError, match="k_bits is missing"):
        build_binaryfacenet(BinaryFaceNetConfig(k_bits={"head": 1}))


def test_takes_the_authors_checkpoint(shared_dir):
    import larq  # noqa: F401

    ref = tf.keras.models.load_model(
        shared_dir / "reference" / "binaryfacenet_ms1m_retina_epoch19.h5", compile=False
    )
    ours = build_binaryfacenet()
    src = [layer for layer in ref.layers if layer.weights]
    dst = [layer for layer in ours.layers if layer.weights]
    assert len(src) == len(dst)
    for a, b in zip(src, dst, strict=True):
        b.set_weights(a.get_weights())
    x = np.random.default_rng(0).uniform(-1, 1, (2, 112, 112, 3)).astype(np.float32)
    assert np.abs(ref(x, training=False).numpy() - ours(x, training=False).numpy()).max() < 1e-4


def test_every_zoo_model_is_selectable_in_the_config():
    import typing

    from vlrface.config.keras import ModelConfig
    from vlrface.models.keras import ZOO, build_model

    assert set(typing.get_args(ModelConfig.model_fields["name"].annotation)) == set(ZOO)
    model = build_model(ModelConfig(name="quicknet_small", embedding=16))
    assert model.output_shape == (None, 16)
