"""ZenML pipelines: `zenml pipeline run pipelines.<name> -c configs/<profile>.yaml`."""

from pipelines.training import train_binaryfacenet

PIPELINES = {"train_binaryfacenet": train_binaryfacenet}

__all__ = ["PIPELINES", "train_binaryfacenet"]
