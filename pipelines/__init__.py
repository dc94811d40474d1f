"""ZenML pipelines, one module per model family they build:
``zenml pipeline run pipelines.<name> -c configs/<profile>.yaml`` (``train_binaryfacenet`` also
by its bare name, through the top-level ``train_binaryfacenet.py``).

- ``binaryfacenet.py``: ``train_binaryfacenet`` (Keras/Larq, exported to an LCE flatbuffer)
- ``pytorch.py``: ``train_squeezefaceposenet`` and ``train_crossres`` (PyTorch, exported to ONNX)
- ``common.py``: the data steps both tracks run (load, align, validate)
"""

from pipelines.binaryfacenet import train_binaryfacenet
from pipelines.pytorch import train_crossres, train_squeezefaceposenet

PIPELINES = {
    "train_binaryfacenet": train_binaryfacenet,
    "train_crossres": train_crossres,
    "train_squeezefaceposenet": train_squeezefaceposenet,
}

__all__ = [
    "PIPELINES",
    "train_binaryfacenet",
    "train_crossres",
    "train_squeezefaceposenet",
]
