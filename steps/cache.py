"""What each step's cache key covers beyond ZenML's default (the step's own code, its
parameters and its input artifacts): the library code the step calls.

A step's result is reused exactly when its inputs (the data version, which travels as the DVC
md5 parameter of ``load_data``; the configuration; upstream artifacts) and this code are
unchanged. Edit ``vlrface/training/keras.py`` and training and everything downstream runs again;
edit ``vlrface/latency/devices.yaml`` and only the latency gate and registration do.
"""

from zenml.config.cache_policy import CachePolicy

from vlrface.provenance import code_hash

COMMON = ("_keras.py", "config/common.py", "errors.py", "fileio.py", "preprocess.py")


def data_code() -> str:
    return code_hash(*COMMON, "data", "align.py")


def training_code() -> str:
    return code_hash(
        *COMMON,
        "config/keras.py",
        "training/common.py",
        "training/keras.py",
        "models",
        "losses",
        "degrade.py",
        "data",
        "materializers.py",
    )


def torch_training_code() -> str:
    return code_hash(
        *COMMON,
        "config/torch.py",
        "training/common.py",
        "training/torch.py",
        "models",
        "losses",
        "degrade.py",
        "data",
    )


def evaluation_code() -> str:
    return code_hash(*COMMON, "protocols", "embedders.py", "degrade.py", "reports")


def export_code() -> str:
    return code_hash(*COMMON, "export", "embedders.py", "models")


def latency_code() -> str:
    return code_hash(*COMMON, "latency")


def registry_code() -> str:
    return code_hash(
        *COMMON, "registry.py", "promotion.py", "provenance.py", "reports", "serving.py"
    )


def policy(cache_func) -> CachePolicy:
    """ZenML's default policy plus ``cache_func``'s code hash."""
    return CachePolicy(cache_func=cache_func)


DATA = policy(data_code)
TRAINING = policy(training_code)
TORCH_TRAINING = policy(torch_training_code)
EVALUATION = policy(evaluation_code)
EXPORT = policy(export_code)
LATENCY = policy(latency_code)
REGISTRY = policy(registry_code)
