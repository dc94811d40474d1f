"""What the larq-zoo re-implementations (``quicknet``, ``binarydensenet``) share: the zoo's
binary 3x3 convolution, the pooled embedding head, and how a backbone becomes a model with or
without that head."""

from __future__ import annotations

import larq as lq

from vlrface._keras import tf

layers = tf.keras.layers


def binary_conv(filters: int, clip: float, name: str, **options) -> lq.layers.QuantConv2D:
    """The zoo's binary 3x3 conv: ``SteSign(clip)`` on the inputs and the kernel,
    ``WeightClip(clip)``, ``same`` padding, Glorot-normal kernel, no bias. ``options``: the
    family's own (QuickNet's ``pad_values`` and ``activation``)."""
    return lq.layers.QuantConv2D(
        filters,
        3,
        padding="same",
        input_quantizer=lq.quantizers.SteSign(clip_value=clip),
        kernel_quantizer=lq.quantizers.SteSign(clip_value=clip),
        kernel_constraint=lq.constraints.WeightClip(clip_value=clip),
        kernel_initializer="glorot_normal",
        use_bias=False,
        name=name,
        **options,
    )


def pooled_embedding_head(x, embedding: int, relu: bool = False):
    """(ReLU ->) global average pool -> Dense(``embedding``, no bias) -> BN: the face
    descriptor. The pool is an ``AveragePooling2D`` over the whole map (LCE runs it faster than
    ``GlobalAveragePooling2D``)."""
    if relu:
        x = layers.Activation("relu", name="head_relu")(x)
    x = layers.AveragePooling2D(pool_size=tuple(x.shape[1:3]), name="head_pool")(x)
    x = layers.Flatten(name="head_flatten")(x)
    x = layers.Dense(
        embedding, use_bias=False, kernel_initializer="glorot_normal", name="head_dense"
    )(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    return layers.Activation("linear", dtype="float32", name="embedding")(x)


def zoo_model(
    backbone, name: str, embedding: int, input_size: int, output_head: bool, head_relu: bool
) -> tf.keras.Model:
    """``backbone`` (a function of the input tensor) on a normalised ``(N, input_size,
    input_size, 3)`` input. With ``output_head`` the model ends in the ``embedding``-d
    descriptor (``pooled_embedding_head``, ReLU first with ``head_relu``); without it, in the
    backbone's last feature map (the network that BinaryFaceNet's Table 2 measures)."""
    inp = layers.Input((input_size, input_size, 3), name="input")
    x = backbone(inp)
    if output_head:
        x = pooled_embedding_head(x, embedding, relu=head_relu)
    return tf.keras.Model(inp, x, name=name)
