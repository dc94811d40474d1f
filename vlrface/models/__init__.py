"""Face backbones, selectable by name in the pipeline configuration and the CLI: the Keras
(larq/LCE) zoo in ``vlrface.models.keras``, the PyTorch one in ``vlrface.models.torch``."""
