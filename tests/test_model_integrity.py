"""No pickle where a model is stored, and every load checks each file's sha256: a registered
pyfunc (models from code) around a small LCE flatbuffer on a real MLflow sqlite registry."""

import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from vlrface import provenance, registry, serving
from vlrface._keras import tf
from vlrface.config.torch import TorchModelConfig
from vlrface.errors import ConfigError, IntegrityError
from vlrface.export import lce
from vlrface.keras_materializer import save_keras
from vlrface.models.keras.binaryfacenet_lce import build_binaryfacenet_lce
from vlrface.training import torch as tt


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A version registered as vlrface/registration.py does: serving.save's directory with the Keras
    backbone beside it, logged to a run, its files' sha256 as tags."""
    from mlflow import MlflowClient

    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    tmp = tmp_path_factory.mktemp("integrity")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("t", artifact_location=(tmp / "artifacts").as_uri())
    tf.keras.utils.set_random_seed(0)
    keras_model = build_binaryfacenet_lce(channels=16, embedding=16)
    (tmp / "m.tflite").write_bytes(lce.convert(keras_model))
    folder = serving.save(tmp / "model", tmp / "m.tflite", threshold=0.5)
    save_keras(keras_model, str(folder / "backbone.keras"))
    files = {
        p.relative_to(folder).as_posix(): provenance.sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(folder), "model")
    client.set_terminated(run.info.run_id)
    tags = {f"sha256.{k}": v for k, v in files.items()}
    registry.register(client, "m", f"{run.info.artifact_uri}/model", run.info.run_id, tags)
    client.set_registered_model_alias("m", "champion", "1")
    return {"client": client, "uri": uri, "folder": folder, "tmp": tmp}


def stored(registered) -> "os.PathLike":
    mv = registered["client"].get_model_version("m", "1")
    return type(registered["folder"])(mv.source.removeprefix("file://"))


def test_no_registered_model_directory_holds_a_pickle(registered, tmp_path):
    assert registry.pickles_in(stored(registered)) == []
    assert not list(stored(registered).rglob("python_model.pkl"))
    # the torch checkpoint as the torch pipeline registers it: .npz + JSON, no pickle
    torch.manual_seed(0)
    cfg = TorchModelConfig(name="squeezefaceposenet", embedding=16, input_size=32)
    source = tt.save_model(tt.make_model(cfg), cfg)
    weights, meta = tt.to_portable(source)
    (tmp_path / "backbone.npz").write_bytes(weights)
    (tmp_path / "backbone.json").write_bytes(meta)
    assert registry.pickles_in(tmp_path) == []
    rebuilt = tt.from_portable(tmp_path / "backbone.npz", tmp_path / "backbone.json")
    for k, v in tt.load_model(source).state_dict().items():
        assert torch.equal(v, rebuilt.state_dict()[k]), k
    # the scan is not blind: torch.save's zip holds a pickle, and so does a planted file
    (tmp_path / "backbone.pt").write_bytes(source)
    (tmp_path / "x.bin").write_bytes(pickle.dumps({"a": 1}))
    assert registry.pickles_in(tmp_path) == ["backbone.pt", *_pt_members(source), "x.bin"]


def _pt_members(source: bytes) -> list[str]:
    import io
    import zipfile

    names = zipfile.ZipFile(io.BytesIO(source)).namelist()
    return [f"backbone.pt:{n}" for n in names if n.endswith(".pkl")]


def test_torch_checkpoint_with_code_is_refused(tmp_path):
    """weights_only: a checkpoint that pickles an object refuses to load, nothing runs."""

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    buf = tmp_path / "evil.pt"
    torch.save({"format": tt.FORMAT, "model": None, "x": Payload()}, buf)
    with pytest.raises(ConfigError, match="not a loadable vlrface torch checkpoint"):
        tt.load_model(buf)
    assert not (tmp_path / "pwned").exists()


