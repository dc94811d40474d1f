"""BinaryFaceNet-LCE: BinaryFaceNet (its paper's Sec. 3) redesigned so that Larq Compute
Engine runs it as a binary network on ARM.

The faithful model (``binaryfacenet.py``) is binary only on paper: LCE has no kernel for its DoReFa
quantizers and converts every one of its "binary" convolutions to float CONV_2D plus fake-quant
math (binary_mac_share 0; docs/arm-latency.md). This model keeps the paper's block ideas
and the faithful model's output head, and changes what LCE needs changed.

Layout at a 112x112x3 input, default ``channels=(64, 96, 192)``, ``stem_channels=32``:

    head   stem: float Conv 3x3/2 + BN                              -> 56x56x32  (x0)
           SE squeeze: binary reduction of sign(x0), 'valid', 32 wide  56 -> 27 -> 9 -> 3 -> 1
             (kernels 3,3,3,3, strides 2,3,3,1), BN, PReLU; excitation 1x1 conv 32->4, PReLU,
             1x1 conv 4->64, sigmoid
           head conv: binary 3x3/2 + ReLU + BN (h); SE gate: x = h * s  -> 28x28x64
    GFE    a = B1(h); b = x + B2(a); d = a + B3(b); out = d + B4(d),  binary 1x1 -> 28x28x64
    LFE1   down = B3x3/2(x); sep1 = B3x3(down); y = down + B1x1(sep1);
           out = sep1 + B3x3(B1x1(y))                                 -> 14x14x96
    LFE2   same                                                       -> 7x7x192
    emb    binary 3x3/2 'valid' + BN + PReLU -> 3x3x128; float 3x3 'valid' conv + BN + PReLU
    E head BN -> Flatten -> Dense(128) -> BN (the faithful model's ``_output_head``) -> 128

(Bk = binary kxk conv -> BN; in residual branches with QuickNet's ReLU clamp before the BN.)

Design decisions, and how they differ from the faithful model:

* Binary convs are ``QuantConv2D`` with ``SteSign(1.25)`` input and kernel quantizers and
  ``WeightClip(1.25)`` (QuickNet's), ``groups=1`` and ``pad_values=1`` for 'same' padding. LCE
  maps each to one ``LceBconv2d`` and fuses the following BatchNorm (and the ReLU clamp, which it
  only fuses with 'valid' or one-padding) into the conv's output transform. The faithful model
  uses DoReFa (no LCE kernel) and grouped convs with 16 channels per group (rejected by LCE).
* Where a binary conv feeds only another binary conv (the SE reduction chain, LFE conv2 -> sep2)
  LCE writes bitpacked activations directly: no float tensor, no LceQuantize. Elsewhere a binary
  conv's output is used twice (residual), so it is written in float and re-quantized.
* Every stage runs one octave lower than the paper's: the blocks at 28, 14 and 7 px where the
  paper has 56, 28 and 14. On ARM the cost of a binary conv is dominated by per-element work
  (quantize, output transform, residual add) rather than MACs at high resolution
  (docs/arm-latency.md: the same 115.6 M binary MACs cost 5.09 M instructions at 56x56x64
  but 3.27 M at 14x14x256;
  the cost model gives 9 instructions per binary-conv output element against 0.024 per binary
  MAC). A VLR face (7-32 px, up-sampled to 112) holds no detail that a 28x28 map cannot carry.
  Each stage is at least as wide as the paper's 64 channels.
* No float work at 112x112 and little at 56x56: the paper's float 1x1 stem at 112x112, the SE
  multiply and PReLU there and its strided head QConv become one float 3x3/2 conv to 56x56 and a
  binary 3x3/2 head conv.
* The SE gate multiplies the output of the binary head conv, not the stem: sign() is scale-
  invariant, so a gate in front of a binary conv has no effect in the forward pass (in 1 bit this
  holds for the faithful model too). Gating a binary-derived tensor also keeps the float residual
  stream free of the float stem's rounding differences between TF and TFLite, which matter to
  parity (below). The reduction (the SE squeeze without pooling) is binary and chained bitpacked;
  the excitation runs on 1x1 tensors.
* GFE keeps the paper's alternating residual adds with four binary 1x1 convs: the checkpoint's
  QConvs are 1x1 and its "depthwise" convs are 1x1 too; LCE has no binary depthwise conv (a
  sign-quantized depthwise becomes LceQuantize -> LceDequantize -> float DEPTHWISE_CONV_2D), so
  they become binary 1x1 convs.
* LFE blocks keep the paper's pattern; each QSeparableConv becomes a full binary 3x3 conv (the
  spatial filtering).
* No PReLU in the residual stream: before a sign a PReLU with positive slope changes nothing,
  and in the residual stream it is float work per element. The nonlinearity is the sign and the
  ReLU clamp fused in the binary conv. PReLU stays only on 1x1 (SE) and 3x3 (embedding) maps.
* ``shortcuts=True`` (off by default; ``model.shortcuts`` in a config): each LFE block's strided
  binary conv gains a float path, 2x2 average pool -> 1x1 conv -> BN, added to its output, as
  Bi-Real Net and Real-to-Binary do at their downsamplings. Without it the float residual stream
  reaches the next stage only through the signs of the strided conv's input. LCE adds two
  AVERAGE_POOL_2D, two float CONV_2D (at 14x14 and 7x7) and two ADD: 9.96 M aarch64
  instructions instead of 8.73 M (LCE's kernels under qemu; 0.48x QuickNet-112's 20.79 M).
* Embedding block: its first conv (7x7 -> 3x3) is binary; the last 3x3 conv stays full
  precision (147 k MACs), as in the paper.
* Widths are multiples of 32 (LCE's bitpacked words). ``input_size`` other than 112 works
  (>= 48): the last SE reduction and the last embedding conv cover whatever map is left.

Measured (TF 2.16.2, larq 0.14.0, LCE 0.16.0; default arguments, 112x112 input; reproduce with
``vlrface efficiency``, ``vlrface export lce`` and ``vlrface latency`` or benchmarks/efficiency.py):

* larq ``ModelProfile`` of the backbone (without the E head): 128,063,488 binary MACs, 2,857,344
  float MACs, 1,589,064 parameters, 0.76 MiB. The faithful model: 184,992,256 / 3,850,752 MACs,
  506 k parameters, 1.32 MiB.
* LCE census: 20 LceBconv2d (5 writing bitpacked output), 14 LceQuantize, 7 ADD, 1 MUL, 4 CONV_2D
  (stem, 2 SE 1x1 convs, last embedding conv), 4 PRELU, 1 LOGISTIC, 1 FULLY_CONNECTED;
  binary_mac_share 0.978. No LceDequantize, depthwise or grouped binary conv.
* ARM cost model (``vlrface.latency.costmodel``): 9.78 M instructions per inference, 0.454x
  QuickNet-112 (21.5 M); 5.3 ms on a Raspberry Pi 4. The faithful model's graph as published:
  1,076 M measured.
* Parity, Keras vs LCE interpreter, random weights with non-trivial BN (random gammas and betas,
  moving statistics of a calibration batch), three seeds: 204 London-set faces 203/204, 204/204
  and 204/204 at cosine >= 0.99; random-normal inputs 48/48, 48/48 and 47/48. Each outlier is a
  single sign flip of a float value within rounding of zero (TF and TFLite float convs differ by
  ~1e-6) that an untrained network amplifies; QuickNet-112 under the same treatment had 35 of
  204 faces below 0.99.
"""

