"""What each step's cache key covers beyond ZenML's default (the step function's own source, its
parameters and its input artifacts): its whole step module (so an edit to a helper beside the
step counts) and the library code the step calls (``PARTS``).

A step's result is reused exactly when its inputs (the data version, which travels as the DVC
md5 parameter of ``load_data``; the configuration; upstream artifacts) and this code are
unchanged. Edit ``vlrface/training/keras.py`` and Keras training and everything downstream runs
again; edit ``vlrface/latency/devices.yaml`` and only the latency gates and registration do.
``tests/test_cache_keys.py`` checks that every ``vlrface`` module a step imports (at the top of
its module or inside the step and the helpers it calls) is under its key's parts.
"""

from pathlib import Path

from zenml.config.cache_policy import CachePolicy

from vlrface.provenance import code_hash

ROOT = Path(__file__).resolve().parents[1]  # the repository: steps/ and vlrface/

COMMON = (
    "vlrface/_keras.py",
    "vlrface/config/common.py",
    "vlrface/errors.py",
    "vlrface/fileio.py",
    "vlrface/preprocess.py",
    "vlrface/runs.py",
    "vlrface/logs.py",
    "vlrface/progress.py",
)
TORCH = (  # a torch checkpoint: loading, preprocessing, the backbones and their heads
    "vlrface/config/torch.py",
    "vlrface/training/common.py",
    "vlrface/training/torch.py",
    "vlrface/models/torch",
    "vlrface/losses",
    "vlrface/degrade.py",
    "vlrface/data",
)

PARTS = {
    "data": ("steps/data.py", "vlrface/data", "vlrface/align.py"),
    "training": (
        "steps/training.py",
        "vlrface/config/keras.py",
        "vlrface/training/common.py",
        "vlrface/training/keras.py",
        "vlrface/models",
        "vlrface/losses",
        "vlrface/degrade.py",
        "vlrface/data",
        "vlrface/keras_materializer.py",
        "vlrface/array_materializer.py",
        "vlrface/embedders.py",  # inference passes (vlrface.training.keras.embedding_table)
        "vlrface/references.py",  # model.pretrained: a file or a registered version
        "vlrface/distributed.py",  # processes > 1: the stage runs on local worker processes
    ),
    "torch_training": ("steps/training.py", *TORCH, "vlrface/provenance.py"),
    "evaluation": (
        "steps/evaluation.py",
        "vlrface/protocols",
        "vlrface/embedders.py",
        "vlrface/degrade.py",
        "vlrface/reports",
        "vlrface/export",  # model: lce entries convert the model with LCE's converter
        "vlrface/models",
        "vlrface/keras_materializer.py",
    ),
    "onnx_evaluation": (
        "steps/evaluation.py",
        "vlrface/protocols",
        "vlrface/embedders.py",
        "vlrface/reports",
        *TORCH,  # SpecEmbedder and the model's own preprocessing
    ),
    "export": (
        "steps/export.py",
        "vlrface/config/keras.py",
        "vlrface/export",
        "vlrface/embedders.py",
        "vlrface/models",
        "vlrface/keras_materializer.py",
    ),
    "onnx_export": ("steps/export.py", "vlrface/export", "vlrface/embedders.py", *TORCH),
    "latency": (
        "steps/latency.py",
        "vlrface/config/keras.py",
        "vlrface/latency",
        "vlrface/export/parity.py",  # the emulated run's ARM vs x86 figures
    ),
    "onnx_latency": (
        "steps/latency.py",
        "vlrface/config/torch.py",
        "vlrface/latency",
        "vlrface/export/parity.py",
        "vlrface/embedders.py",
        "vlrface/models/torch",
    ),
    "registry": (
        "steps/registry.py",
        "vlrface/registration.py",
        "vlrface/registry.py",
        "vlrface/promotion.py",
        "vlrface/provenance.py",
        "vlrface/reports",
        "vlrface/serving.py",
        "vlrface/serving_model.py",
        "vlrface/keras_materializer.py",
        "vlrface/export/metrics.py",  # the export figures of each format
        *TORCH,  # a torch checkpoint is written without pickle (to_portable)
    ),
}


def key(name: str, root: Path | None = None) -> str:
    """The code hash of ``PARTS[name]`` plus ``COMMON``, paths relative to ``root`` (the repo)."""
    return code_hash(*COMMON, *PARTS[name], root=root or ROOT)


# ZenML loads a cache function by its import path: one plain function per key


def data_code() -> str:
    return key("data")


def training_code() -> str:
    return key("training")


def torch_training_code() -> str:
    return key("torch_training")


def evaluation_code() -> str:
    return key("evaluation")


def onnx_evaluation_code() -> str:
    return key("onnx_evaluation")


def export_code() -> str:
    return key("export")


def onnx_export_code() -> str:
    return key("onnx_export")


def latency_code() -> str:
    return key("latency")


def onnx_latency_code() -> str:
    return key("onnx_latency")


def registry_code() -> str:
    return key("registry")


def policy(cache_func) -> CachePolicy:
    """ZenML's default policy plus ``cache_func``'s code hash."""
    return CachePolicy(cache_func=cache_func)


DATA = policy(data_code)
TRAINING = policy(training_code)
TORCH_TRAINING = policy(torch_training_code)
EVALUATION = policy(evaluation_code)
ONNX_EVALUATION = policy(onnx_evaluation_code)
EXPORT = policy(export_code)
ONNX_EXPORT = policy(onnx_export_code)
LATENCY = policy(latency_code)
ONNX_LATENCY = policy(onnx_latency_code)
REGISTRY = policy(registry_code)
