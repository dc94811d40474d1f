"""BinaryFaceNet (Luevano et al., papers/binaryfacenet.md §3): the faithful network.

The layer graph follows the authors' published checkpoint (its ``model_config`` is the ground
truth): a full-precision 1x1 stem; an SE block whose squeeze is a "reduction" of grouped, strided,
DoReFa-quantized convolutions (strides 2, 3, 4, 5; kernels 5, 3, 1, 1) instead of pooling; a
2-strided grouped QConv to 56x56; one Global Feature Extraction (GFE) block; two Local Feature
Extraction (LFE) blocks that halve the map; and a two-conv full-precision embedding block to a
1x1x``embedding`` map. BatchNorm and PReLU stay in full precision.

``build_binaryfacenet(..., output_head=True)`` appends the insightface-style "E" output head the
checkpoint has (BN -> Flatten -> Dense -> BN), whose output is the face descriptor; the efficiency
figures of the paper's Table 2 are those of the backbone without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import larq as lq

from vlrface._keras import tf

layers = tf.keras.layers


@dataclass(frozen=True)
class BinaryFaceNetConfig:
    """Hyper-parameters of BinaryFaceNet; the defaults are the paper's."""

    input_size: int = 112
    channels: int = 64
    embedding: int = 128
    se_channels: int = 4
    head_groups: int = 4
    k_bits: dict[str, int] = field(
        default_factory=lambda: {"head": 1, "gfe": 1, "lfe1": 1, "lfe2": 1}
    )