from __future__ import annotations

from collections.abc import Sequence

import larq as lq

from vlrface._keras import tf
from vlrface.models.keras.binaryfacenet import _output_head

layers = tf.keras.layers

CLIP = 1.25  # QuickNet's clip value for SteSign (gradient window) and WeightClip


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=name)


def _prelu(name: str) -> layers.PReLU:
    return layers.PReLU(shared_axes=[1, 2], name=name)


def _bconv(x, filters, kernel, name, strides=1, padding="same", relu=True):
    """Binary conv -> BN: one ``LceBconv2d`` (ReLU clamp and BN fused into its output)."""
    x = lq.layers.QuantConv2D(
        filters,
        kernel,
        strides=strides,
        padding=padding,
        pad_values=1.0,
        input_quantizer=lq.quantizers.SteSign(clip_value=CLIP),
        kernel_quantizer=lq.quantizers.SteSign(clip_value=CLIP),
        kernel_constraint=lq.constraints.WeightClip(clip_value=CLIP),
        kernel_initializer="glorot_normal",
        activation="relu" if relu else None,
        use_bias=False,
        name=f"{name}_bconv",
    )(x)
    return _bn(f"{name}_bn")(x)


def _reduction_plan(size: int) -> list[tuple[int, int]]:
    """(kernel, stride) of the SE reduction from a ``size`` map down to 1x1, 'valid' padding."""
    plan = []
    for kernel, stride in [(3, 2), (3, 3), (3, 3)]:
        if size < kernel:
            break
        plan.append((kernel, stride))
        size = (size - kernel) // stride + 1
    plan.append((size, 1))  # the last conv covers what is left
    return plan


def _head(inp, stem: int, c: int, se_channels: int):
    """Float strided stem, then a 2-strided binary head conv recalibrated by an SE gate whose
    squeeze is a binary strided reduction of the stem. Returns the head conv output and its
    gated form."""
    x0 = layers.Conv2D(stem, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inp)
    x0 = _bn("stem_bn")(x0)

    s = x0
    plan = _reduction_plan(x0.shape[1])
    for i, (kernel, stride) in enumerate(plan):
        s = _bconv(
            s, stem, kernel, f"se_reduce{i + 1}", strides=stride, padding="valid", relu=False
        )
    s = _prelu(f"se_reduce{len(plan)}_prelu")(s)
    s = layers.Conv2D(se_channels, 1, use_bias=True, name="se_fc1")(s)
    s = _prelu("se_prelu")(s)
    s = layers.Conv2D(c, 1, use_bias=True, activation="sigmoid", name="se_fc2")(s)

    h = _bconv(x0, c, 3, "head_down", strides=2)
    return h, layers.Multiply(name="se_scale")([h, s])


