"""ONNX export of the torch track: round trip, census, parity floor, and the two embedders."""

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

from vlrface.embedders import ONNXEmbedder, TorchEmbedder, embed_images
from vlrface.errors import VlrfaceError
from vlrface.export.lce import ParityError
from vlrface.export.onnx import OPSET, OnnxParityError, export, parity_inputs
from vlrface.models.torch import build_torch, count_params


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_torch("squeezefaceposenet", num_classes=10)  # the head is not exported
    out = tmp_path_factory.mktemp("onnx") / "sfpn.onnx"
    model.train()
    report = export(model, out, 113, min_cosine=0.9999)
    assert model.training  # export and parity give the model back in the mode they found
    return model, out, report


def test_round_trip_report(exported):
    model, out, report = exported
    assert report["path"] == str(out) and out.is_file()
    assert report["checker"] == "passed" and report["parity_passed"]
    par = report["parity"]
    assert par["cosine_min"] >= 0.9999 and par["samples"] == 8
    assert par["max_abs_diff"] < 1e-3  # descriptors are O(10) at this init
    census = report["census"]
    assert census["opset"] == OPSET
    assert census["params"] == count_params(model) == 1_235_496
    assert census["stored_params"] <= census["params"]  # identical zero biases are shared
    assert census["size_bytes"] == out.stat().st_size
    # conv1 + 8 fires x 3 + conv10; one concat per fire; 3 max-pools; GAP
    assert census["ops"]["Conv"] == 26 and census["ops"]["Concat"] == 8
    assert census["ops"]["MaxPool"] == 3 and census["ops"]["GlobalAveragePool"] == 1
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["vlrface.preprocessing"])["input_size"] == 113
    assert meta["vlrface.model"] == "squeezefaceposenet"


def test_dynamic_batch_and_bytes_or_path(exported):
    model, out, _ = exported
    x = parity_inputs(113, model.preprocessing, samples=3, seed=1)
    by_path = ONNXEmbedder(out)(x)
    by_bytes = ONNXEmbedder(out.read_bytes())(x)
    assert by_path.shape == (3, 1000)
    np.testing.assert_array_equal(by_path, by_bytes)
    np.testing.assert_allclose(by_path, TorchEmbedder(model)(x), rtol=1e-4, atol=1e-5)


def test_embed_images_same_with_torch_and_onnx(exported):
    model, out, _ = exported
    x = parity_inputs(113, model.preprocessing, samples=5, seed=2)
    a = embed_images(TorchEmbedder(model), x, batch_size=2)  # flip TTA + L2, two batches
    b = embed_images(ONNXEmbedder(out), x, batch_size=2)
    assert a.shape == b.shape == (5, 1000)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_below_floor_raises_and_writes_nothing(tmp_path):
    torch.manual_seed(0)
    model = build_torch("squeezefaceposenet_dwc")
    out = tmp_path / "sub" / "never.onnx"
    with pytest.raises(OnnxParityError, match="not written") as err:
        export(model, out, 113, min_cosine=1.5)  # a cosine can never reach it
    assert isinstance(err.value, ParityError) and isinstance(err.value, VlrfaceError)
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_bgr_model_round_trip(tmp_path):
    """A BGR model's ONNX takes BGR: the metadata tells ``ONNXEmbedder`` to swap channels."""
    torch.manual_seed(0)
    model = build_torch("squeezefaceposenet_gdc")
    model.preprocessing = dataclasses.replace(model.preprocessing, channel_order="BGR")
    report = export(model, tmp_path / "bgr.onnx", 113, min_cosine=0.9999)
    assert report["parity"]["cosine_min"] >= 0.9999
    x = parity_inputs(113, model.preprocessing, samples=2)
    swapped = ONNXEmbedder(tmp_path / "bgr.onnx", channel_order="RGB")(x)
    assert not np.allclose(swapped, TorchEmbedder(model)(x), atol=1e-3)


def test_onnx_gate_takes_its_source_from_the_one_chooser(exported, monkeypatch):
    """``sources.pick`` decides the ONNX gate's source as it does the LCE gate's: unavailable
    (no cost model for ONNX) off arm64 unless emulation is asked for; measured on an arm64 host
    for the device it names, ahead of emulation."""
    from vlrface.config.torch import OnnxLatencyConfig
    from vlrface.latency import measure
    from vlrface.latency.onnx import onnx_gate
    from vlrface.latency.sources import pick

    onnx = exported[1].read_bytes()
    budget = {"raspberry-pi-4": 150.0, "pixel-1": 1e-6}
    lines = []
    monkeypatch.setattr(measure, "on_arm", lambda: False)
    assert pick("auto", "onnx")[0] == "unavailable"
    assert pick("auto", "onnx", emulate=True)[0] == "emulated"
    assert pick("auto", "onnx", benchmark_binary="lce_benchmark_model")[0] == "unavailable"
    for when, passed in (("fail", False), ("defer", True)):
        cfg = OnnxLatencyConfig(budget_ms=budget, when_unavailable=when, runs=2)
        report = onnx_gate(onnx, cfg, lines.append)
        assert report["source"] == "unavailable" and report["passed"] is passed
        assert {r["source"] for r in report["devices"].values()} == {"unavailable"}
        assert report["host"]["ms"] > 0 and report["emulation"] is None
    assert "latency.emulate is off" in lines[-1]
    monkeypatch.setattr(measure, "on_arm", lambda: True)  # this host as the named device
    cfg = OnnxLatencyConfig(budget_ms=budget, host_device="pixel-1", emulate=True, runs=2)
    report = onnx_gate(onnx, cfg, lines.append)
    assert report["source"] == "measured" and report["passed"] is False  # a 1e-6 ms budget
    assert report["devices"]["pixel-1"]["ms"] == report["host"]["ms"]
    assert report["devices"]["raspberry-pi-4"] == {
        "ms": None,
        "budget_ms": 150.0,
        "source": "unavailable",
    }
    assert report["emulation"] is None and lines[-1] == "latency measured: arm64 host (pixel-1)"
