"""LCE export: op census, MACs and cost features of real conversions, parity, int8, atomic
writes; the ARM cost model and the latency gate."""

import numpy as np
import pytest

from vlrface._keras import tf
from vlrface.export import lce
from vlrface.latency import anchors, costmodel
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


def test_cost_features_of_a_real_conversion(tiny_bnn):
    f = lce.census(lce.convert(tiny_bnn))["cost_features"]
    assert f["LceBconv2d.macs"] == 16 * 16 * 64 * 9 * 64
    assert f["LceBconv2d.out"] == 16 * 16 * 64
    assert f["LceBconv2d.patch"] == 16 * 16 * 9 * 2  # 64 input channels = two 32-bit words
    assert f["LceQuantize.in"] == 16 * 16 * 64  # the float BN output bitpacked for the bconv
    assert f["CONV_2D.macs"] == 16 * 16 * 64 * 27
    assert f["CONV_2D.im2col"] == 16 * 16 * 27 and f["CONV_2D.im2col_rows"] == 16 * 16 * 9
    assert f["FULLY_CONNECTED.macs"] == 64 * 8
    assert not any(k.endswith("_int8") and v for k, v in f.items())  # a float graph
    assert "unknown" not in f


def test_stored_calibration_is_consistent():
    """Every graph of the stored fit is within +-10 % of its real count, and so is every
    graph held out of the fit (counted under the LCE aarch64 bundle)."""
    cal = costmodel.calibration()
    for name, g in cal["graphs"].items():
        assert abs(g["predicted_instructions"] / g["real_instructions"] - 1) <= 0.10, name
    assert cal["max_abs_error"] <= 0.10
    assert set(cal["held_out"]) == set(anchors.HELD_OUT)
    for name, h in cal["held_out"].items():
        assert h["error"] == pytest.approx(
            h["predicted_instructions"] / h["emulated_instructions"] - 1, abs=1e-4
        ), name


def test_held_out_graph_features_price_as_stored():
    """Today's conversion of a held-out graph is priced as the stored calibration says."""
    stored = costmodel.calibration()["held_out"]["block_14x14x256"]
    feats = anchors.features("block_14x14x256")
    assert costmodel.predict_instructions(feats) == pytest.approx(
        stored["predicted_instructions"], rel=1e-6
    )


def test_gate_and_devices(tiny_bnn):
    census = lce.census(lce.convert(tiny_bnn))
    insns = costmodel.predict_instructions(census["cost_features"])
    assert estimate_ms(census["cost_features"], "raspberry-pi-4") == pytest.approx(
        insns / 1e6 * 0.544
    )
    with pytest.raises(ValueError, match="unknown device"):
        estimate_ms(census["cost_features"], "toaster")
    rpi4 = insns / 1e6 * 0.544
    assert gate(census, {"raspberry-pi-4": rpi4 * 1.01})["passed"]
    failed = gate(census, {"pixel-1": 1e3, "raspberry-pi-4": rpi4 * 0.99})
    assert not failed["passed"] and failed["source"] == "estimated"
    assert failed["devices"]["pixel-1"]["passed"]
    assert not failed["devices"]["raspberry-pi-4"]["passed"]


def test_unknown_ops_are_refused_not_priced():
    feats = costmodel.features([{"op": "MyCustomOp", "in": [1, 4], "out": [1, 4]}])
    assert feats["unknown"] == ["MyCustomOp"]
    with pytest.raises(costmodel.UnknownOpError, match="MyCustomOp"):
        costmodel.predict_instructions(feats)


def test_int8_export_quantizes_the_float_parts(tiny_bnn):
    rng = np.random.default_rng(0)
    representative = rng.uniform(-1, 1, (32, 16, 16, 3)).astype(np.float32)
    x = rng.uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
    flatbuffer, report = lce.export(tiny_bnn, x, 0.9, int8_representative=representative)
    float_ops = lce.census(lce.convert(tiny_bnn))
    census = report["census"]
    assert report["int8"] and census["int8_ops"] > 0 and float_ops["int8_ops"] == 0
    assert census["ops"]["LceBconv2d"] == 1  # the binary conv stays binary
    # ranges go only where LCE can use them: not in front of the binary conv (it reads signs),
    # not after its zero-padded output (LCE writes that in float only)
    from vlrface.export.lce_int8 import quantization_points

    points = [type(tiny_bnn.get_layer(n)).__name__ for n in quantization_points(tiny_bnn)]
    assert points == ["GlobalAveragePooling2D"]
    assert report["parity"]["cosine_min"] >= 0.9
    # a calibration range that clips everything is caught by the parity floor
    with pytest.raises(lce.ParityError):
        lce.export(tiny_bnn, x * 50, 0.999, int8_representative=representative * 1e-3)


