"""ZenML materializer for numpy arrays that also describes an empty one.

ZenML's ``NumpyMaterializer`` records min, max, mean and std of every array a step returns;
on an empty array numpy's reduction raises ("zero-size array to reduction operation minimum
which has no identity") and ZenML logs "Failed to extract materializer metadata" for the
output. vlrface returns empty arrays on purpose (``load_pretrained``'s centres: a new margin
head for the fine-tune classes), so steps that may return one save it with this materializer:
the same ``.npy`` file, and shape and dtype as its metadata.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from zenml.integrations.numpy.materializers.numpy_materializer import NumpyMaterializer
from zenml.metadata.metadata_types import DType


class ArrayMaterializer(NumpyMaterializer):
    # named per output (``output_materializers``): ZenML's own stays the default for arrays
    SKIP_REGISTRATION: ClassVar[bool] = True

    def extract_metadata(self, arr: np.ndarray) -> dict[str, Any]:
        if arr.size == 0:  # no values to reduce: what there is to say is the shape
            return {"shape": tuple(arr.shape), "dtype": DType(arr.dtype.type)}
        return super().extract_metadata(arr)

    def save_visualizations(self, arr: np.ndarray) -> dict[str, Any]:
        return {} if arr.size == 0 else super().save_visualizations(arr)
