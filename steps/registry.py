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

from steps import cache
from vlrface import provenance, registry, serving
from vlrface._keras import tf
from vlrface.config.common import RegistryConfig
from vlrface.export.lce import write_atomic
from vlrface.materializers import save_keras
from vlrface.promotion import fallback_policy, load_policy
from vlrface.reports.model_card import render

TRACKER = True  # the active stack's experiment tracker, whatever its name


def _fmt(v) -> str:
    """Integers (MACs, bytes) exactly, other figures to 6 significant digits."""
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return str(int(v))
    return f"{float(v):.6g}"


def provenance_tags(data_info: dict, config: dict) -> dict:
    """The tags every registered version carries: data version, config, seed, code, packages."""
    return {
        **provenance.git_state(),
        "dvc_md5": data_info["dvc_md5"],
        "data.synthetic": str(data_info["synthetic"]).lower(),
        "data.dataset": data_info["dataset"],
        "config_hash": provenance.config_hash(config),
        "seed": config["seed"],
        **{f"pkg.{k}": v for k, v in provenance.package_versions().items()},
    }


def _lineage(pretrained: dict | None, finetuned: dict | None) -> dict:
    """``lineage.<stage>`` = ``<registered name>/<version>`` of the stages a model came from."""
    return {
        f"lineage.{key}": f"{ref['name']}/{ref['version']}"
        for key, ref in (("pretrained", pretrained), ("finetuned", finetuned))
        if ref
    }


