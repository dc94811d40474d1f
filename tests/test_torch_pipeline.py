"""``train_crossres`` end to end, in process, on a tiny DVC-tracked synthetic set and the real
local ZenML stack with MLflow: pre-train -> T-C fine-tune (frozen teacher, curriculum) -> ONNX
export with parity -> verification and the configured benchmark protocols (LFW) on the ONNX
embeddings -> latency gate -> registered version with its ONNX file, sha256 tags and model card.
SqueezeFacePoseNet at 32 px keeps it short."""

import json
import os

import pytest
import yaml

from tests.conftest import dvc

pytestmark = pytest.mark.pipeline

NAME = "tinycrossres"
TINY = {
    "enable_cache": False,
    "parameters": {
        "seed": 5,
        "data": {"name": "tiny", "test_fraction": 0.3},
        "model": {"name": "squeezefaceposenet", "embedding": 32, "input_size": 32},
        "pretrain": {
            "epochs": 1,
            "batch_size": 8,
            "lr": 0.01,
            "head": {"kind": "softmax", "bn_dropout": True},
            "progress": False,
        },
        "finetune": {
            "epochs": 1,
            "batch_size": 8,
            "lr": 0.001,
            "head": {"kind": "arcface", "scale": 16.0},
            "schedule": {"kind": "plateau", "factor": 0.2},
            "degrade": {"kind": "curriculum", "base": {"kind": "fixed", "sizes": [8, 16]}},
            "teacher": {"lam": 0.1},
            "grad_clip_norm": 5.0,
            "checkpoint_every": 2,
            "progress": False,
        },
        "evaluation": {"resolutions": [7, 14], "pairs": 40, "folds": 5},
        "export": {"parity_min_cosine": 0.999, "parity_samples": 4},
        "latency": {"budget_ms": {"raspberry-pi-4": 150}, "when_unavailable": "defer", "runs": 5},
        "registry": {"model_name": NAME, "compare_metric": "eval.tiny.hr_lr.14.acc"},
    },
}


@pytest.fixture(scope="module")
def project(session_tmp):
    """As tests/test_pipeline.py's: a DVC repo with a tiny synthetic set, the MLflow stack."""
    from vlrface.data.fixtures.lfw import write_lfw
    from vlrface.data.synthetic import write_casia_layout
    from vlrface.stack import ensure_local_stack

    proj = session_tmp / "torch_project"
    root = proj / "data" / "casia-webface-synthetic"
    write_casia_layout(root, identities=14, images_per_identity=4, seed=3, progress=False)
    write_lfw(proj / "lfw")  # evaluation.protocols runs on the ONNX model too
    dvc("init", "--no-scm", "-q", cwd=proj)
    dvc("add", "-q", "data", cwd=proj)
    ensure_local_stack(session_tmp / "mlflow", ["train_crossres", "train_squeezefaceposenet"])
    return proj


