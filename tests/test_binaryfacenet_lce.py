"""BinaryFaceNet-LCE: shapes, LCE runs it as binary (census, no grouped bconv), Keras-LCE parity."""

import numpy as np
import pytest

from vlrface._keras import tf
from vlrface.export import lce
from vlrface.models.keras.binaryfacenet_lce import build_binaryfacenet_lce


def set_non_trivial_statistics(model, calibration: np.ndarray, seed: int) -> None:
    """Random BN gammas (a fifth negative) and betas, random PReLU slopes, and BN moving
    statistics equal to the batch statistics of ``calibration`` (one training-mode call with
    momentum 0), so that LCE has real BN folding, thresholds and ReLU clamps to get right."""
    rng = np.random.default_rng(seed)
    bns = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.BatchNormalization)]
    for bn in bns:
        gamma, beta, mean, var = bn.get_weights()
        sign = rng.choice([-1.0, 1.0], gamma.shape, p=[0.2, 0.8])
        gamma = sign * rng.uniform(0.5, 1.5, gamma.shape)
        bn.set_weights([gamma, rng.normal(0, 0.3, beta.shape), mean, var])
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.PReLU):
            layer.set_weights([rng.uniform(0, 0.5, w.shape) for w in layer.get_weights()])
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    model(calibration, training=True)
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum


@pytest.fixture(scope="module")
def converted():
    tf.keras.utils.set_random_seed(1)
    model = build_binaryfacenet_lce()
    calibration = np.random.default_rng(11).normal(size=(8, 112, 112, 3)).astype(np.float32)
    set_non_trivial_statistics(model, calibration, seed=1)
    return model, lce.convert(model)


def test_builds_with_a_128d_descriptor():
    assert build_binaryfacenet_lce().output_shape == (None, 128)
    assert build_binaryfacenet_lce(output_head=False).output_shape == (None, 128)
    small = build_binaryfacenet_lce(channels=32, embedding=64, input_size=48)
    assert small.output_shape == (None, 64)
    with pytest.raises(ValueError, match="channels"):
        build_binaryfacenet_lce(channels=(32, 64))
    with pytest.raises(ValueError, match="input_size"):
        build_binaryfacenet_lce(input_size=40)


def _ops(flatbuffer: bytes) -> list[dict]:
    """Every op: its name and output shape, and for ``LceBconv2d`` its channels in and the
    depth (in 32-bit words) of its bitpacked filter."""
    from flatbuffers import flexbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    fb = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    found = []
    for graph in fb.subgraphs:
        for op in graph.operators:
            name = lce._op_name(fb, op)
            row = {"op": name, "out": [int(d) for d in graph.tensors[op.outputs[0]].shape]}
            if name == "LceBconv2d":
                opts = flexbuffers.Loads(bytes(op.customOptions))
                row["channels_in"] = int(opts["channels_in"])
                row["filter_words"] = int(graph.tensors[op.inputs[1]].shape[3])
                out_type = graph.tensors[op.outputs[0]].type
                row["bitpacked_out"] = out_type == schema.TensorType.INT32
            found.append(row)
    return found


def test_lce_runs_it_as_binary(converted):
    import larq as lq

    model, flatbuffer = converted
    census = lce.census(flatbuffer)
    assert census["binary_mac_share"] >= 0.95, census
    # every binary Keras conv became an LceBconv2d; nothing binary fell back to float math
    binary_layers = [layer for layer in model.layers if isinstance(layer, lq.layers.QuantConv2D)]
    assert census["ops"]["LceBconv2d"] == len(binary_layers) == 20
    assert not {"LceDequantize", "DEPTHWISE_CONV_2D", "TANH", "ROUND"} & set(census["ops"])

    ops = _ops(flatbuffer)
    # no grouped binary conv (LCE's optimized ARM kernel refuses them): the bitpacked filter
    # depth covers all input channels, and there are at least 32 of them
    bconvs = [row for row in ops if row["op"] == "LceBconv2d"]
    for bconv in bconvs:
        assert bconv["filter_words"] * 32 >= bconv["channels_in"] >= 32, bconv
    # float work at 56x56 and 28x28: the stem conv, the SE multiply, residual adds; no PReLU,
    # no depthwise, no other float conv (and nothing at all at 112x112)
    allowed = {"LceBconv2d", "LceQuantize", "ADD"}
    stem_and_se = {"CONV_2D", "MUL"}
    high_res = [row for row in ops if len(row["out"]) == 4 and row["out"][1] >= 28]
    assert {row["op"] for row in high_res} - allowed == stem_and_se
    assert sum(row["op"] in stem_and_se for row in high_res) == 2
    # bitpacked activations where a binary conv only feeds another: the SE reduction, LFE conv2
    assert sum(row["bitpacked_out"] for row in bconvs) == 5


