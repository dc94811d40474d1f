"""LCE export: op census and MACs of a real conversion, parity, atomic writes; latency estimate."""

import numpy as np
import pytest

from vlrface._keras import tf
from vlrface.export import lce
from vlrface.latency.estimate import estimate_ms, gate


@pytest.fixture(scope="module")
def tiny_bnn():
    import larq as lq

    x = tf.keras.Input((16, 16, 3))
    y = tf.keras.layers.Conv2D(64, 3, padding="same", use_bias=False)(x)  # float: 16*16*64*27
    y = tf.keras.layers.BatchNormalization()(y)
    y = lq.layers.QuantConv2D(
        64,
        3,
        padding="same",
        use_bias=False,
        input_quantizer="ste_sign",
        kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip",
    )(y)
    y = tf.keras.layers.BatchNormalization()(y)
    y = tf.keras.layers.GlobalAveragePooling2D()(y)
    y = tf.keras.layers.Dense(8, use_bias=False)(y)  # float: 64*8
    model = tf.keras.Model(x, y)
    model(np.zeros((1, 16, 16, 3), np.float32))
    return model


def test_census_counts_binary_and_float_macs(tiny_bnn):
    census = lce.census(lce.convert(tiny_bnn))
    assert census["ops"]["LceBconv2d"] == 1 and census["ops"]["CONV_2D"] == 1
    assert census["binary_macs"] == 16 * 16 * 64 * 9 * 64
    assert census["float_macs"] == 16 * 16 * 64 * 27 + 64 * 8
    assert census["binary_mac_share"] == pytest.approx(
        census["binary_macs"] / (census["binary_macs"] + census["float_macs"])
    )


def test_parity_of_keras_and_lce(tiny_bnn):
    x = np.random.default_rng(0).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    p = lce.parity(tiny_bnn, lce.convert(tiny_bnn), x)
    assert p["cosine_min"] > 0.99 and p["samples"] == 3


def test_write_atomic_leaves_no_partial_file(tmp_path):
    target = tmp_path / "m.tflite"
    lce.write_atomic(target, b"abc")
    assert target.read_bytes() == b"abc"

    with pytest.raises(TypeError):
        lce.write_atomic(target, object())  # not bytes: nothing replaces the old file
    assert target.read_bytes() == b"abc" and [p.name for p in tmp_path.iterdir()] == ["m.tflite"]


def test_mac_formula_and_devices():
    # 1 G binary MACs and 10 M float MACs on a Pixel 1: 10.8 + 2.39 ms
    assert estimate_ms(10**9, 10**7, "pixel-1") == pytest.approx(13.19)
    assert estimate_ms(10**9, 0, "raspberry-pi-4") == pytest.approx(10.8 * 1.75)
    with pytest.raises(ValueError, match="unknown device"):
        estimate_ms(1, 1, "toaster")
    census = {"binary_macs": 10**9, "float_macs": 0}
    assert gate(census, {"pixel-1": 11.0})["passed"]
    failed = gate(census, {"pixel-1": 11.0, "raspberry-pi-4": 10.0})
    assert not failed["passed"] and failed["source"] == "estimated"
    assert not failed["devices"]["raspberry-pi-4"]["passed"]