def test_verified_load_serves_and_a_flipped_byte_is_refused(registered, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    model = serving.load("models:/m@champion")
    faces = np.random.default_rng(0).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    import cv2

    ok, jpg = cv2.imencode(".jpg", faces[0])
    image = __import__("base64").b64encode(jpg).decode()
    out = model.predict(pd.DataFrame({"image": [image], "align": [False]}))  # a crop, no face
    assert len(out["embedding"][0]) == 16

    tflite = stored(registered) / "artifacts" / "m.tflite"
    original = tflite.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    tflite.write_bytes(bytes(flipped))
    try:
        with pytest.raises(IntegrityError, match=r"sha256 mismatch: artifacts/m.tflite of m v1"):
            serving.load("models:/m@champion")
        with pytest.raises(IntegrityError, match="artifacts/m.tflite"):
            serving.load("models:/m/1")
        # `mlflow models serve` loads the directory itself: the pyfunc checks its file too
        import mlflow.pyfunc

        with pytest.raises(IntegrityError, match=r"m.tflite: sha256 mismatch"):
            mlflow.pyfunc.load_model(str(stored(registered)))
    finally:
        tflite.write_bytes(original)
    # a file slipped into the version's directory is refused as well
    extra = stored(registered) / "python_model.pkl"
    extra.write_bytes(pickle.dumps(1))
    try:
        with pytest.raises(IntegrityError, match="python_model.pkl of m v1 is not among"):
            serving.load("models:/m@champion")
    finally:
        extra.unlink()
    assert serving.load("models:/m@champion") is not None


def test_keras_loads_with_explicit_custom_objects_and_safe_mode(tmp_path):
    from vlrface.keras_materializer import load_keras
    from vlrface.models.keras.binaryfacenet import BinaryFaceNetConfig, build_binaryfacenet

    tf.keras.utils.set_random_seed(0)
    model = build_binaryfacenet(BinaryFaceNetConfig(channels=8, embedding=8), output_head=False)
    save_keras(model, str(tmp_path / "b.keras"))
    back = load_keras(str(tmp_path / "b.keras"))
    x = np.random.default_rng(0).normal(size=(1, 112, 112, 3)).astype("float32")
    np.testing.assert_allclose(back(x).numpy(), model(x).numpy(), atol=1e-5)
    # a model carrying code (a Lambda's bytecode) is refused, the code never runs
    inp = tf.keras.Input((4,))
    evil = tf.keras.Model(inp, tf.keras.layers.Lambda(lambda t: t * 2)(inp))
    save_keras(evil, str(tmp_path / "evil.keras"))
    with pytest.raises(ValueError, match="(?i)unsafe|safe_mode"):
        load_keras(str(tmp_path / "evil.keras"))


def test_a_model_directory_holding_a_pickle_is_refused(registered, tmp_path):
    """A directory saved the old way (cloudpickled python_model.pkl) is refused, unloaded."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(registered["folder"], old)
    (old / "python_model.pkl").write_bytes(pickle.dumps({"not": "loaded"}))
    with pytest.raises(IntegrityError, match=r"python_model.pkl of .* is a pickle"):
        serving.load(str(old))


def test_mlflows_own_models_uri_load_leaves_the_version_loadable(registered, monkeypatch):
    """``mlflow.pyfunc.load_model("models:/...")`` on a local artifact store writes MLflow's
    ``registered_model_meta`` into the stored version itself: vlrface's verified load still takes
    the version; the same name anywhere else in the tree is an extra file, refused."""
    import mlflow
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    mlflow.set_tracking_uri(registered["uri"])
    meta = stored(registered) / registry.MLFLOW_META
    try:
        mlflow.pyfunc.load_model("models:/m@champion")
        assert meta.is_file()  # what MLflow does to a local store (the reason for the exception)
        assert serving.load("models:/m@champion") is not None
        nested = stored(registered) / "artifacts" / registry.MLFLOW_META
        nested.write_text(meta.read_text())
        try:
            with pytest.raises(IntegrityError, match="artifacts/registered_model_meta of m v1"):
                serving.load("models:/m@champion")
        finally:
            nested.unlink()
    finally:
        meta.unlink(missing_ok=True)
