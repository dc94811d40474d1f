"""The Keras (larq, exported to LCE) backbones of the zoo (``vlrface.models.zoo``), built by
name from the zoo table."""

from __future__ import annotations

from vlrface.models import zoo

ZOO = zoo.names("keras")


def build_named(name: str, embedding: int = 128, output_head: bool = True, **options):
    """A freshly initialised zoo model by name, at its paper's defaults (``options``: the
    row's model-config options, e.g. ``channels``)."""
    row = zoo.entry(name, "keras")
    return zoo.resolve(row.builder)(
        **row.args, embedding=embedding, output_head=output_head, **options
    )


def build_model(cfg):
    """Build the backbone named by a ``vlrface.config.keras.ModelConfig``."""
    row = zoo.entry(cfg.name, "keras")
    options = {k: getattr(cfg, k) for k in row.options if getattr(cfg, k) is not None}
    return build_named(cfg.name, cfg.embedding, **options)
