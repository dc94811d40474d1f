"""Register the exported model in MLflow with its provenance; promote it if the promotion policy
(``registry.policy``, else ``registry.compare_metric``) passes; log its model card."""

import json
import numbers
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
from vlrface.promotion import evaluate, fallback_policy, load_policy
from vlrface.reports.model_card import render

TRACKER = "mlflow_tracker"


def _fmt(v) -> str:
    """Integers (MACs, bytes) exactly, other figures to 6 significant digits."""
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return str(int(v))
    return f"{float(v):.6g}"


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
    section = dict(config["registry"])
    policy_path = section.pop("policy", None)  # `registry.policy`, once the config schema has it
    cfg = RegistryConfig(**section)
    policy = (
        load_policy(policy_path)
        if policy_path
        else fallback_policy(cfg.compare_metric, cfg.min_improvement)
    )
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
    mlflow.log_dict(config, registry.CONFIG_ARTIFACT)
    census, parity = export_report["census"], export_report["parity"]
    # the export figures travel with the version, so a cached export step loses none of them
    efficiency = {
        "export.lce.parity.cosine_min": parity["cosine_min"],
        "export.lce.parity.max_abs_diff": parity["max_abs_diff"],
        "export.lce.binary_mac_share": census["binary_mac_share"],
        "export.lce.binary_macs": census["binary_macs"],
        "export.lce.float_macs": census["float_macs"],
        "export.lce.size_bytes": census["size_bytes"],
        "export.lce.int8_ops": census.get("int8_ops", 0),
    }
    devices = latency_report["devices"]
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
        **{f"metric.{k}": _fmt(v) for k, v in {**metrics, **efficiency}.items()},
        **{f"latency.{d}.ms": f"{r['ms']:.3f}" for d, r in devices.items()},
        **{f"latency.{d}.budget_ms": _fmt(r["budget_ms"]) for d, r in devices.items()},
        **{f"latency.{d}.source": r["source"] for d, r in devices.items()},
    }
    tags = {k: str(v) for k, v in tags.items()}
    current = registry.champion(client, cfg.model_name)
    decision = evaluate(
        policy,
        registry.record_from_tags(tags),
        registry.version_record(current) if current else None,
    )
    decision.name = cfg.model_name
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
        decision.version = int(version.version)
        mv = client.get_model_version(cfg.model_name, version.version)
        info = registry.card_inputs(client, mv)
        info["config"] = config
        if decision.promote:
            info["aliases"] = sorted({*info["aliases"], registry.CHAMPION})
        card = render(info, {**decision.as_dict(), "at": registry.now()[1], "by": "pipeline"})
        mlflow.log_text(card, registry.CARD)
        registry.record_decision(client, cfg.model_name, version.version, decision, policy)
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
