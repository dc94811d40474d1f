"""BinaryDenseNet-28, -37 and -45 (Bethge et al., "BinaryDenseNet", ICCV Workshops 2019).

A re-implementation of the networks published in larq-zoo (``larq_zoo/literature/densenet.py``),
for a normalised 112x112x3 face crop and a 128-d descriptor, as BinaryFaceNet's authors compare
against them (BinaryFaceNet paper, Table 2). The layer order, widths and strides are the zoo's:

* stem (input of 50 px or more): full-precision 7x7/2 conv to 64 channels -> BN -> ReLU ->
  3x3/2 max-pool (112 -> 28); below 50 px a single 3x3/1 conv, as in the zoo;
* dense blocks of dense layers: BN -> binary 3x3 conv of 64 channels (``SteSign(1.3)`` on inputs
  and kernel, ``WeightClip(1.3)``, zero padding) -> concatenated to the layer's input, so each
  layer adds 64 channels;
* between blocks, a full-precision transition: BN -> 2x2/2 max-pool -> ReLU -> 1x1 conv to
  ``round(C // reduction / 32) * 32`` channels (maps 28 -> 14 -> 7 -> 3 at 112x112 input);
* after the last block: BN -> ReLU.

Depth 28: 6+6+6+5 layers, reductions 2.7, 2.7, 2.2; depth 37: 6+8+12+6, 3.3, 3.3, 4; depth 45:
6+12+14+8, 2.7, 3.3, 4 (the zoo's undilated models).

Reconstruction choice, the 128-d head: Table 2's figures are those of the backbone alone
(``output_head=False``), just as Table 2's BinaryFaceNet row excludes its output head: depth 28
has 893,251,584 binary and 49,997,824 float MACs (Table 2: 893.2 M, 49.99 M; a float 576 -> 128
Dense alone would make it 50.07 M) and 4,554,496 weights (4.5 M). The head here is QuickNet's
(``vlrface.models.keras.larq_zoo.pooled_embedding_head``): global average pool ->
Dense(``embedding``, no bias) -> BN, which adds ``C x 128`` float MACs and ``C x 128 + 256``
weights for the last block's ``C`` channels (576, 640 and 800 for depths 28, 37 and 45): +1.6 %,
+1.0 % and +0.8 % of the backbone's weights.
"""

from __future__ import annotations

from vlrface._keras import tf
from vlrface.models.keras.larq_zoo import binary_conv, zoo_model

layers = tf.keras.layers

#: Dense layers per block and the transitions' reduction factors of each depth.
DEPTHS: dict[int, tuple[tuple[int, ...], tuple[float, ...]]] = {
    28: ((6, 6, 6, 5), (2.7, 2.7, 2.2)),
    37: ((6, 8, 12, 6), (3.3, 3.3, 4.0)),
    45: ((6, 12, 14, 8), (2.7, 3.3, 4.0)),
}

INITIAL_FILTERS = 64
GROWTH_RATE = 64
CLIP = 1.3  # SteSign clip value of the inputs and weights, and the weight clip


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def _stem(x, input_size: int):
    """7x7/2 conv -> BN -> ReLU -> 3x3/2 max-pool; a plain 3x3 conv for inputs under 50 px."""
    if input_size < 50:
        return layers.Conv2D(
            INITIAL_FILTERS,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            name="stem_conv",
        )(x)
    x = layers.Conv2D(
        INITIAL_FILTERS,
        7,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name="stem_conv",
    )(x)
    x = layers.Activation("relu", name="stem_relu")(_bn("stem_bn")(x))
    return layers.MaxPool2D(3, strides=2, padding="same", name="stem_maxpool")(x)


def _dense_layer(x, name: str):
    """BN -> binary 3x3 conv of ``GROWTH_RATE`` channels -> concatenate to the input."""
    y = _bn(f"{name}_bn")(x)
    y = binary_conv(GROWTH_RATE, CLIP, f"{name}_bconv")(y)
    return layers.Concatenate(name=f"{name}_concat")([x, y])


def _transition(x, reduction: float, name: str):
    """BN -> 2x2/2 max-pool -> ReLU -> 1x1 conv to ``C // reduction`` rounded to 32s."""
    filters = round(int(x.shape[-1]) // reduction / 32) * 32
    x = _bn(f"{name}_bn")(x)
    x = layers.MaxPool2D(2, strides=2, name=f"{name}_maxpool")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    return layers.Conv2D(
        filters, 1, use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv"
    )(x)


def _backbone(x, input_size: int, blocks: tuple[int, ...], reductions: tuple[float, ...]):
    """Stem, dense blocks with transitions between them, final BN -> ReLU."""
    x = _stem(x, input_size)
    for block, n_layers in enumerate(blocks):
        for layer in range(n_layers):
            x = _dense_layer(x, f"block{block + 1}_layer{layer + 1}")
        if block < len(reductions):
            x = _transition(x, reductions[block], f"transition{block + 1}")
    x = _bn("final_bn")(x)
    return layers.Activation("relu", name="final_relu")(x)


def build_binarydensenet(
    depth: int = 28,
    embedding: int = 128,
    input_size: int = 112,
    output_head: bool = True,
) -> tf.keras.Model:
    """Build BinaryDenseNet-``depth``, with or without its head (``larq_zoo.zoo_model``)."""
    if depth not in DEPTHS:
        raise ValueError(f"unknown BinaryDenseNet depth {depth!r}; known: {sorted(DEPTHS)}")
    blocks, reductions = DEPTHS[depth]
    return zoo_model(
        lambda x: _backbone(x, input_size, blocks, reductions), f"binary_densenet{depth}",
        embedding, input_size, output_head,
        head_relu=False,  # the backbone ends on BN -> ReLU
    )  # fmt: skip
