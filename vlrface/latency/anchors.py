"""Graphs of our own for the ARM cost model, and how to build each.

The cost model is fitted on per-op counts of the project's own exports (notes/lce_arm.md
Addendum 3). ``FIT_EXTRA`` graphs join the fit: ``benchmarks/latency_calibration.py`` counts
each of their ops for real (``emulate_lce.profile_ops``) because the exports have no DoReFa
layer narrower than 64 channels. ``HELD_OUT`` graphs stay out of the fit: each is built (random
init), converted with LCE, counted with LCE's aarch64 kernels under qemu-user
(``emulate_lce.count_instructions``) and compared with the fitted model's prediction.
"""

from __future__ import annotations

# name: what it is
FIT_EXTRA = {
    "binaryfacenet_w16": "the faithful BinaryFaceNet (DoReFa) at width 16, 128-d embedding",
}
HELD_OUT = {
    "toy_bnn_112": "conv 3x3/2 + 3 binary 3x3 64-ch residual blocks + GAP + FC128",
    "toy_float_112": "the same toy with float 3x3 convs",
    "block_56x56x64": "one binary 3x3 residual block (bconv + BN + add), 56x56x64",
    "block_14x14x256": "the same block at 14x14x256",
    "quicknet_224_top": "QuickNet, 224 px, ImageNet top (ReLU, avg pool, Dense 1000, softmax)",
    "binaryfacenet_w32": "the demo's faithful BinaryFaceNet (DoReFa), width 32 (configs/demo.yaml)",
    "binaryfacenet_w8_e16": "the faithful BinaryFaceNet at width 8, 16-d embedding (test pipeline)",
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
    from vlrface.models.keras.binaryfacenet import GroupedQuantConv2D

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
    from vlrface.models.keras import build_named
    from vlrface.models.keras.binarydensenet import build_binarydensenet
    from vlrface.models.keras.quicknet import build_quicknet

    if name.startswith("toy_"):
        return toy(binary=name == "toy_bnn_112")
    if name.startswith("block_"):
        size, _, channels = name.removeprefix("block_").split("x")
        return block(int(size), int(channels))
    if name == "binaryfacenet_published":
        return native_grouped(build_named("binaryfacenet"))
    if name.startswith("binaryfacenet_w"):
        from vlrface.models.keras.binaryfacenet import BinaryFaceNetConfig, build_binaryfacenet

        width, _, embedding = name.removeprefix("binaryfacenet_w").partition("_e")
        config = BinaryFaceNetConfig(channels=int(width), embedding=int(embedding or 128))
        return build_binaryfacenet(config)
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
