"""Model references (``vlrface.references``): every form a command takes, resolved on real
files and a real MLflow sqlite registry; one-line errors for references that name nothing."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vlrface import provenance, registry
from vlrface.cli import main
from vlrface.references import ModelRefError, parse


def test_each_form_parses(tmp_path):
    keras = tmp_path / "m.keras"
    keras.write_bytes(b"x")
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(b"x")
    forms = {
        str(keras): ("file", None, None, None),
        str(tflite): ("file", None, None, None),
        str(tmp_path): ("directory", None, None, None),
        "binaryfacenet": ("zoo", "binaryfacenet", None, None),
        "squeezefaceposenet": ("torch_zoo", "squeezefaceposenet", None, None),
        "models:/face@champion": ("registered", "face", "champion", None),
        "models:/face/3": ("registered", "face", None, 3),
        "models:/face/latest": ("registered", "face", None, None),
        "face@champion": ("registered", "face", "champion", None),
        "face@3": ("registered", "face", None, 3),
        "runs:/abc/model": ("run", None, None, None),
    }
    for text, (kind, name, alias, version) in forms.items():
        ref = parse(text)
        assert (ref.kind, ref.name, ref.alias, ref.version) == (kind, name, alias, version), text
    assert parse("face@3").uri == "models:/face/3"
    assert parse("face@champion").uri == "models:/face@champion"
    # `vlrface report`: registered versions only, a bare name is the latest
    ref = parse("binaryfacenet", registered_only=True)
    assert (ref.kind, ref.name, ref.version, ref.uri) == (
        "registered",
        "binaryfacenet",
        None,
        "models:/binaryfacenet/latest",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("resnet9000", "unknown model 'resnet9000': not a file, a zoo model (binaryfacenet"),
        ("nowhere/model.keras", "nowhere/model.keras: model file not found"),
        ("models:/face/two", "models:/face/two: expected models:/<name>@<alias>"),
        ("models:/", "models:/: expected models:/<name>@<alias>"),
        ("face@", "face@: expected <name>@<alias> or <name>@<version>"),
        ("", "empty model reference"),
    ],
)
def test_bad_references_are_one_line(text, message):
    with pytest.raises(ModelRefError) as exc:
        parse(text)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_a_file_of_another_kind_is_named(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    with pytest.raises(ModelRefError, match=r"notes.txt: not a model file \(expected .keras"):
        parse(str(notes))


@pytest.fixture(scope="module")
def narrow_keras(tmp_path_factory):
    """A width-8 BinaryFaceNet saved as .keras (the zoo's is width 64)."""
    from vlrface._keras import tf
    from vlrface.keras_materializer import save_keras
    from vlrface.models.keras.binaryfacenet import BinaryFaceNetConfig, build_binaryfacenet

    tf.keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("narrow") / "backbone.keras"
    save_keras(build_binaryfacenet(BinaryFaceNetConfig(channels=8, embedding=16)), str(path))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory, narrow_keras):
    """A sqlite registry with one version holding ``backbone.keras`` (sha256 tags), alias
    ``champion``."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("refs")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("t", artifact_location=(root / "artifacts").as_uri())
    run = client.create_run(exp)
    client.log_artifact(run.info.run_id, str(narrow_keras), "model")
    client.set_terminated(run.info.run_id)
    tags = {"sha256.backbone.keras": provenance.sha256_file(narrow_keras)}
    mv = registry.register(
        client, "narrow", f"{run.info.artifact_uri}/model", run.info.run_id, tags
    )
    client.set_registered_model_alias("narrow", "champion", mv.version)
    return {"uri": uri, "client": client}


def test_efficiency_reads_the_real_model(narrow_keras, store, monkeypatch):
    """A width-8 model is not the zoo's width-64 one: every reference to it reports its own
    MACs, by file and by registered version (alias and number)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])

    def macs(model):
        res = CliRunner().invoke(main, ["efficiency", model, "--json"])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)["binary_macs"]

    zoo = macs("binaryfacenet")
    narrow = macs(str(narrow_keras))
    assert narrow < zoo / 10
    assert macs("models:/narrow@champion") == macs("models:/narrow/1") == narrow
    assert macs("narrow@champion") == narrow
    bad = CliRunner().invoke(main, ["efficiency", "models:/narrow@staging"])
    assert bad.exit_code == 1
    assert "registered model 'narrow' has no alias 'staging'" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    tflite = narrow_keras.with_suffix(".tflite")
    tflite.write_bytes(b"x")
    bad = CliRunner().invoke(main, ["efficiency", str(tflite)])
    assert bad.exit_code == 1 and "takes a Keras model (.keras, .h5), not .tflite" in bad.output


def test_registered_version_resolves_alias_and_number(store, monkeypatch):
    from vlrface.references import model_file, registered_version

    client = store["client"]
    assert str(registered_version(parse("models:/narrow@champion"), client).version) == "1"
    assert str(registered_version(parse("narrow@1"), client).version) == "1"
    with pytest.raises(registry.RegistryError, match="registered model 'narrow' has no version 7"):
        registered_version(parse("models:/narrow/7"), client)
    with pytest.raises(registry.RegistryError, match="unknown registered model 'nobody'"):
        registered_version(parse("nobody@champion"), client)
    with pytest.raises(ModelRefError, match="binaryfacenet: not a registered model"):
        registered_version(parse("binaryfacenet"), client)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    with pytest.raises(ModelRefError, match=r"narrow@1: no \.onnx model inside"):
        model_file(parse("narrow@1"), (".onnx",))
    assert model_file(parse("narrow@1"), (".onnx", ".keras")).name == "backbone.keras"


def test_export_lce_takes_a_registered_version(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    out = tmp_path / "narrow.tflite"
    args = ["export", "lce", "--model", "models:/narrow@champion", "--out", str(out)]
    res = CliRunner().invoke(main, [*args, "--count", "2", "--min-cosine", "-1", "--json"])
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[4:8] == b"TFL3"
    assert json.loads(res.stdout)["model"] == "models:/narrow@champion"