@tf.keras.utils.register_keras_serializable(package="vlrface")
class GroupedQuantConv2D(lq.layers.QuantConv2D):
    """``QuantConv2D`` whose grouped convolution runs as one dense convolution per group.

    Same kernel shape ``(k, k, Cin/groups, Cout)``, same outputs and the same larq MAC count as
    ``QuantConv2D(groups=g)``, but TensorFlow's CPU gradient of a native grouped convolution is
    ~27x slower than a dense one of 4x the MACs (measured: 7.25 s vs 0.27 s for a 5x5/2 conv on
    32x112x112x64), which made training on a CPU impractical.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1:
            return super().convolution_op(inputs, kernel)
        xs = tf.split(inputs, self.groups, axis=-1)
        ks = tf.split(kernel, self.groups, axis=-1)
        pad = self.padding.upper()
        return tf.concat(
            [
                tf.nn.conv2d(x, k, self.strides, pad, dilations=self.dilation_rate)
                for x, k in zip(xs, ks, strict=True)
            ],
            axis=-1,
        )


def _dorefa(k_bit: int) -> lq.quantizers.DoReFa:
    return lq.quantizers.DoReFa(k_bit=k_bit, mode="weights")


def _quant_kwargs(k_bit: int, *kinds: str) -> dict:
    """The quantizer/constraint keyword arguments every quantized layer of the paper uses."""
    kw = {"input_quantizer": _dorefa(k_bit), "pad_values": 0.0}
    for kind in kinds:
        kw[f"{kind}_quantizer"] = _dorefa(k_bit)
        kw[f"{kind}_constraint"] = lq.constraints.WeightClip(clip_value=1)
    return kw


def _bn(name: str, axis: int = -1) -> layers.BatchNormalization:
    return layers.BatchNormalization(axis=axis, momentum=0.99, epsilon=1e-3, name=name)


def _prelu(name: str) -> layers.PReLU:
    return layers.PReLU(shared_axes=[1, 2], name=name)


def _qconv(x, filters, kernel, strides, padding, k_bit, name, groups=1, use_bias=False):
    return GroupedQuantConv2D(
        filters,
        kernel,
        strides=strides,
        padding=padding,
        groups=groups,
        use_bias=use_bias,
        name=name,
        **_quant_kwargs(k_bit, "kernel"),
    )(x)


def _qconv_block(x, filters, kernel, strides, padding, k_bit, name, groups=1):
    """QConvBlock: binarized convolution -> BatchNorm -> PReLU."""
    x = _qconv(x, filters, kernel, strides, padding, k_bit, f"{name}_qconv", groups=groups)
    x = _bn(f"{name}_bn")(x)
    return _prelu(f"{name}_prelu")(x)


def _qdepthwise(x, k_bit, name):
    return lq.layers.QuantDepthwiseConv2D(
        1, padding="same", use_bias=True, name=name, **_quant_kwargs(k_bit, "depthwise")
    )(x)


def _qseparable(x, filters, k_bit, name):
    return lq.layers.QuantSeparableConv2D(
        filters,
        1,
        padding="same",
        use_bias=True,
        name=name,
        **_quant_kwargs(k_bit, "depthwise", "pointwise"),
    )(x)


def _head(x, cfg: BinaryFaceNetConfig):
    """Stem, SE with a quantized reduction as its squeeze, and the 2-strided grouped QConv."""
    c, k = cfg.channels, cfg.k_bits["head"]
    x = layers.Conv2D(c, 1, padding="same", use_bias=False, name="stem_conv")(x)
    x = _bn("stem_bn")(x)
    stem = _prelu("stem_prelu")(x)

    # Reduction: 112 -> 54 -> 18 -> 5 -> 1 with strides 2, 3, 4, 5 and kernels 5, 3, 1, 1.
    s = stem
    for i, (kernel, stride, groups) in enumerate(
        [(5, 2, cfg.head_groups), (3, 3, cfg.head_groups), (1, 4, cfg.head_groups // 2), (1, 5, 1)]
    ):
        s = _qconv_block(s, c, kernel, stride, "valid", k, f"se_reduce{i + 1}", groups=groups)
    if s.shape[1] != 1 or s.shape[2] != 1:
        raise ValueError(
            f"BinaryFaceNet's SE reduction needs a {112}x{112} input to reach 1x1, got "
            f"input_size={cfg.input_size} (reduced to {s.shape[1]}x{s.shape[2]})"
        )
    s = layers.Reshape((1, 1, c), name="se_squeeze")(s)
    s = layers.Conv2D(cfg.se_channels, 1, use_bias=True, name="se_fc1")(s)
    s = _prelu("se_prelu")(s)
    s = layers.Conv2D(c, 1, use_bias=True, activation="sigmoid", name="se_fc2")(s)
    x = layers.Multiply(name="se_scale")([stem, s])
    return _qconv_block(x, c, 3, 2, "same", k, "head_down", groups=cfg.head_groups)


def _gfe(x, cfg: BinaryFaceNetConfig):
    """Global Feature Extraction on the 56x56 map, with alternating residual adds."""
    c, k = cfg.channels, cfg.k_bits["gfe"]
    a = _qconv(x, c, 1, 1, "same", k, "gfe_qconv1", use_bias=True)
    a = _prelu("gfe_prelu1")(a)
    b = _qdepthwise(a, k, "gfe_qdw1")
    b = _prelu("gfe_prelu2")(layers.Add(name="gfe_add1")([x, b]))
    d = _qconv(b, c, 1, 1, "same", k, "gfe_qconv2", use_bias=True)
    d = _prelu("gfe_prelu3")(layers.Add(name="gfe_add2")([d, a]))
    e = _qdepthwise(d, k, "gfe_qdw2")
    return _prelu("gfe_prelu4")(layers.Add(name="gfe_add3")([d, e]))


def _lfe(x, cfg: BinaryFaceNetConfig, name: str):
    """Local Feature Extraction: 2-strided QConv, separable convs, two residual adds."""
    c, k = cfg.channels, cfg.k_bits[name]
    down = _qconv_block(x, c, 3, 2, "same", k, f"{name}_down")
    sep1 = _prelu(f"{name}_prelu1")(_qseparable(down, c, k, f"{name}_qsep1"))
    y = _qconv(sep1, c, 1, 1, "valid", k, f"{name}_qconv1")
    y = _bn(f"{name}_bn1")(y)
    y = _prelu(f"{name}_prelu2")(layers.Add(name=f"{name}_add1")([down, y]))
    y = _qconv_block(y, c, 1, 1, "valid", k, f"{name}_block2")
    y = _qseparable(y, c, k, f"{name}_qsep2")
    return _prelu(f"{name}_prelu3")(layers.Add(name=f"{name}_add2")([sep1, y]))


def _embedding_block(x, cfg: BinaryFaceNetConfig):
    """Two full-precision conv blocks, 3x3/3 then 4x4/1, 'valid': 14x14 -> 4x4 -> 1x1."""
    for i, (kernel, stride) in enumerate([(3, 3), (4, 1)]):
        x = layers.Conv2D(
            cfg.embedding,
            kernel,
            strides=stride,
            padding="valid",
            use_bias=False,
            name=f"emb_conv{i + 1}",
        )(x)
        x = _prelu(f"emb_prelu{i + 1}")(_bn(f"emb_bn{i + 1}")(x))
    return x


def _output_head(x, embedding: int):
    """insightface's "E" head: BN -> Flatten -> Dense -> BN -> the descriptor."""
    x = _bn("E_batchnorm")(x)
    x = layers.Flatten(name="E_flatten")(x)
    x = layers.Dense(embedding, use_bias=False, kernel_initializer="glorot_normal", name="E_dense")(
        x
    )
    x = _bn("pre_embedding", axis=1)(x)
    return layers.Activation("linear", dtype="float32", name="embedding")(x)


def build_binaryfacenet(
    cfg: BinaryFaceNetConfig | None = None, output_head: bool = True, name: str = "binaryfacenet"
) -> tf.keras.Model:
    """Build BinaryFaceNet; input is a normalised ``(N, 112, 112, 3)`` float tensor."""
    cfg = cfg or BinaryFaceNetConfig()
    if cfg.channels % cfg.head_groups or cfg.head_groups % 2:
        raise ValueError(
            f"channels ({cfg.channels}) must be divisible by head_groups ({cfg.head_groups}), "
            "which must be even"
        )
    missing = {"head", "gfe", "lfe1", "lfe2"} - set(cfg.k_bits)
    if missing:
        raise ValueError(f"k_bits is missing block(s) {sorted(missing)}")
    inp = layers.Input((cfg.input_size, cfg.input_size, 3), name="input")
    x = _head(inp, cfg)
    x = _gfe(x, cfg)
    x = _lfe(x, cfg, "lfe1")
    x = _lfe(x, cfg, "lfe2")
    x = _embedding_block(x, cfg)
    if output_head:
        x = _output_head(x, cfg.embedding)
    else:
        x = layers.Flatten(name="embedding")(x)
    return tf.keras.Model(inp, x, name=name)
