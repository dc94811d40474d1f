"""Bad input: every error is one clear line that names the file or key."""

import pytest

from tests.conftest import dvc
from vlrface.config.keras import parse
from vlrface.data import casia, versioning
from vlrface.data.synthetic import write_casia_layout
from vlrface.data.validation import DataValidationError, validate_manifest
from vlrface.errors import ConfigError, DataError

STAGE = {"epochs": 1}


def test_unknown_config_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown key 'pretrain\.epocs'"):
        parse({"pretrain": {"epocs": 1}, "finetune": STAGE})
    with pytest.raises(ConfigError, match=r"unknown key 'evaluation\.pair'"):
        parse({"pretrain": STAGE, "finetune": STAGE, "evaluation": {"pair": 3}})
    with pytest.raises(ConfigError, match=r"missing required key 'finetune'"):
        parse({"pretrain": STAGE})
    with pytest.raises(ConfigError, match=r"missing required key 'pretrain' \(or set model"):
        parse({"finetune": STAGE})
    assert parse({"finetune": STAGE, "model": {"pretrained": "x.h5"}}).pretrain is None
    with pytest.raises(ConfigError, match=r"latency\.budget_ms.*unknown device"):
        parse({"pretrain": STAGE, "finetune": STAGE, "latency": {"budget_ms": {"toaster": 1}}})
    with pytest.raises(
        ConfigError, match=r"^config: registry\.compare_metric 'eval\.demo\.hr_lr\.21"
    ):
        parse(
            {
                "pretrain": STAGE,
                "finetune": STAGE,
                "registry": {"compare_metric": "eval.demo.hr_lr.21.acc"},
            }
        )
    assert "\n" not in str(ConfigError("x: unknown key 'y'"))


@pytest.fixture
def faces(tmp_path):
    return write_casia_layout(tmp_path / "faces", 3, 2, seed=0, progress=False)


def test_reader_names_the_bad_path(tmp_path, faces):
    with pytest.raises(DataError, match="does not exist"):
        casia.read_manifest(tmp_path / "nowhere", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: data root holds no CASIA-WebFace images"):
        casia.read_manifest(tmp_path / "empty", progress=False)
    (faces / "0000002" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"0000002/x\.png: not a CASIA-WebFace image name"):
        casia.read_manifest(faces, progress=False)
    (faces / "0000002" / "x.png").unlink()
    (faces / "bob").mkdir()
    with pytest.raises(DataError, match=r"bob: not a CASIA-WebFace identity folder"):
        casia.read_manifest(faces, progress=False)


def test_corrupt_image_fails_validation_naming_the_file(faces):
    img = faces / "0000003" / "002.jpg"
    img.write_bytes(img.read_bytes()[:200])  # truncated JPEG
    manifest = casia.read_manifest(faces, test_fraction=0.0, progress=False)
    with pytest.raises(DataValidationError) as err:
        validate_manifest(manifest, "faces", 112)
    msg = str(err.value)
    assert "decodable" in msg and "0000003/002.jpg" in msg and "\n" not in msg


def test_corrupt_image_is_skipped_and_counted_on_request(tmp_path):
    faces = write_casia_layout(tmp_path / "three", 3, 3, seed=0, progress=False)
    img = faces / "0000003" / "002.jpg"
    img.write_bytes(img.read_bytes()[:200])
    manifest = casia.read_manifest(faces, progress=False, on_error="skip")
    assert "0000003/002.jpg" not in set(manifest.path) and len(manifest) == 8
    assert (
        manifest.attrs["skipped"] == 1
        and "0000003/002.jpg" in manifest.attrs["skipped_examples"][0]
    )
    validate_manifest(manifest, "faces", 112)  # what is left is clean


def test_identity_in_train_and_test_fails_validation(faces):
    manifest = casia.read_manifest(faces, test_fraction=0.0, progress=False)
    manifest.loc[manifest.path == "0000001/002.jpg", "split"] = "test"
    with pytest.raises(DataValidationError, match=r"identity_splits.*0000001/001\.jpg"):
        validate_manifest(manifest, "faces", 112)


def test_data_version_errors(tmp_path, faces):
    with pytest.raises(DataError, match=r"data\.dvc: DVC pointer not found"):
        versioning.read_pointer(tmp_path / "data.dvc")
    (tmp_path / "bad.dvc").write_text("outs: []\n")
    with pytest.raises(DataError, match=r"bad\.dvc: not a DVC pointer"):
        versioning.read_pointer(tmp_path / "bad.dvc")

    dvc("init", "--no-scm", "-q", cwd=tmp_path)
    dvc("add", "-q", "faces", cwd=tmp_path)
    version = versioning.resolve(tmp_path / "faces.dvc", faces)
    assert version.md5.endswith(".dir") and version.nfiles == 8
    with pytest.raises(DataError, match="data root is not inside"):
        versioning.resolve(tmp_path / "faces.dvc", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        versioning.resolve(tmp_path / "faces.dvc", faces / "0000009")
    (faces / "0000001" / "001.jpg").write_bytes(b"changed")
    with pytest.raises(DataError, match=r"faces\.dvc: the tracked data differs from the pointer"):
        versioning.resolve(tmp_path / "faces.dvc", faces)