def test_predicted_arm_cost_is_at_most_half_of_quicknet(converted):
    from vlrface.latency.costmodel import predict_instructions
    from vlrface.models.keras import build_named

    _, flatbuffer = converted
    ours = predict_instructions(lce.census(flatbuffer)["cost_features"])
    quicknet = predict_instructions(
        lce.census(lce.convert(build_named("quicknet")))["cost_features"]
    )
    assert ours <= 0.5 * quicknet, (ours, quicknet)


def test_parity_keras_vs_lce_interpreter(converted):
    model, flatbuffer = converted
    x = np.random.default_rng(12).normal(size=(3, 112, 112, 3)).astype(np.float32)
    parity = lce.parity(model, flatbuffer, x)
    assert parity["cosine_min"] >= 0.99, parity


def test_parity_check_sees_the_bn_statistics(converted):
    """Negative control: the flatbuffer against the same weights with default BN statistics."""
    model, flatbuffer = converted
    other = build_binaryfacenet_lce()
    other.set_weights(model.get_weights())
    for layer in other.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma, beta, np.zeros_like(mean), np.ones_like(var)])
    x = np.random.default_rng(12).normal(size=(3, 112, 112, 3)).astype(np.float32)
    assert lce.parity(other, flatbuffer, x)["cosine_min"] < 0.9


def test_selectable_and_configurable_from_the_pipeline_config():
    from vlrface.config.keras import ModelConfig
    from vlrface.models.keras import ZOO, build_model

    assert "binaryfacenet_lce" in ZOO
    model = build_model(ModelConfig(name="binaryfacenet_lce", channels=[32, 64, 96], embedding=64))
    assert model.output_shape == (None, 64)
    assert model.get_layer("lfe2_sep2_bconv").filters == 96
    with pytest.raises(ValueError, match="has its paper's widths"):
        ModelConfig(name="quicknet", channels=64)
    with pytest.raises(ValueError, match="one channel width"):
        ModelConfig(name="binaryfacenet", channels=[32, 32, 32])


def test_float_shortcuts_cross_the_lfe_downsamplings_and_stay_binary_on_lce(converted):
    """``shortcuts=True``: each LFE block's strided binary conv gains a float 2x2 average pool
    -> 1x1 conv -> BN path; LCE still runs every binary conv as one LceBconv2d, the float work
    added is two pools and two 1x1 convs (at 14x14 and 7x7) and parity holds. (Its aarch64
    count against QuickNet-112's: tests/test_latency_lce.py.)"""
    from vlrface.config.keras import ModelConfig
    from vlrface.models.keras import build_model

    tf.keras.utils.set_random_seed(2)
    model = build_model(ModelConfig(name="binaryfacenet_lce", shortcuts=True))
    plain, plain_flatbuffer = converted
    calibration = np.random.default_rng(13).normal(size=(8, 112, 112, 3)).astype(np.float32)
    set_non_trivial_statistics(model, calibration, seed=2)
    flatbuffer = lce.convert(model)

    census = lce.census(flatbuffer)
    plain_census = lce.census(plain_flatbuffer)
    assert census["ops"]["LceBconv2d"] == plain_census["ops"]["LceBconv2d"] == 20
    assert census["ops"]["AVERAGE_POOL_2D"] == 2
    assert census["ops"]["CONV_2D"] == plain_census["ops"]["CONV_2D"] + 2
    assert census["ops"]["ADD"] == plain_census["ops"]["ADD"] + 2
    pooled = [row for row in _ops(flatbuffer) if row["op"] == "AVERAGE_POOL_2D"]
    assert [row["out"][1:] for row in pooled] == [[14, 14, 64], [7, 7, 96]]

    x = np.random.default_rng(14).normal(size=(3, 112, 112, 3)).astype(np.float32)
    assert lce.parity(model, flatbuffer, x)["cosine_min"] >= 0.99

    assert build_model(ModelConfig(name="binaryfacenet_lce")).count_params() == plain.count_params()
    with pytest.raises(ValueError, match="no 'shortcuts' option"):
        ModelConfig(name="quicknet", shortcuts=True)
