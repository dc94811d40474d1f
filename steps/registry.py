"""Register the exported model in MLflow with its provenance; promote it if every gate passed."""

import json
import tempfile
from pathlib import Path
from typing import Annotated

import mlflow
from mlflow import MlflowClient
from zenml import log_metadata, step

from vlrface import provenance, registry
from vlrface._keras import tf
from vlrface.config import RegistryConfig
from vlrface.export.lce import write_atomic
from vlrface.materializers import save_keras

TRACKER = "mlflow_tracker"


@step(experiment_tracker=TRACKER)
def register_model(
    model: tf.keras.Model,
    tflite: bytes,
    metrics: dict,
    export_report: dict,
    latency_report: dict,
    data_info: dict,
    config: dict,
) -> Annotated[dict, "promotion"]:
    """Register a version (Keras model + LCE flatbuffer) with tags; move ``champion`` if earned."""
    cfg = RegistryConfig(**config["registry"])
    run = mlflow.active_run()
    client = MlflowClient()
    gates = {
        "data": True,
        "parity": export_report["parity_passed"],
        "latency": latency_report["passed"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        save_keras(model, str(folder / "backbone.keras"))
        write_atomic(folder / f"{cfg.model_name}.tflite", tflite)
        files = {p.name: provenance.sha256_file(p) for p in sorted(folder.iterdir())}
        (folder / "files.json").write_text(json.dumps(files, indent=2))
        mlflow.log_artifacts(str(folder), "model")
    tags = {
        **provenance.git_state(),
        "dvc_md5": data_info["dvc_md5"],
        "data.synthetic": str(data_info["synthetic"]).lower(),
        "data.dataset": data_info["dataset"],
        "config_hash": provenance.config_hash(config),
        "seed": config["seed"],
        "latency.source": latency_report["source"],
        **{f"pkg.{k}": v for k, v in provenance.package_versions().items()},
        **{f"sha256.{k}": v for k, v in files.items()},
        **{f"gate.{k}": "passed" if v else "failed" for k, v in gates.items()},
        **{f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()},
        **{f"latency.{d}.ms": f"{r['ms']:.3f}" for d, r in latency_report["devices"].items()},
    }
    decision = registry.decide(
        client, cfg.model_name, {**metrics}, gates, cfg.compare_metric, cfg.min_improvement
    )
    synthetic = " on SYNTHETIC demo data" if data_info["synthetic"] else ""
    version = registry.register(
        client,
        cfg.model_name,
        f"{run.info.artifact_uri}/model",
        run.info.run_id,
        tags,
        description=(
            f"{config['model']['name']} trained{synthetic} (data md5 {data_info['dvc_md5']})"
        ),
    )
    try:
        registry.record_decision(client, cfg.model_name, version.version, decision)
    except BaseException:
        client.delete_model_version(cfg.model_name, version.version)  # never half-registered
        raise
    mlflow.set_tags(
        {
            "registry.version": version.version,
            "promotion.decision": "promoted" if decision.promote else "refused",
        }
    )
    result = {"name": cfg.model_name, "version": int(version.version), **decision.as_dict()}
    log_metadata(metadata={"promotion": result})
    return result