def _gfe(h, x, c: int):
    """Global Feature Extraction at 56x56 with the paper's alternating residual adds.

    The first conv reads ``h`` rather than the gated ``x``: the same signs (the gate is positive),
    but no straight-through gradient into the gate along a path the forward pass ignores.
    """
    a = _bconv(h, c, 1, "gfe_conv1")
    b = layers.Add(name="gfe_add1")([x, _bconv(a, c, 1, "gfe_conv2")])
    d = layers.Add(name="gfe_add2")([a, _bconv(b, c, 1, "gfe_conv3")])
    return layers.Add(name="gfe_add3")([d, _bconv(d, c, 1, "gfe_conv4")])


def _lfe(x, c: int, name: str, shortcut: bool = False):
    """Local Feature Extraction: strided binary conv, then the paper's two residual adds.

    ``shortcut``: the strided conv gains a float path, 2x2 average pool -> 1x1 conv -> BN, added
    to its output, so that the float residual stream crosses the downsampling (Bi-Real Net's
    and Real-to-Binary's downsampling shortcut) instead of only its signs."""
    down = _bconv(x, c, 3, f"{name}_down", strides=2)
    if shortcut:
        s = layers.AveragePooling2D(2, padding="same", name=f"{name}_pool")(x)
        s = layers.Conv2D(c, 1, use_bias=False, name=f"{name}_proj")(s)
        down = layers.Add(name=f"{name}_add0")([down, _bn(f"{name}_proj_bn")(s)])
    sep1 = _bconv(down, c, 3, f"{name}_sep1")
    y = layers.Add(name=f"{name}_add1")([down, _bconv(sep1, c, 1, f"{name}_conv1")])
    y = _bconv(y, c, 1, f"{name}_conv2", relu=False)
    return layers.Add(name=f"{name}_add2")([sep1, _bconv(y, c, 3, f"{name}_sep2")])


def _embedding_block(x, embedding: int):
    """Binary 3x3/2 'valid' conv, then a float conv over the whole remaining map."""
    x = _bconv(x, embedding, 3, "emb_conv1", strides=2, padding="valid", relu=False)
    x = _prelu("emb_prelu1")(x)
    x = layers.Conv2D(embedding, x.shape[1], padding="valid", use_bias=False, name="emb_conv2")(x)
    return _prelu("emb_prelu2")(_bn("emb_bn2")(x))


def _stage_channels(channels: int | Sequence[int]) -> tuple[int, int, int]:
    widths = (channels,) * 3 if isinstance(channels, int) else tuple(channels)
    if len(widths) != 3 or not all(isinstance(c, int) and c > 0 for c in widths):
        raise ValueError(
            f"channels must be a positive int or three of them (28x28, 14x14, 7x7 stages), "
            f"got {channels!r}"
        )
    return widths


def build_binaryfacenet_lce(
    channels: int | Sequence[int] = (64, 96, 192),
    embedding: int = 128,
    input_size: int = 112,
    output_head: bool = True,
    stem_channels: int = 32,
    se_channels: int = 4,
    shortcuts: bool = False,
    name: str = "binaryfacenet_lce",
) -> tf.keras.Model:
    """Build BinaryFaceNet-LCE; input is a normalised ``(N, input_size, input_size, 3)`` tensor.

    ``channels``: widths of the 28x28 (head, GFE), 14x14 (LFE 1) and 7x7 (LFE 2) stages at a
    112 input, or one width for all three; multiples of 32 fill LCE's 32-bit bitpacked words.
    ``stem_channels``: width of the float 56x56 stem. ``embedding``: descriptor size.
    ``output_head``: append the insightface "E" head of the faithful model (BN -> Flatten ->
    Dense -> BN); without it the descriptor is the flattened embedding block.
    ``shortcuts``: a float path across each LFE block's strided binary conv (``_lfe``).
    """
    c28, c14, c7 = _stage_channels(channels)
    if input_size < 48:
        raise ValueError(
            f"input_size must be at least 48 (the embedding block needs a 3x3 map), "
            f"got {input_size}"
        )
    inp = layers.Input((input_size, input_size, 3), name="input")
    h, x = _head(inp, stem_channels, c28, se_channels)
    x = _gfe(h, x, c28)
    x = _lfe(x, c14, "lfe1", shortcuts)
    x = _lfe(x, c7, "lfe2", shortcuts)
    x = _embedding_block(x, embedding)
    if output_head:
        x = _output_head(x, embedding)
    else:
        x = layers.Flatten(name="embedding")(x)
    return tf.keras.Model(inp, x, name=name)
