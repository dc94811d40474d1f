"""Face backbones, selectable by name in the pipeline configuration and the CLI."""

from __future__ import annotations

ZOO = (
    "binaryfacenet",
    "binaryfacenet_lce",
    "quicknet",
    "quicknet_small",
    "quicknet_large",
    "binarydensenet28",
    "binarydensenet37",
    "binarydensenet45",
)


def build_named(name: str, embedding: int = 128, output_head: bool = True):
    """A freshly initialised zoo model by name, at its paper's defaults."""
    if name == "binaryfacenet":
        from vlrface.models.keras.binaryfacenet import BinaryFaceNetConfig, build_binaryfacenet

        return build_binaryfacenet(BinaryFaceNetConfig(embedding=embedding), output_head)
    if name == "binaryfacenet_lce":
        from vlrface.models.keras.binaryfacenet_lce import build_binaryfacenet_lce

        return build_binaryfacenet_lce(embedding=embedding, output_head=output_head)
    if name.startswith("quicknet"):
        from vlrface.models.keras.quicknet import VARIANTS, build_quicknet

        if name in VARIANTS:
            return build_quicknet(name, embedding, output_head=output_head)
    if name.startswith("binarydensenet") and name[len("binarydensenet") :] in ("28", "37", "45"):
        from vlrface.models.keras.binarydensenet import build_binarydensenet

        depth = int(name[len("binarydensenet") :])
        return build_binarydensenet(depth, embedding, output_head=output_head)
    raise ValueError(f"unknown model {name!r}; known: {', '.join(ZOO)}")


def build_model(cfg):
    """Build the backbone named by a ``vlrface.config.keras.ModelConfig``."""
    if cfg.name == "binaryfacenet":
        from vlrface.models.keras.binaryfacenet import BinaryFaceNetConfig, build_binaryfacenet

        return build_binaryfacenet(
            BinaryFaceNetConfig(
                channels=cfg.channels or 64, embedding=cfg.embedding, k_bits=dict(cfg.k_bits)
            )
        )
    if cfg.name == "binaryfacenet_lce" and cfg.channels:
        from vlrface.models.keras.binaryfacenet_lce import build_binaryfacenet_lce

        return build_binaryfacenet_lce(channels=cfg.channels, embedding=cfg.embedding)
    return build_named(cfg.name, cfg.embedding)
