"""TensorFlow with Keras 2 (tf-keras), the only Keras larq and LCE work with.

Import ``tf`` from here, never ``tensorflow`` directly: ``TF_USE_LEGACY_KERAS=1`` must be set
before TensorFlow is first imported, or ``tf.keras`` is Keras 3 and ``import larq`` fails.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

if not tf.keras.Model.__module__.startswith("tf_keras"):  # pragma: no cover - env set above
    raise ImportError(
        f"tf.keras is Keras 3 ({tf.keras.Model.__module__}); larq needs tf-keras 2.x: set "
        "TF_USE_LEGACY_KERAS=1 before TensorFlow is imported (vlrface sets it when imported first)"
    )

__all__ = ["load_keras", "save_keras", "tf"]


def custom_objects() -> dict:
    """The only classes beyond Keras' own that loading a vlrface Keras model may rebuild, named
    as they are serialised: larq's layers, quantizers and constraints, and vlrface's layers.
    Loads pass them explicitly with ``safe_mode=True`` (no lambdas, no arbitrary code)."""
    import larq as lq

    from vlrface.export.lce_int8 import FakeQuant
    from vlrface.losses.heads import LOSSES, head_class
    from vlrface.models.keras.binaryfacenet import GroupedQuantConv2D
    from vlrface.models.keras.quicknet import BinomialBlur

    objects = {}
    for module in (lq.layers, lq.quantizers, lq.constraints):
        for name in getattr(module, "__all__", []):
            objects[name] = getattr(module, name)
    heads = [head_class(kind, "keras") for kind in LOSSES]  # every loss head of the table
    for cls in (FakeQuant, *heads, GroupedQuantConv2D, BinomialBlur):
        objects[f"vlrface>{cls.__name__}"] = cls
    return objects


def save_keras(model: tf.keras.Model, path: str) -> None:
    model.save(path)


def load_keras(path: str) -> tf.keras.Model:
    """A ``.keras`` file with the explicit custom objects and ``safe_mode`` (no code runs)."""
    return tf.keras.models.load_model(
        path, custom_objects=custom_objects(), compile=False, safe_mode=True
    )
