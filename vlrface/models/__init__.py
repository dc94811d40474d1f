"""Face backbones, selectable by name in the pipeline configuration."""

from __future__ import annotations


def build_model(cfg):
    """Build the backbone named by a ``vlrface.config.ModelConfig``."""
    if cfg.name == "binaryfacenet":
        from vlrface.models.binaryfacenet import BinaryFaceNetConfig, build_binaryfacenet

        return build_binaryfacenet(
            BinaryFaceNetConfig(
                channels=cfg.channels, embedding=cfg.embedding, k_bits=dict(cfg.k_bits)
            )
        )
    raise ValueError(f"unknown model {cfg.name!r}")
