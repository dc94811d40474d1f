"""The whole pipeline, in process, on a tiny DVC-tracked synthetic set and a real local stack.

One module-scoped project (DVC repo + ZenML stack with MLflow) serves every run, in order:
first run -> champion; same inputs -> served from cache; forced gate failure -> registered but
refused; cache off -> the same metrics to the last digit; new data through DVC -> everything
after the data runs again and a challenger is judged against the champion.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, dvc

pytestmark = pytest.mark.pipeline

TINY = {
    "enable_cache": True,
    "parameters": {
        "seed": 3,
        "data": {"name": "tiny", "test_fraction": 0.3},
        "model": {"name": "binaryfacenet", "channels": 8, "embedding": 16},
        "pretrain": {
            "epochs": 2,
            "batch_size": 8,
            "lr": 0.01,
            "schedule": {"kind": "step", "milestones": [1]},
        },  # 0.1 diverges (NaN) on 15 ids
        "finetune": {
            "epochs": 1,
            "batch_size": 8,
            "lr": 0.01,
            "schedule": {"kind": "constant"},
            "degrade": {"kind": "fixed", "probability": 0.5},
        },
        "evaluation": {"resolutions": [7, 14], "pairs": 40, "folds": 5},
        "export": {"parity_min_cosine": 0.9, "parity_samples": 4},
        "latency": {"budget_ms": {"raspberry-pi-4": 1000}},
        "registry": {"model_name": "tinyfacenet", "compare_metric": "eval.tiny.hr_lr.14.acc"},
    },
}


@pytest.fixture(scope="module")
def project(session_tmp):
    """A DVC repo holding a tiny synthetic set, and the local MLflow stack, activated."""
    from vlrface.data.fixtures.lfw import write_lfw
    from vlrface.data.synthetic import write_casia_layout
    from vlrface.stack import ensure_local_stack

    proj = session_tmp / "project"
    root = proj / "data" / "casia-webface-synthetic"
    write_casia_layout(root, identities=14, images_per_identity=4, seed=3, progress=False)
    write_lfw(proj / "lfw")  # a benchmark protocol run by the evaluate step (outside DVC's data)
    dvc("init", "--no-scm", "-q", cwd=proj)
    dvc("add", "-q", "data", cwd=proj)
    ensure_local_stack(session_tmp / "mlflow", ["train_binaryfacenet"])
    return proj


def write_config(project, name, **overrides):
    cfg = json.loads(json.dumps(TINY))
    params = cfg["parameters"]
    params["data"].update(
        root=str(project / "data" / "casia-webface-synthetic"), dvc_file=str(project / "data.dvc")
    )
    params["evaluation"]["protocols"] = [
        {"name": "lfw", "root": str(project / "lfw"), "resolutions": [7, 14]}
    ]
    for section, values in overrides.items():
        if section == "enable_cache":
            cfg["enable_cache"] = values
        else:
            params.setdefault(section, {}).update(values)
    path = project / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(config_path):
    from zenml.client import Client

    from pipelines import train_binaryfacenet

    response = train_binaryfacenet.with_options(config_path=str(config_path))()
    return Client().get_pipeline_run(response.id)


def statuses(run_):
    return {name: str(step.status) for name, step in run_.steps.items()}


def mlflow_client():
    """ZenML's tracker resets MLflow's global URI after each step: name it explicitly."""
    from mlflow import MlflowClient

    return MlflowClient(os.environ["VLRFACE_TEST_MLFLOW_URI"])


def mlflow_run_metrics(run_):
    client = mlflow_client()
    exp = client.get_experiment_by_name("train_binaryfacenet")
    runs = client.search_runs([exp.experiment_id], f"attributes.run_name = '{run_.name}'")
    assert len(runs) == 1, f"expected one MLflow run named {run_.name}"
    return runs[0].data.metrics, runs[0].data.tags


@pytest.fixture(scope="module")
def first_run(project):
    return run(write_config(project, "tiny"))


def test_first_run_completes_and_becomes_champion(project, first_run):
    from vlrface.data.versioning import read_pointer

    assert str(first_run.status) == "completed"
    steps = statuses(first_run)
    assert set(steps) == {
        "load_data",
        "align_data",
        "validate_data",
        "pretrain_model",
        "finetune_model",
        "evaluate_model",
        "export_lce",
        "latency_gate",
        "register_pretrained",
        "register_finetuned",
        "register_model",
    }
    assert set(steps.values()) == {"completed"}

    metrics, tags = mlflow_run_metrics(first_run)
    for res in (112, 7, 14):
        variant = "hr_hr" if res == 112 else "hr_lr"
        for m in ("acc", "acc_std", "tar_far_1e-3", "threshold_far_1e-3"):
            assert f"eval.tiny.{variant}.{res}.{m}" in metrics
    for variant in ("hr_lr", "lr_lr"):  # the LFW protocol of evaluation.protocols
        for m in ("acc", "acc_std", "tar_far_1e-3"):
            assert f"eval.lfw.{variant}.14.{m}" in metrics
    assert "latency.raspberry-pi-4.ms" in metrics
    assert tags["latency.source"] == "estimated"
    exp = mlflow_client().get_experiment_by_name("train_binaryfacenet")
    (mrun,) = mlflow_client().search_runs(
        [exp.experiment_id], f"attributes.run_name = '{first_run.name}'"
    )
    figures = {a.path for a in mlflow_client().list_artifacts(mrun.info.run_id, "eval/lfw")}
    assert {"eval/lfw/roc_lfw.png", "eval/lfw/det_lfw.png", "eval/lfw/metrics.json"} <= figures
    assert tags["data.synthetic"] == "true"
    assert tags["data.align"] == "auto" and tags["data.align.applied"] == "none (aligned release)"

    client = mlflow_client()
    version = client.get_model_version_by_alias("tinyfacenet", "champion")
    assert int(version.version) == 1
    vt = version.tags
    assert vt["dvc_md5"] == read_pointer(project / "data.dvc").md5
    for key in (
        "git_sha",
        "git_dirty",
        "config_hash",
        "seed",
        "pkg.tensorflow",
        "pkg.larq",
        "pkg.larq-compute-engine",
        "pkg.zenml",
        "pkg.mlflow",
        "sha256.backbone.keras",
        "sha256.artifacts/tinyfacenet.tflite",
        "sha256.MLmodel",
    ):
        assert vt[key], key
    assert vt["seed"] == "3"
    # each training stage is a registered version of its own, linked both ways
    client = mlflow_client()
    assert vt["lineage.pretrained"] == "tinyfacenet-pretrained/1"
    assert vt["lineage.finetuned"] == "tinyfacenet-finetuned/1"
    fine = client.get_model_version("tinyfacenet-finetuned", "1").tags
    assert fine["lineage.pretrained"] == "tinyfacenet-pretrained/1"
    assert fine["lineage.exported"] == "tinyfacenet/1" and fine["dvc_md5"] == vt["dvc_md5"]
    assert fine["sha256.backbone.keras"] and "metric.finetune.loss" in fine
    pre = client.get_model_version("tinyfacenet-pretrained", "1").tags
    assert pre["stage"] == "pretrain" and pre["config_hash"] == vt["config_hash"]
    assert vt["promotion.decision"] == "promoted"
    assert {vt["gate.data"], vt["gate.parity"], vt["gate.latency"]} == {"passed"}


def test_unchanged_inputs_come_from_cache(project, first_run):
    second = run(write_config(project, "tiny"))
    assert set(statuses(second).values()) == {"cached"}
    assert len(mlflow_client().search_model_versions("name='tinyfacenet'")) == 1


def test_failed_gate_registers_but_does_not_promote(project, first_run):
    failing = run(
        write_config(project, "tiny_gate", latency={"budget_ms": {"raspberry-pi-4": 0.001}})
    )
    steps = statuses(failing)
    assert steps["pretrain_model"] == "cached" and steps["evaluate_model"] == "cached"
    assert steps["latency_gate"] == "completed" and steps["register_model"] == "completed"
    client = mlflow_client()
    v2 = client.get_model_version("tinyfacenet", "2")
    assert v2.tags["gate.latency"] == "failed"
    assert v2.tags["promotion.decision"] == "refused"
    assert "gate 'latency' failed" in v2.tags["promotion.reasons"]
    assert client.get_model_version_by_alias("tinyfacenet", "champion").version == 1


def test_repeated_run_gives_identical_metrics(project, first_run):
    again = run(write_config(project, "tiny_nocache", enable_cache=False))
    assert set(statuses(again).values()) == {"completed"}
    first, _ = mlflow_run_metrics(first_run)
    second, _ = mlflow_run_metrics(again)
    # every evaluation and parity figure; not the flatbuffer's byte size, which varies with the
    # op names TensorFlow generates at each conversion
    evals = {k: v for k, v in first.items() if k.startswith(("eval.", "export.lce.parity"))}
    assert evals and {k: second[k] for k in evals} == evals


def test_models_list_json(project, first_run):
    out = subprocess.run(
        [sys.executable, "-m", "vlrface", "models", "list", "--name", "tinyfacenet", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(out.stdout)
    assert [r["version"] for r in rows][-1] == 1
    champion = [r for r in rows if "champion" in r["aliases"]]
    assert len(champion) == 1 and champion[0]["name"] == "tinyfacenet"
    assert champion[0]["gates"] == {"data": True, "parity": True, "latency": True}


def test_champion_is_served_by_mlflow_pyfunc(project, first_run):
    """The registered version is an MLflow pyfunc model: ``vlrface verify`` loads
    ``models:/tinyfacenet@champion`` and scores a face against itself 1.0, and its descriptor
    is the LCE interpreter's on the registered flatbuffer (flip-summed, L2-normalised)."""
    import mlflow

    from vlrface.embedders import LCEEmbedder, embed_images
    from vlrface.preprocess import decode_rgb, normalize
    from vlrface.serving import encode_image

    root = project / "data" / "casia-webface-synthetic"
    face = sorted(sorted(p for p in root.iterdir() if p.is_dir())[0].glob("*.jpg"))[0]
    uri, store = "models:/tinyfacenet@champion", os.environ["VLRFACE_TEST_MLFLOW_URI"]
    out = subprocess.run(
        [sys.executable, "-m", "vlrface", "verify", str(face), str(face), "--json", "--model", uri],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": store},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    answer = json.loads(out.stdout)
    assert answer["score"] == pytest.approx(1.0, abs=1e-5)
    # the threshold calibrated on the held-out split decides; the synthetic origin is said
    version = mlflow_client().get_model_version_by_alias("tinyfacenet", "champion")
    threshold = float(version.tags["verification.threshold"])
    assert version.tags["verification.threshold_metric"] == "eval.tiny.hr_hr.112.threshold_far_1e-3"
    assert answer["threshold"] == pytest.approx(threshold, rel=1e-5)
    assert answer["same"] == (answer["score"] > answer["threshold"])
    assert "SYNTHETIC" in answer["warning"] and version.tags["data.synthetic"] == "true"

    mlflow.set_tracking_uri(store)
    served = mlflow.pyfunc.load_model(uri)
    got = np.array(served.predict(pd.DataFrame({"image": [encode_image(face)]}))["embedding"][0])
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    flatbuffer = (folder / "artifacts" / "tinyfacenet.tflite").read_bytes()
    faces = normalize(decode_rgb(face.read_bytes(), 112, str(face))[None])
    want = embed_images(LCEEmbedder(flatbuffer), faces, flip=True)[0]
    np.testing.assert_allclose(got, want, atol=1e-6)


def versions():
    return len(mlflow_client().search_model_versions("name='tinyfacenet'"))


def test_unknown_key_stops_before_any_step(project, first_run):
    from pipelines import train_binaryfacenet
    from vlrface.errors import ConfigError

    before = versions()
    bad = write_config(project, "tiny_typo", pretrain={"epocs": 3})
    with pytest.raises(ConfigError, match=r"unknown key 'pretrain\.epocs'"):
        train_binaryfacenet.with_options(config_path=str(bad))()
    assert versions() == before


def test_cli_prints_one_line_error_for_a_bad_config(project):
    bad = write_config(project, "tiny_typo_cli", finetune={"vlr": {"probabilty": 0.5}})
    out = subprocess.run(
        [
            str(Path(sys.executable).with_name("zenml")),
            "pipeline",
            "run",
            "pipelines.train_binaryfacenet",
            "-c",
            str(bad),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "Error: parameters: unknown key 'finetune.vlr.probabilty'" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr + out.stdout


def test_missing_data_root_and_corrupt_image_register_nothing(project, first_run, session_tmp):
    from vlrface.data.synthetic import write_casia_layout
    from vlrface.errors import DataError

    before = versions()
    with pytest.raises(DataError, match="data root does not exist"):
        run(write_config(project, "tiny_noroot", data={"root": str(project / "data" / "missing")}))

    broken = session_tmp / "broken"
    root = broken / "data" / "casia-webface-synthetic"
    write_casia_layout(root, identities=14, images_per_identity=4, seed=3, progress=False)
    jpg = root / "0000004" / "003.jpg"
    jpg.write_bytes(jpg.read_bytes()[:100])
    dvc("init", "--no-scm", "-q", cwd=broken)
    dvc("add", "-q", "data", cwd=broken)
    cfg = write_config(
        project, "tiny_broken", data={"root": str(root), "dvc_file": str(broken / "data.dvc")}
    )
    from zenml.client import Client

    from pipelines import train_binaryfacenet

    with pytest.raises(RuntimeError, match="validate_data"):
        train_binaryfacenet.with_options(config_path=str(cfg))()
    failed = Client().get_pipeline("train_binaryfacenet").last_run
    steps = statuses(failed)
    assert steps["load_data"] == "completed" and steps["validate_data"] == "failed"
    assert "pretrain_model" not in steps or steps["pretrain_model"] != "completed"
    assert versions() == before


def test_pretrained_checkpoint_replaces_pretraining(project, first_run, shared_dir):
    checkpoint = shared_dir / "reference" / "binaryfacenet_ms1m_retina_epoch19.h5"
    cfg = write_config(
        project,
        "tiny_pretrained",
        model={"channels": 64, "embedding": 128, "pretrained": str(checkpoint)},
        finetune={"epochs": 1, "batch_size": 16},
        registry={"model_name": "tinyfacenet_pretrained"},
    )
    run_ = run(cfg)
    steps = statuses(run_)
    assert "pretrain_model" not in steps and steps["load_pretrained"] == "completed"
    assert steps["register_model"] == "completed"
    _, tags = mlflow_run_metrics(run_)
    assert tags["pretrained.sha256"].startswith("8af82b31969ebe57")


def test_new_data_version_reruns_and_challenges_the_champion(project, first_run, session_tmp):
    """Retraining on new data: one more identity through DVC changes data.dvc's md5, so the
    steps that read the data, and everything after them, run again; the new model is
    registered as a challenger and judged against the champion on the compare metric."""
    import shutil

    from vlrface.data.synthetic import write_casia_layout

    root = project / "data" / "casia-webface-synthetic"
    md5 = lambda: yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]  # noqa: E731
    before, client = md5(), mlflow_client()
    versions = len(client.search_model_versions("name='tinyfacenet'"))
    more = write_casia_layout(session_tmp / "more", 15, 4, seed=3, progress=False)
    new = sorted({p.name for p in more.iterdir() if p.is_dir()} - {p.name for p in root.iterdir()})
    assert len(new) == 1
    shutil.copytree(more / new[0], root / new[0])
    dvc("add", "-q", "data", cwd=project)
    assert md5() != before

    retrained = run(write_config(project, "tiny"))  # the first run's config, unchanged
    assert set(statuses(retrained).values()) == {"completed"}
    latest = client.get_model_version("tinyfacenet", str(versions + 1))
    assert latest.tags["dvc_md5"] == md5()
    assert latest.tags["promotion.decision"] in ("promoted", "refused")
    _, tags = mlflow_run_metrics(retrained)
    assert tags["data.dvc_md5"] == md5() and tags["registry.version"] == str(latest.version)