# lce_benchmark_model's output (TFLite's benchmark tool), as it prints it; timings in us
BENCHMARK_OUTPUT = "\n".join(
    [
        "STARTING!",
        "Num threads: [1]",
        "Graph: [quicknet.tflite]",
        "The input model file size (MB): 4.3723",
        "Initialized session in 3.12ms.",
        "Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate "
        "if exceeding 150 seconds.",
        "count=12 first=46211 curr=44913 min=44871 max=46211 avg=45101.4 std=380",
        "",
        "Running benchmark for at least 50 iterations and at least 1 seconds but terminate "
        "if exceeding 150 seconds.",
        "count=50 first=44950 curr=44980 min=44861 max=45320 avg=44987.2 std=92",
        "",
        "Inference timings in us: Init: 3120, First inference: 46211, "
        "Warmup (avg): 45101.4, Inference (avg): 44987.2",
    ]
)


def test_parse_lce_benchmark_output():
    from vlrface.errors import VlrfaceError
    from vlrface.latency.measure import parse_benchmark_output

    assert parse_benchmark_output(BENCHMARK_OUTPUT) == pytest.approx(44.9872)
    without_summary = BENCHMARK_OUTPUT.rsplit("Inference timings", 1)[0]
    assert parse_benchmark_output(without_summary) == pytest.approx(44.9872)
    with pytest.raises(VlrfaceError, match="no 'Inference"):
        parse_benchmark_output("ERROR: Failed to load model")


def test_gate_takes_a_measured_device_as_measured(tiny_bnn):
    census = lce.census(lce.convert(tiny_bnn))
    measured = {"raspberry-pi-4": {"ms": 99.0, "runs": 50, "tool": "lce_benchmark_model"}}
    report = gate(census, {"raspberry-pi-4": 100.0, "pixel-1": 100.0}, measured)
    assert report["source"] == "measured" and report["passed"]
    assert report["devices"]["raspberry-pi-4"]["source"] == "measured"
    assert report["devices"]["raspberry-pi-4"]["ms"] == 99.0
    assert report["devices"]["pixel-1"]["source"] == "estimated"
    assert not gate(census, {"raspberry-pi-4": 98.0}, measured)["passed"]


def test_measuring_off_arm_is_refused():
    from vlrface.latency import measure

    if measure.on_arm():
        pytest.skip("this host is arm64")
    with pytest.raises(measure.NotOnArmError, match="needs an arm64 host"):
        measure.measure_lce("m.tflite", "lce_benchmark_model")


def test_latency_cli(tiny_bnn, tmp_path):
    import json

    from click.testing import CliRunner

    from vlrface.cli import main

    path = tmp_path / "m.tflite"
    path.write_bytes(lce.convert(tiny_bnn))
    run = lambda *a: CliRunner().invoke(main, ["latency", "--model", *a])  # noqa: E731
    result = run(str(path), "--device", "raspberry-pi-4", "--device", "pixel-1", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["latency.source"] == "estimated"
    feats = lce.census(path.read_bytes())["cost_features"]
    assert out["latency.raspberry-pi-4.ms"] == pytest.approx(estimate_ms(feats, "raspberry-pi-4"))
    assert out["latency.pixel-1.ms"] < out["latency.raspberry-pi-4.ms"]
    insns = costmodel.predict_instructions(feats)  # --json: instructions as well as ms
    assert out["latency.raspberry-pi-4.instructions"] == pytest.approx(insns)
    assert out["latency.pixel-1.instructions"] == out["instructions"] == pytest.approx(insns)

    assert "unknown device" in run(str(path), "--device", "toaster").output
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"not a model")
    assert "not a TFLite flatbuffer" in run(str(bogus), "--device", "pixel-1").output
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\x08\x07")
    assert "measure ONNX models" in run(str(onnx), "--device", "pixel-1").output
    if not measure_on_arm():
        refused = run(
            str(path),
            "--device",
            "pixel-1",
            "--backend",
            "measured",
            "--benchmark-binary",
            str(path),
        )
        assert refused.exit_code == 1 and "needs an arm64 host" in refused.output


def measure_on_arm() -> bool:
    from vlrface.latency.measure import on_arm

    return on_arm()
