"""ZenML pipelines: `zenml pipeline run pipelines.<name> -c configs/<profile>.yaml`."""

from pipelines.crossres import train_crossres
from pipelines.squeezefaceposenet import train_squeezefaceposenet
from pipelines.training import train_binaryfacenet

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
