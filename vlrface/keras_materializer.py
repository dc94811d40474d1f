"""ZenML materializer for Keras (larq) models: saved as a ``.keras`` file, never pickled.

ZenML's TensorFlow integration pins TF < 2.15 and is not installed, so without this Keras
models would fall back to cloudpickle. Custom layers (larq's, vlrface's) are registered Keras
serializables, so ``load_model`` rebuilds them from the file alone.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, ClassVar

from zenml.enums import ArtifactType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

import vlrface.losses.keras  # noqa: F401  (registers the margin heads)
import vlrface.models.keras.binaryfacenet  # noqa: F401  (registers GroupedQuantConv2D)
from vlrface._keras import load_keras, save_keras, tf

__all__ = ["KerasModelMaterializer", "load_keras", "save_keras"]

FILENAME = "model.keras"


class KerasModelMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (tf.keras.Model,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def save(self, data: tf.keras.Model) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, FILENAME)
            save_keras(data, local)
            fileio.copy(local, os.path.join(self.uri, FILENAME), overwrite=True)

    def load(self, data_type: type[Any]) -> tf.keras.Model:
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, FILENAME)
            fileio.copy(os.path.join(self.uri, FILENAME), local)
            return load_keras(local)

    def extract_metadata(self, data: tf.keras.Model) -> dict:
        return {"parameters": int(data.count_params()), "keras_name": data.name}
