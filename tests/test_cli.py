"""The `vlrface` command line: efficiency, checkpoint import, LCE export (float and int8)."""

import json

import pytest
from click.testing import CliRunner

from vlrface._keras import tf
from vlrface.cli import main

REFERENCE = "reference/binaryfacenet_ms1m_retina_epoch19.h5"


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_help_lists_the_commands():
    out = invoke("--help").output
    for cmd in ("data", "efficiency", "export", "import-checkpoint", "models", "stack"):
        assert cmd in out


def test_efficiency_json_is_table_2():
    result = invoke("efficiency", "binaryfacenet", "--json")
    assert result.exit_code == 0
    eff = json.loads(result.output)
    assert (eff["binary_macs"], eff["float_macs"]) == (184_992_256, 3_850_752)
    assert round(eff["params"] / 1000) == 506 and round(eff["size_mib"], 2) == 1.32
    bad = CliRunner().invoke(main, ["efficiency", "resnet9000"])
    assert bad.exit_code != 0 and "unknown model 'resnet9000'" in bad.output


def test_import_checkpoint_matches_on_real_faces(shared_dir, tmp_path):
    out = tmp_path / "imported.keras"
    result = invoke(
        "import-checkpoint",
        str(shared_dir / REFERENCE),
        "--out",
        str(out),
        "--faces",
        str(shared_dir / "data" / "london-set" / "aligned112"),
        "--count",
        "8",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["layers_copied"] == 64 and report["faces"] == 8
    assert report["max_abs_diff"] < 1e-4 and out.is_file()

    tflite = tmp_path / "reference.tflite"
    result = invoke(
        "export",
        "lce",
        "--model",
        str(out),
        "--out",
        str(tflite),
        "--calibration",
        str(shared_dir / "data" / "london-set" / "aligned112"),
        "--count",
        "8",
        "--min-cosine",
        "0.98",
        "--json",
    )
    assert result.exit_code == 0, result.output
    exported = json.loads(result.output)
    assert exported["census"]["binary_macs"] == 0  # Addendum 2: LCE keeps DoReFa as float
    assert exported["census"]["float_macs"] == 184_992_256 + 3_850_752 + 128 * 128
    assert exported["parity"]["cosine_min"] >= 0.98


def test_mismatching_checkpoint_names_the_layer_and_shapes(tmp_path):
    from vlrface.models.keras.binaryfacenet import BinaryFaceNetConfig, build_binaryfacenet

    narrow = tmp_path / "narrow.h5"
    build_binaryfacenet(BinaryFaceNetConfig(channels=32)).save(narrow)
    result = CliRunner().invoke(main, ["import-checkpoint", str(narrow), "--count", "2"])
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and "narrow.h5: layer 0 'stem_conv'" in line
    assert "(1, 1, 3, 32)" in line and "(1, 1, 3, 64)" in line


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory):
    from vlrface.materializers import save_keras
    from vlrface.models.keras.binaryfacenet import BinaryFaceNetConfig, build_binaryfacenet

    path = tmp_path_factory.mktemp("m") / "tiny.keras"
    tf.keras.utils.set_random_seed(0)
    save_keras(build_binaryfacenet(BinaryFaceNetConfig(channels=8, embedding=16)), str(path))
    return path


def test_export_lce_writes_flatbuffer_with_census(tiny_keras, tmp_path):
    out = tmp_path / "tiny.tflite"
    result = invoke(
        "export",
        "lce",
        "--model",
        str(tiny_keras),
        "--out",
        str(out),
        "--count",
        "4",
        "--min-cosine",
        "-1",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert out.read_bytes()[4:8] == b"TFL3"
    assert report["census"]["ops"]["TANH"] >= 1  # DoReFa stays float fake-quant under LCE
    assert report["census"]["binary_mac_share"] == 0.0
    # no floor here: an untrained DoReFa net's LCE parity is arbitrary (sign flips near the
    # quantizer's thresholds); the trained checkpoint's is tested below
    assert -1 <= report["parity"]["cosine_min"] <= 1 and report["parity"]["samples"] == 4


def test_export_lce_below_parity_floor_writes_nothing(tiny_keras, tmp_path):
    out = tmp_path / "never.tflite"
    result = CliRunner().invoke(
        main,
        [
            "export",
            "lce",
            "--model",
            str(tiny_keras),
            "--out",
            str(out),
            "--count",
            "2",
            "--min-cosine",
            "1.01",
        ],
    )
    assert result.exit_code == 1 and "LCE parity cosine" in result.output
    assert not out.exists()


def test_export_lce_int8_needs_calibration_data_and_uses_it(tmp_path):
    from vlrface.data.synthetic import write_casia_layout

    out = tmp_path / "q.tflite"
    args = ["export", "lce", "--model", "binaryfacenet_lce", "--out", str(out), "--int8"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2 and "--int8 needs --calibration" in refused.output
    assert not out.exists()

    faces = tmp_path / "faces"
    write_casia_layout(faces, 2, 4, seed=3)
    result = invoke(
        *args, "--calibration", str(faces), "--count", "8", "--min-cosine", "0.9", "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["int8"] and report["int8_calibration_samples"] == 8
    assert report["census"]["int8_ops"] > 0 and report["census"]["ops"]["LceBconv2d"] == 20
    assert out.read_bytes()[4:8] == b"TFL3"