def _files(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path, also written to files.json."""
    files = {
        p.relative_to(folder).as_posix(): provenance.sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    (folder / "files.json").write_text(json.dumps(files, indent=2))
    return files


@step(experiment_tracker=TRACKER, cache_policy=cache.REGISTRY)
def register_stage(
    model: tf.keras.Model,
    history: list,
    data_info: dict,
    config: dict,
    stage: str,
    parent: dict | None = None,
) -> Annotated[dict, "stage_version"]:
    """Register one training stage's Keras backbone as a version of ``<model_name>-<stage>``
    (``binaryfacenet-pretrained``, ``binaryfacenet-finetuned``), with the provenance tags, its
    final training figures and ``lineage.pretrained`` pointing at its parent stage."""
    cfg = RegistryConfig(**config["registry"])
    name = registry.stage_model_name(cfg.model_name, stage)
    run, client = mlflow.active_run(), MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        save_keras(model, str(folder / "backbone.keras"))
        files = _files(folder)
        mlflow.log_artifacts(str(folder), f"stages/{stage}")
    final = {k: v for k, v in (history[-1] if history else {}).items() if k != "epoch"}
    tags = {
        **provenance_tags(data_info, config),
        **_lineage(parent, None),
        "stage": stage,
        **{f"sha256.{k}": v for k, v in files.items()},
        **{f"metric.{stage}.{k}": _fmt(v) for k, v in final.items()},
    }
    if pretrained := config["model"].get("pretrained"):
        tags["lineage.checkpoint"] = pretrained
    version = registry.register(
        client,
        name,
        f"{run.info.artifact_uri}/stages/{stage}",
        run.info.run_id,
        {k: str(v) for k, v in tags.items()},
        description=f"{config['model']['name']} after {stage} (data md5 {data_info['dvc_md5']})",
    )
    mlflow.set_tag(f"registry.{stage}.version", f"{name}/{version.version}")
    ref = {"name": name, "version": int(version.version)}
    log_metadata(metadata={f"{stage}_version": ref})
    return ref


def promotion_policy(cfg: RegistryConfig):
    """``registry.policy``'s file, else ``compare_metric``/``min_improvement`` with every gate."""
    if cfg.policy:
        return load_policy(cfg.policy)
    return fallback_policy(cfg.compare_metric, cfg.min_improvement)


def publish(
    cfg: RegistryConfig,
    folder: Path,
    tags: dict,
    config: dict,
    description: str,
    links: tuple[dict | None, ...] = (),
) -> dict:
    """Log ``folder`` as the run's ``model`` (with ``files.json``), register it with ``tags``
    plus the sha256 of every file, decide promotion under the configured policy, log the model
    card and record the decision; a failure after registering deletes the version (never
    half-registered). ``links``: stage versions to tag ``lineage.exported`` with this one."""
    run, client = mlflow.active_run(), MlflowClient()
    policy = promotion_policy(cfg)
    files = _files(folder)
    mlflow.log_artifacts(str(folder), "model")
    mlflow.log_dict(config, registry.CONFIG_ARTIFACT)
    tags = {k: str(v) for k, v in {**tags, **{f"sha256.{k}": v for k, v in files.items()}}.items()}
    version = registry.register(
        client, cfg.model_name, f"{run.info.artifact_uri}/model", run.info.run_id, tags, description
    )
    try:
        mv = client.get_model_version(cfg.model_name, version.version)
        # judged against the champion read under the lock, recorded before it is released
        with registry.champion_lock(client, cfg.model_name):
            registry.reconcile(client, cfg.model_name)
            decision = registry.decide(client, cfg.model_name, policy, mv)
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
    for stage in links:
        if stage:  # the forward link: which exported version a stage's model went into
            client.set_model_version_tag(
                stage["name"],
                str(stage["version"]),
                "lineage.exported",
                f"{cfg.model_name}/{version.version}",
            )
    mlflow.set_tags(
        {
            "registry.version": version.version,
            "promotion.decision": "promoted" if decision.promote else "refused",
        }
    )
    result = {"name": cfg.model_name, "version": int(version.version), **decision.as_dict()}
    log_metadata(metadata={"promotion": result})
    return result


def gate_tags(export_report: dict, latency_report: dict, metrics: dict) -> dict:
    """The pipeline gates (data: the run got past validation; parity; latency), metrics and
    per-device latency (with its source) as version tags; a device without a figure
    (``source: unavailable``) gets only its source: no budget to judge it against."""
    gates = {
        "data": True,
        "parity": export_report["parity_passed"],
        "latency": latency_report["passed"],
    }
    devices = latency_report["devices"]
    timed = {d: r for d, r in devices.items() if r.get("ms") is not None}
    return {
        "latency.source": latency_report["source"],
        **{f"gate.{k}": "passed" if v else "failed" for k, v in gates.items()},
        **{f"metric.{k}": _fmt(v) for k, v in metrics.items()},
        **{f"latency.{d}.ms": f"{r['ms']:.3f}" for d, r in timed.items()},
        **{f"latency.{d}.budget_ms": _fmt(r["budget_ms"]) for d, r in timed.items()},
        **{f"latency.{d}.source": r["source"] for d, r in devices.items()},
    }


def synthetic_note(data_info: dict) -> str:
    return " on SYNTHETIC demo data" if data_info["synthetic"] else ""


def serving_settings(metrics: dict, data_info: dict, config: dict) -> tuple[dict, dict]:
    """``(serving.save keywords, version tags)``: the verification threshold calibrated on the
    run's held-out evaluation (the HR-HR score at FAR ``evaluation.far``), so ``vlrface verify``
    decides same / different, and whether the model learnt from synthetic faces (every
    ``verify`` / ``identify`` answer says so)."""
    from vlrface.protocols.verification import threshold_suffix, verification_threshold

    data, far = config["data"], config["evaluation"]["far"]
    threshold = verification_threshold(metrics, data["name"], data["image_size"], far)
    source = f"eval.{data['name']}.hr_hr.{data['image_size']}.{threshold_suffix(far)}"
    tags = {"data.align": data.get("align", "auto")}
    if threshold is not None:
        tags.update(
            {
                "verification.threshold": f"{threshold:.6g}",
                "verification.far": f"{far:g}",
                "verification.threshold_metric": source,
            }
        )
    return {"threshold": threshold, "synthetic": bool(data_info["synthetic"])}, tags


@step(experiment_tracker=TRACKER, cache_policy=cache.REGISTRY)
def register_model(
    model: tf.keras.Model,
    tflite: bytes,
    metrics: dict,
    export_report: dict,
    latency_report: dict,
    data_info: dict,
    config: dict,
    pretrained_version: dict | None = None,
    finetuned_version: dict | None = None,
) -> Annotated[dict, "promotion"]:
    """Register a version (an MLflow pyfunc serving the LCE flatbuffer, the Keras backbone
    beside it) with its provenance; move ``champion`` if the promotion policy passes."""
    cfg = RegistryConfig(**config["registry"])
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
    tags = {
        **provenance_tags(data_info, config),
        **_lineage(pretrained_version, finetuned_version),
        **gate_tags(export_report, latency_report, {**metrics, **efficiency}),
    }
    served, verification = serving_settings(metrics, data_info, config)
    tags.update(verification)
    description = (
        f"{config['model']['name']} trained{synthetic_note(data_info)} "
        f"(data md5 {data_info['dvc_md5']})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        # an MLflow pyfunc model (serving.FaceDescriptor around the flatbuffer), so that
        # `mlflow models serve -m models:/<name>@champion` serves it; the Keras backbone beside it
        flatbuffer = Path(tmp) / f"{cfg.model_name}.tflite"
        write_atomic(flatbuffer, tflite)
        folder = serving.save(Path(tmp) / "model", flatbuffer, int(model.input_shape[1]), **served)
        save_keras(model, str(folder / "backbone.keras"))
        return publish(
            cfg, folder, tags, config, description, (pretrained_version, finetuned_version)
        )
