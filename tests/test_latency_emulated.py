"""The emulated ARM latency backend (``vlrface.latency.emulate``): the pure parts always; one real
run of a tiny ONNX model under qemu-aarch64 where ``qemu-aarch64`` (Debian's qemu-user) is
installed: its first use sets up the cached toolchain (Debian + PyPI, about 20 s)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vlrface.cli import main
from vlrface.latency import emulate
from vlrface.latency.estimate import devices

HAVE_QEMU = shutil.which(emulate.QEMU) is not None


def test_parse_plugin_output():
    text = "mark 0 100\nmark 1 350\n\nmark 3 850\ntotal 1000\n"
    assert emulate.parse_plugin_output(text) == {"marks": {0: 100, 1: 350, 3: 850}, "total": 1000}
    with pytest.raises(emulate.EmulationError, match="out.txt: unexpected plugin output line"):
        emulate.parse_plugin_output("mark 0 1\ngarbage\ntotal 2\n", "out.txt")
    with pytest.raises(emulate.EmulationError, match="no 'total' line"):
        emulate.parse_plugin_output("mark 0 1\n")
    with pytest.raises(emulate.EmulationError, match="without a marker id"):
        emulate.parse_plugin_output("mark 5\ntotal 9\n")


def test_per_inference_is_the_median_after_the_warm_up():
    # start-up before marker 0, the first run's one-off work and the warm-up runs stay out;
    # one run perturbed by timing (the 9,000 here) does not move the median
    marks = {0: 1_000_000, 1: 1_000_900, 2: 1_001_300, 3: 1_001_750}
    for i, run in enumerate([400, 9_000, 400, 410, 390], start=3):
        marks[i + 1] = marks[i] + run
    got = emulate.per_inference(marks, warmup=3, counted=5)
    assert got == {
        "count_1": 900,
        "warmup": 3,
        "counted": [400, 9_000, 400, 410, 390],
        "min": 390,
        "max": 9_000,
        "per_inference": 400.0,
    }
    assert emulate.per_inference(marks, warmup=1, counted=2)["per_inference"] == 425.0
    assert emulate.RUNS == emulate.WARMUP + emulate.COUNTED
    with pytest.raises(emulate.EmulationError, match=r"no marker\(s\) \[2, 3, 4\]"):
        emulate.per_inference({0: 1, 1: 2, 5: 9}, warmup=3, counted=1)
    with pytest.raises(emulate.EmulationError, match="do not grow"):
        emulate.per_inference({0: 0, 1: 10, 2: 10}, warmup=1, counted=1)
    with pytest.raises(ValueError, match="one warm-up and one counted run"):
        emulate.per_inference(marks, warmup=0)
    with pytest.raises(ValueError, match="one warm-up and one counted run"):
        emulate.per_inference(marks, counted=0)


def test_ms_conversion_uses_the_device_constants():
    table = devices()
    for device, row in table.items():
        assert emulate.to_ms(2_000_000, device) == pytest.approx(2 * float(row["ms_per_minsn"]))
    assert emulate.to_ms(1e6, "x", {"x": {"ms_per_minsn": 0.5}}) == 0.5
    with pytest.raises(ValueError, match="unknown device 'toaster'"):
        emulate.to_ms(1e6, "toaster")


def test_parity_figures():
    a = np.array([[1.0, 2.0, 3.0]], np.float32)
    assert emulate.parity(a, a) == {"max_abs_diff": 0.0, "cosine": pytest.approx(1.0)}
    got = emulate.parity(a, a + np.float32(1e-3))
    assert got["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    with pytest.raises(emulate.EmulationError, match="shape"):
        emulate.parity(a, np.zeros((1, 4)))


def test_cache_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv("VLRFACE_ARM64_CACHE", str(tmp_path / "c"))
    assert emulate.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("VLRFACE_ARM64_CACHE")
    assert emulate.cache_dir() == Path.home() / ".cache" / "vlrface" / "arm64"


def test_missing_qemu_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no qemu-aarch64
    missing = "qemu-aarch64 not found.*apt-get install qemu-user"
    with pytest.raises(emulate.EmulationError, match=missing):
        emulate.find_qemu()
    with pytest.raises(emulate.EmulationError, match="qemu-aarch64 not found"):
        emulate.setup(tmp_path / "cache")


@pytest.mark.skipif(
    shutil.which("apt-get") is None or not Path(emulate.DEBIAN_KEYRING).is_file(),
    reason="no apt-get or Debian archive keyring: the sysroot cannot be built on this host",
)
def test_unreachable_debian_names_the_mirror(monkeypatch, tmp_path):
    mirror = "http://127.0.0.1:9/debian"  # nothing listens on the discard port
    monkeypatch.setenv("VLRFACE_DEBIAN_MIRROR", mirror)
    with pytest.raises(emulate.EmulationError, match=f"cannot reach Debian at {mirror}"):
        emulate.build_sysroot(tmp_path, log=lambda _: None)
    assert not (tmp_path / "sysroot").exists()


def test_tflite_and_other_inputs_are_refused(tmp_path):
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(b"\0\0\0\0TFL3")
    with pytest.raises(emulate.EmulationError, match="LCE's aarch64 benchmark binary"):
        emulate.check_model_path(tflite)
    with pytest.raises(emulate.EmulationError, match="expected an .onnx model"):
        emulate.check_model_path(tmp_path / "m.pt")
    with pytest.raises(emulate.EmulationError, match="no such file"):
        emulate.check_model_path(tmp_path / "none.onnx")
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    with pytest.raises(emulate.EmulationError, match="bogus.onnx: not a readable ONNX model"):
        emulate.fixed_input(bogus)
    args = ["latency", "--model", str(tflite), "--device", "jetson-nano", "--backend", "emulated"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "emulated .tflite latency needs --benchmark-binary" in result.output


def test_plugin_compiles(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed: it compiles the instruction-count plugin")
    lib = emulate.build_plugin(tmp_path, log=lambda _: None)
    assert lib.is_file() and lib.parent == tmp_path / "plugin"
    assert emulate.build_plugin(tmp_path, log=lambda _: None) == lib  # cached


def tiny_onnx(path: Path) -> Path:
    """Conv 3->8 (stride 2) + ReLU + global average pool + a 16-d linear layer, seeded weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.skipif(not HAVE_QEMU, reason="qemu-aarch64 not installed (apt-get install qemu-user)")
def test_emulated_run_is_deterministic_and_matches_x86(tmp_path):
    model = tiny_onnx(tmp_path / "tiny.onnx")
    args = ["latency", "--model", str(model), "--device", "jetson-nano", "--device", "pixel-1"]
    result = CliRunner().invoke(main, [*args, "--backend", "emulated", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{") :])
    assert out["latency.source"] == "emulated"
    insns = out["instructions"]
    assert insns > 0
    assert out["latency.jetson-nano.ms"] == pytest.approx(emulate.to_ms(insns, "jetson-nano"))
    assert out["latency.pixel-1.ms"] < out["latency.jetson-nano.ms"]
    assert out["parity"]["max_abs_diff"] < 1e-4 and out["parity"]["cosine"] > 0.999999

    # a second emulated process counts the same instructions, even when it runs several times
    # slower (single-stepped), which moves what onnxruntime does in its first runs
    tools = emulate.setup(log=lambda _: None)
    again = emulate.run_guest(model, emulate.fixed_input(model), tools, qemu_args=("-singlestep",))
    assert emulate.per_inference(again["marks"])["per_inference"] == pytest.approx(insns, rel=1e-3)
