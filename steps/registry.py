"""Registration steps of both tracks: write the model folder, then ``vlrface.registration``
registers it with its provenance, promotes it if the promotion policy (``registry.policy``,
else ``registry.compare_metric``) passes and logs its model card."""

import tempfile
from pathlib import Path
from typing import Annotated

from zenml import log_metadata, step

from steps import cache
from vlrface import registration, serving
from vlrface._keras import tf
from vlrface.export.metrics import FORMAT_TAG, LCE, ONNX
from vlrface.fileio import write_atomic
from vlrface.keras_materializer import save_keras

TRACKER = True  # the active stack's experiment tracker, whatever its name


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
    (``vlrface.registration.register_stage``)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        save_keras(model, str(folder / "backbone.keras"))
        ref = registration.register_stage(folder, history, data_info, config, stage, parent)
    log_metadata(metadata={f"{stage}_version": ref})
    return ref


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
    served, verification = registration.serving_settings(metrics, data_info, config)
    with tempfile.TemporaryDirectory() as tmp:
        # an MLflow pyfunc model (serving.FaceDescriptor around the flatbuffer), so that
        # `mlflow models serve -m models:/<name>@champion` serves it; the Keras backbone beside it
        flatbuffer = Path(tmp) / f"{config['registry']['model_name']}.tflite"
        write_atomic(flatbuffer, tflite)
        folder = serving.save(Path(tmp) / "model", flatbuffer, int(model.input_shape[1]), **served)
        save_keras(model, str(folder / "backbone.keras"))
        result = registration.publish_exported(
            folder,
            metrics,
            LCE.metrics(export_report),
            export_report,
            latency_report,
            data_info,
            config,
            verification=verification,
            what=config["model"]["name"],
            extra_tags={FORMAT_TAG: LCE.name},
            pretrained=pretrained_version,
            finetuned=finetuned_version,
        )
    log_metadata(metadata={"promotion": result})
    return result


@step(experiment_tracker=TRACKER, cache_policy=cache.REGISTRY)
def register_torch(
    model: bytes,
    onnx: bytes,
    metrics: dict,
    export_report: dict,
    latency_report: dict,
    data_info: dict,
    config: dict,
) -> Annotated[dict, "promotion"]:
    """Register a version (an MLflow pyfunc serving the ONNX model with its own preprocessing;
    the torch checkpoint beside it, without pickle) with its provenance tags and model card;
    move ``champion`` if the promotion policy passes."""
    from vlrface.training import torch as tt

    served, verification = registration.serving_settings(metrics, data_info, config)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{config['registry']['model_name']}.onnx"
        write_atomic(path, onnx)
        folder = serving.save(Path(tmp) / "model", path, **served)
        weights, meta = tt.to_portable(model)  # weights as .npz, config and preprocessing JSON
        write_atomic(folder / "backbone.npz", weights)
        write_atomic(folder / "backbone.json", meta)
        result = registration.publish_exported(
            folder,
            metrics,
            ONNX.metrics(export_report, latency_report),
            export_report,
            latency_report,
            data_info,
            config,
            verification=verification,
            what=f"{config['model']['name']} (PyTorch, ONNX)",
            extra_tags={"framework": "pytorch", FORMAT_TAG: ONNX.name},
        )
    log_metadata(metadata={"promotion": result})
    return result