def test_crossres_registers_an_onnx_version_with_provenance(project, tmp_path):
    from mlflow import MlflowClient
    from zenml.client import Client

    from pipelines import train_crossres
    from vlrface import registry
    from vlrface.data.versioning import read_pointer
    from vlrface.embedders import ONNXEmbedder
    from vlrface.provenance import sha256_file

    cfg = json.loads(json.dumps(TINY))
    cfg["parameters"]["data"].update(
        root=str(project / "data" / "casia-webface-synthetic"),
        dvc_file=str(project / "data.dvc"),
    )
    cfg["parameters"]["evaluation"]["protocols"] = [
        {"name": "lfw", "root": str(project / "lfw"), "resolutions": [14]}
    ]
    path = project / "tiny_crossres.yaml"
    path.write_text(yaml.safe_dump(cfg))

    response = train_crossres.with_options(config_path=str(path))()
    run = Client().get_pipeline_run(response.id)
    steps = {name: str(s.status) for name, s in run.steps.items()}
    assert steps == {
        name: "completed"
        for name in (
            "load_data",
            "align_data",
            "validate_data",
            "pretrain_torch",
            "finetune_torch",
            "export_onnx",
            "evaluate_onnx",
            "onnx_latency_gate",
            "register_torch",
        )
    }

    client = MlflowClient(os.environ["VLRFACE_TEST_MLFLOW_URI"])
    exp = client.get_experiment_by_name("train_crossres")
    (mlrun,) = client.search_runs([exp.experiment_id], f"attributes.run_name = '{run.name}'")
    metrics, rtags = mlrun.data.metrics, mlrun.data.tags
    for res, variant in ((112, "hr_hr"), (7, "hr_lr"), (14, "hr_lr")):
        for m in ("acc", "acc_std", "tar_far_1e-3"):
            assert 0.0 <= metrics[f"eval.tiny.{variant}.{res}.{m}"] <= 1.0
    for variant in ("hr_lr", "lr_lr"):  # evaluation.protocols, on the ONNX embeddings
        for m in ("acc", "acc_std", "tar_far_1e-3"):
            assert 0.0 <= metrics[f"eval.lfw.{variant}.14.{m}"] <= 1.0
    assert mlrun.data.params["eval.lfw.model"] == "onnx"
    assert metrics["export.onnx.parity.cosine_min"] >= 0.999
    assert metrics["finetune.distill_loss"] > 0
    assert rtags["training.variant"] == "T-C" and rtags["finetune.teacher.sha256"]
    assert rtags["latency.source"] == "unavailable"

    mv = client.get_model_version_by_alias(NAME, registry.CHAMPION)
    assert int(mv.version) == 1
    tags = mv.tags
    assert tags["dvc_md5"] == read_pointer(project / "data.dvc").md5
    assert tags["seed"] == "5" and tags["framework"] == "pytorch"
    assert tags["latency.source"] == "unavailable"
    assert tags["latency.raspberry-pi-4.source"] == "unavailable"
    assert {tags["gate.data"], tags["gate.parity"], tags["gate.latency"]} == {"passed"}
    assert tags["promotion.decision"] == "promoted"
    for key in ("git_sha", "config_hash", "pkg.torch", "pkg.onnxruntime", "pkg.mlflow"):
        assert tags[key], key
    assert {
        "sha256.backbone.npz",
        "sha256.backbone.json",
        f"sha256.artifacts/{NAME}.onnx",
        "sha256.MLmodel",
    } <= set(tags)
    # every file the tags name is there and matches its hash
    assert all(r.passed for r in registry.verify_files(client, mv))
    onnx = client.download_artifacts(mv.run_id, f"model/artifacts/{NAME}.onnx", str(tmp_path))
    assert sha256_file(onnx) == tags[f"sha256.artifacts/{NAME}.onnx"]
    import mlflow
    import numpy as np
    import pandas as pd

    from vlrface.embedders import embed_images
    from vlrface.models.torch import Preprocessing
    from vlrface.preprocess import decode_rgb
    from vlrface.serving import encode_image

    embedder = ONNXEmbedder(onnx)
    assert embedder(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 32)
    # the champion serves as an MLflow pyfunc with the model's own preprocessing
    mlflow.set_tracking_uri(os.environ["VLRFACE_TEST_MLFLOW_URI"])
    served = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    face = next((project / "data" / "casia-webface-synthetic").rglob("*.jpg"))
    got = served.predict(pd.DataFrame({"image": [encode_image(face)]}))["embedding"][0]
    meta = embedder.session.get_modelmeta().custom_metadata_map["vlrface.preprocessing"]
    spec = Preprocessing.from_dict(json.loads(meta))
    x = spec.normalize(spec.geometry(decode_rgb(face.read_bytes(), None, str(face))[None]))
    np.testing.assert_allclose(got, embed_images(embedder, x, flip=True)[0], atol=1e-6)
    card = client.download_artifacts(mv.run_id, registry.CARD, str(tmp_path))
    text = open(card).read()
    assert NAME in text and "eval.tiny.hr_lr.14.acc" in text and "champion" in text
