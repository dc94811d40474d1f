"""QuickNet, QuickNetSmall and QuickNetLarge (Bannink et al., "Larq Compute Engine", MLSys 2021).

A re-implementation of the network family published in larq-zoo (``larq_zoo/sota/quicknet.py``,
v1.0 weights), for a normalised 112x112x3 face crop and a 128-d descriptor, as BinaryFaceNet's
authors compare against it (BinaryFaceNet paper, Table 2). The layer order, widths and strides
are the zoo's:

* stem, all full precision: 3x3/2 conv to ``F/4`` channels -> BN -> ReLU -> 3x3/2 depthwise conv
  -> BN without scale or offset -> 1x1 conv to ``F`` -> BN (input stride 4: 112 -> 28);
* four sections of residual blocks: a binary 3x3 conv (``SteSign(1.25)`` on inputs and kernel,
  ``WeightClip(1.25)``, padded with +1 so that LCE needs no zero-padding correction) with a ReLU
  after it -> BN -> add the block's input;
* between sections, a full-precision transition: ReLU -> 2x2/1 max-pool -> a frozen 3x3/2
  blur-pool depthwise conv (binomial ``[1, 2, 1]`` kernel) -> 1x1 conv -> BN
  (maps 28 -> 14 -> 7 -> 3 at 112x112 input).

Variants: QuickNet has 4+4+4+4 blocks of 64/128/256/512 channels, QuickNetSmall 32/64/256/512,
QuickNetLarge 6+8+12+6 blocks.

Reconstruction choice, the 128-d head: Table 2's figures for QuickNet (431.75 M binary MACs,
6.85 M float MACs, 12.7 M params, 2.21 MB) are those of the backbone alone (``output_head=False``:
431,751,168 / 6,851,456 / 12,721,088 weights / 2.209 MiB), just as Table 2's BinaryFaceNet row
excludes its output head. The head itself is not published; the one here is the cheapest usual
one, built on the zoo's own pooling: ReLU -> global average pool (an ``AveragePooling2D`` over
the whole map, which LCE runs faster than ``GlobalAveragePooling2D``) -> Dense(``embedding``, no
bias) -> BN. It adds ``512 x 128`` float MACs and ``512 x 128 + 256`` weights (+1.0 % float MACs,
+0.5 % weights); insightface's "E" head (BN -> Flatten -> Dense -> BN on the 3x3x512 map, as
BinaryFaceNet's checkpoint has) would add nine times as much.
"""

from __future__ import annotations

import numpy as np

from vlrface._keras import tf
from vlrface.models.keras.larq_zoo import binary_conv, zoo_model

layers = tf.keras.layers

#: Blocks per section and channels per section of each variant.
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "quicknet": ((4, 4, 4, 4), (64, 128, 256, 512)),
    "quicknet_small": ((4, 4, 4, 4), (32, 64, 256, 512)),
    "quicknet_large": ((6, 8, 12, 6), (64, 128, 256, 512)),
}

CLIP = 1.25  # SteSign clip value of the inputs and weights, and the weight clip


@tf.keras.utils.register_keras_serializable(package="vlrface")
class BinomialBlur(tf.keras.initializers.Initializer):
    """A normalised 3x3 binomial (``[1, 2, 1]`` outer ``[1, 2, 1]``) kernel for each channel.

    Used as the frozen kernel of a depthwise conv, this is the anti-aliased down-sampling of
    Zhang, "Making Convolutional Networks Shift-Invariant Again" (ICML 2019).
    """

    def __call__(self, shape, dtype=None, **kwargs):
        if tuple(shape[:2]) != (3, 3):
            raise ValueError(f"BinomialBlur makes 3x3 kernels, asked for {tuple(shape)}")
        taps = np.array([1.0, 2.0, 1.0])
        kernel = np.outer(taps, taps) / 16.0
        kernel = np.broadcast_to(kernel[:, :, None, None], tuple(shape))
        return tf.constant(kernel, dtype=dtype or tf.float32)

    def get_config(self):
        return {}


def _bn(name: str, **kwargs) -> layers.BatchNormalization:
    return layers.BatchNormalization(name=name, **kwargs)


def _stem(x, filters: int):
    """Full-precision stem: 3x3/2 conv, 3x3/2 depthwise, 1x1 conv; stride 4 in all."""
    x = layers.Conv2D(
        filters // 4,
        3,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name="stem_conv",
    )(x)
    x = layers.Activation("relu", name="stem_relu")(_bn("stem_bn1")(x))
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="stem_dw")(x)
    x = _bn("stem_bn2", scale=False, center=False)(x)
    x = layers.Conv2D(
        filters, 1, use_bias=False, kernel_initializer="he_normal", name="stem_pointwise"
    )(x)
    return _bn("stem_bn3")(x)


def _residual_block(x, name: str):
    """Binary 3x3 conv (ReLU after it) -> BN -> add the input; width and size unchanged."""
    y = binary_conv(int(x.shape[-1]), CLIP, f"{name}_bconv", pad_values=1.0, activation="relu")(x)
    y = _bn(f"{name}_bn", momentum=0.9, epsilon=1e-5)(y)
    return layers.Add(name=f"{name}_add")([x, y])


def _transition(x, filters: int, name: str):
    """Full-precision down-sampling: ReLU, 2x2/1 max-pool, frozen 3x3/2 blur, 1x1 conv, BN."""
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    x = layers.MaxPool2D(pool_size=2, strides=1, name=f"{name}_maxpool")(x)
    x = layers.DepthwiseConv2D(
        3,
        strides=2,
        padding="same",
        use_bias=False,
        depthwise_initializer=BinomialBlur(),
        trainable=False,
        name=f"{name}_blur",
    )(x)
    x = layers.Conv2D(
        filters, 1, use_bias=False, kernel_initializer="glorot_normal", name=f"{name}_pointwise"
    )(x)
    return _bn(f"{name}_bn", momentum=0.9, epsilon=1e-5)(x)


def _backbone(x, blocks: tuple[int, ...], filters: tuple[int, ...]):
    """Stem, then each section: a transition where the width changes, then residual blocks."""
    x = _stem(x, filters[0])
    for section, (n_blocks, width) in enumerate(zip(blocks, filters, strict=True)):
        if int(x.shape[-1]) != width:
            x = _transition(x, width, f"section{section + 1}_transition")
        for block in range(n_blocks):
            x = _residual_block(x, f"section{section + 1}_block{block + 1}")
    return x


def build_quicknet(
    variant: str = "quicknet",
    embedding: int = 128,
    input_size: int = 112,
    output_head: bool = True,
) -> tf.keras.Model:
    """Build a QuickNet variant, with or without its head (``larq_zoo.zoo_model``)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown QuickNet variant {variant!r}; known: {', '.join(VARIANTS)}")
    blocks, filters = VARIANTS[variant]
    return zoo_model(
        lambda x: _backbone(x, blocks, filters), variant, embedding, input_size, output_head,
        head_relu=True,  # the backbone ends on a BN
    )  # fmt: skip
