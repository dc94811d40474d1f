"""Registering a trained model in MLflow: the version's provenance, gate and metric tags, its
files' sha256, the promotion decision under the configured policy, the model card and the
lineage links between stage versions. Framework-free: the caller writes the model folder (a
Keras backbone, an LCE flatbuffer, an ONNX model) and calls ``publish`` or ``register_stage``
from inside its MLflow run (the registration steps of both tracks do).
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from vlrface import provenance, registry
from vlrface.config.common import RegistryConfig
from vlrface.promotion import fallback_policy, load_policy
from vlrface.reports.model_card import render


def fmt(v) -> str:
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


def lineage_tags(pretrained: dict | None, finetuned: dict | None) -> dict:
    """``lineage.<stage>`` = ``<registered name>/<version>`` of the stages a model came from."""
    return {
        f"lineage.{key}": f"{ref['name']}/{ref['version']}"
        for key, ref in (("pretrained", pretrained), ("finetuned", finetuned))
        if ref
    }


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path, also written to files.json."""
    files = {
        p.relative_to(folder).as_posix(): provenance.sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    (folder / "files.json").write_text(json.dumps(files, indent=2))
    return files


def register_stage(
    folder: Path, history: list, data_info: dict, config: dict, stage: str, parent: dict | None
) -> dict:
    """Register one training stage's backbone (``folder``, written by the caller) as a version
    of ``<model_name>-<stage>`` (``binaryfacenet-pretrained``, ``binaryfacenet-finetuned``),
    with the provenance tags, its final training figures and ``lineage.pretrained`` pointing at
    its parent stage; returns ``{"name", "version"}``."""
    cfg = RegistryConfig(**config["registry"])
    name = registry.stage_model_name(cfg.model_name, stage)
    run, client = mlflow.active_run(), MlflowClient()
    files = file_digests(folder)
    mlflow.log_artifacts(str(folder), f"stages/{stage}")
    final = {k: v for k, v in (history[-1] if history else {}).items() if k != "epoch"}
    tags = {
        **provenance_tags(data_info, config),
        **lineage_tags(parent, None),
        "stage": stage,
        **{f"sha256.{k}": v for k, v in files.items()},
        **{f"metric.{stage}.{k}": fmt(v) for k, v in final.items()},
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
    files = file_digests(folder)
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
        **{f"metric.{k}": fmt(v) for k, v in metrics.items()},
        **{f"latency.{d}.ms": f"{r['ms']:.3f}" for d, r in timed.items()},
        **{f"latency.{d}.budget_ms": fmt(r["budget_ms"]) for d, r in timed.items()},
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


def publish_exported(
    folder: Path,
    metrics: dict,
    export_metrics: dict,
    export_report: dict,
    latency_report: dict,
    data_info: dict,
    config: dict,
    *,
    verification: dict,
    what: str,
    extra_tags: dict | None = None,
    pretrained: dict | None = None,
    finetuned: dict | None = None,
) -> dict:
    """``publish`` an exported model's folder with every tag a version carries: provenance,
    lineage (``pretrained``/``finetuned`` stage versions, linked back), gates, metrics, latency
    and the serving threshold (``verification``, from ``serving_settings``). ``what`` names the
    model in the description (e.g. ``binaryfacenet``, ``squeezefaceposenet (PyTorch, ONNX)``)."""
    cfg = RegistryConfig(**config["registry"])
    tags = {
        **provenance_tags(data_info, config),
        **(extra_tags or {}),
        **lineage_tags(pretrained, finetuned),
        **gate_tags(export_report, latency_report, {**metrics, **export_metrics}),
        **verification,
    }
    description = f"{what} trained{synthetic_note(data_info)} (data md5 {data_info['dvc_md5']})"
    return publish(cfg, folder, tags, config, description, (pretrained, finetuned))
