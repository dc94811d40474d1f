"""The measured anchors of the ARM cost model, and how to rebuild each network.

Instruction counts are from notes/lce_arm.md §2f and Addendum 2: real LCE 0.16.0 aarch64
kernels under qemu-user (``-cpu cortex-a57``) with an instruction-counting TCG plugin, random
weights, one inference, one thread. ``build(name)`` rebuilds the network that was measured (our
re-implementations match the zoo's MACs within 1 %); ``benchmarks/latency_calibration.py`` fits
the cost model on them.
"""

from __future__ import annotations

SOURCE = "notes/lce_arm.md §2f (LCE 0.16.0 aarch64 kernels, qemu-user -cpu cortex-a57, TCG icount)"

# name: (measured instructions per inference, what was measured)
ANCHORS = {
    "toy_bnn_112": (18.7e6, "conv 3x3/2 + 3 binary 3x3 64-ch residual blocks + GAP + FC128"),
    "toy_float_112": (132.2e6, "the same toy with float 3x3 convs"),
    "block_56x56x64": (5.09e6, "one binary 3x3 residual block (bconv + BN + add), 56x56x64"),
    "block_28x28x128": (3.64e6, "the same block at 28x28x128"),
    "block_14x14x256": (3.27e6, "the same block at 14x14x256"),
    "block_7x7x512": (3.30e6, "the same block at 7x7x512"),
    "quicknet_small_224_top": (54.26e6, "QuickNetSmall, 224 px, ImageNet top"),
    "quicknet_224_top": (82.70e6, "QuickNet, 224 px, ImageNet top"),
    "quicknet_large_224_top": (140.19e6, "QuickNetLarge, 224 px, ImageNet top"),
    "binarydensenet28_224_top": (215.53e6, "BinaryDenseNet28, 224 px, ImageNet top"),
    "binarydensenet37_224_top": (244.77e6, "BinaryDenseNet37, 224 px, ImageNet top"),
    "binarydensenet45_224_top": (322.89e6, "BinaryDenseNet45, 224 px, ImageNet top"),
    "quicknet_small_112": (13.83e6, "QuickNetSmall, 112 px, GAP + Dense128 + BN"),
    "quicknet_112": (20.98e6, "QuickNet, 112 px, GAP + Dense128 + BN"),
    "quicknet_large_112": (35.73e6, "QuickNetLarge, 112 px, GAP + Dense128 + BN"),
    "binarydensenet28_112": (54.82e6, "BinaryDenseNet28, 112 px, GAP + Dense128 + BN"),
    "binarydensenet37_112": (62.56e6, "BinaryDenseNet37, 112 px, GAP + Dense128 + BN"),
    "binarydensenet45_112": (82.86e6, "BinaryDenseNet45, 112 px, GAP + Dense128 + BN"),
    "binaryfacenet_published": (1076e6, "the authors' BinaryFaceNet (DoReFa), lce_arm.md Add. 2"),
}


def _bconv(x, filters):
    import larq as lq

    return lq.layers.QuantConv2D(
        filters,
        3,
        padding="same",
        pad_values=1.0,
        use_bias=False,
        input_quantizer=lq.quantizers.SteSign(1.25),
        kernel_quantizer=lq.quantizers.SteSign(1.25),
        kernel_constraint=lq.constraints.WeightClip(1.25),
    )(x)


def residual_block(x, binary: bool = True):
    from vlrface._keras import tf

    layers = tf.keras.layers
    c = int(x.shape[-1])
    y = _bconv(x, c) if binary else layers.Conv2D(c, 3, padding="same", use_bias=False)(x)
    return layers.Add()([x, layers.BatchNormalization()(y)])


def toy(binary: bool):
    from vlrface._keras import tf

    layers = tf.keras.layers
    inp = layers.Input((112, 112, 3))
    x = layers.BatchNormalization()(layers.Conv2D(64, 3, 2, "same", use_bias=False)(inp))
    for _ in range(3):
        x = residual_block(x, binary)
    x = layers.Dense(128)(layers.GlobalAveragePooling2D()(x))
    return tf.keras.Model(inp, x)


def block(size: int, channels: int):
    from vlrface._keras import tf

    inp = tf.keras.layers.Input((size, size, channels))
    return tf.keras.Model(inp, residual_block(inp))


def native_grouped(model):
    """The published checkpoint's graph: native grouped ``QuantConv2D`` layers where ours
    compute grouped convolutions group by group (``GroupedQuantConv2D``, same weights)."""
    import larq as lq

    from vlrface._keras import tf
    from vlrface.models.binaryfacenet import GroupedQuantConv2D

    def clone(layer):
        if isinstance(layer, GroupedQuantConv2D):
            return lq.layers.QuantConv2D.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    return tf.keras.models.clone_model(model, clone_function=clone)


def imagenet_top(backbone):
    """The zoo's classification top: ReLU, average pool over the map, Dense(1000), softmax."""
    from vlrface._keras import tf

    layers = tf.keras.layers
    x = layers.Activation("relu")(backbone.output)
    x = layers.Flatten()(layers.AveragePooling2D(tuple(x.shape[1:3]))(x))
    x = layers.Dense(1000, activation="softmax")(x)
    return tf.keras.Model(backbone.input, x)


def build(name: str):
    from vlrface.models import build_named
    from vlrface.models.binarydensenet import build_binarydensenet
    from vlrface.models.quicknet import build_quicknet

    if name.startswith("toy_"):
        return toy(binary=name == "toy_bnn_112")
    if name.startswith("block_"):
        size, _, channels = name.removeprefix("block_").split("x")
        return block(int(size), int(channels))
    if name == "binaryfacenet_published":
        return native_grouped(build_named("binaryfacenet"))
    base, size = name.removesuffix("_top").rsplit("_", 1)
    if name.endswith("_top"):
        if base.startswith("quicknet"):
            return imagenet_top(build_quicknet(base, input_size=int(size), output_head=False))
        depth = int(base.removeprefix("binarydensenet"))
        return imagenet_top(build_binarydensenet(depth, input_size=int(size), output_head=False))
    return build_named(base)


def features(name: str) -> dict:
    from vlrface.export import lce

    return lce.census(lce.convert(build(name)))["cost_features"]
