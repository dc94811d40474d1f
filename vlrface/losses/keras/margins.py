"""Softmax heads for Keras: plain softmax, CosFace, SphereFace, AdaFace, Laplacian-quality ArcFace.

Every head holds class centres ``(dim, n_classes)`` on the unit sphere, as ``ArcFaceHead``
(``vlrface.losses.keras.arcface``), and returns logits for ``arcface_loss`` (softmax cross-entropy).
``scale`` is the paper's s and ``margin`` its m. ``vlrface.losses.torch.margins`` holds the same
heads with the same parameter names and math in PyTorch (weights copy over unchanged).
"""

from __future__ import annotations

import math

from vlrface._keras import tf
from vlrface.losses.quality import check_statistic


@tf.keras.utils.register_keras_serializable(package="vlrface")
class SoftmaxHead(tf.keras.layers.Layer):
    """A plain softmax classifier, ``logits = e W + b`` (no margin; the labels are not used).
    ``bn_dropout``: BatchNormalization and dropout 0.5 before it (SqueezeFacePoseNet §3's head).
    ``centres`` ``(dim, n_classes)`` is ``W``, so a class-mean warm start fits as for the margin
    heads. As ``vlrface.losses.torch.margins.SoftmaxHead``."""

    def __init__(self, n_classes: int, bn_dropout: bool = False, **kwargs):
        super().__init__(**kwargs)
        if n_classes < 2:
            raise ValueError(f"SoftmaxHead needs >= 2 classes, got {n_classes}")
        self.n_classes, self.bn_dropout = int(n_classes), bool(bn_dropout)
        if self.bn_dropout:
            self.bn = tf.keras.layers.BatchNormalization(name="bn")
            self.dropout = tf.keras.layers.Dropout(0.5, name="dropout")

    def build(self, input_shape):
        dim = int(input_shape[-1])
        if self.bn_dropout:
            self.bn.build((None, dim))
        self.centres = self.add_weight(
            name="centres",
            shape=(dim, self.n_classes),
            initializer=tf.keras.initializers.GlorotUniform(),
            trainable=True,
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.n_classes,), initializer="zeros", trainable=True
        )
        super().build(input_shape)

    def call(self, embeddings, labels=None, training=None):
        e = tf.cast(embeddings, tf.float32)
        if self.bn_dropout:
            e = self.dropout(self.bn(e, training=training), training=training)
        return tf.matmul(e, self.centres) + self.bias

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes, "bn_dropout": self.bn_dropout}


class _MarginHead(tf.keras.layers.Layer):
    """Class centres and the cosine of ``(embeddings, centres)``; subclasses add the margin."""

    eps = 1e-7  # cosine clip

    def __init__(self, n_classes: int, scale: float, margin: float, **kwargs):
        super().__init__(**kwargs)
        if n_classes < 2:
            raise ValueError(f"{type(self).__name__} needs >= 2 classes, got {n_classes}")
        self.n_classes, self.scale, self.margin = int(n_classes), float(scale), float(margin)

    def build(self, input_shape):
        self.centres = self.add_weight(
            name="centres",
            shape=(int(input_shape[-1]), self.n_classes),
            initializer=tf.keras.initializers.RandomNormal(stddev=0.01),
            trainable=True,
        )
        super().build(input_shape)

    def cosine(self, embeddings):
        e = tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1)
        cos = tf.matmul(e, tf.math.l2_normalize(self.centres, axis=0))
        return tf.clip_by_value(cos, -1.0 + self.eps, 1.0 - self.eps)

    def onehot(self, labels):
        return tf.one_hot(labels, self.n_classes, dtype=tf.float32)

    def get_config(self):
        return {
            **super().get_config(),
            "n_classes": self.n_classes,
            "scale": self.scale,
            "margin": self.margin,
        }


@tf.keras.utils.register_keras_serializable(package="vlrface")
class CosFaceHead(_MarginHead):
    """CosFace / LMCL (Wang et al. 2018, eq. 4): target logit ``s * (cos(theta_y) - m)``."""

    def __init__(self, n_classes: int, scale: float = 64.0, margin: float = 0.35, **kwargs):
        super().__init__(n_classes, scale, margin, **kwargs)

    def call(self, embeddings, labels):
        cos = self.cosine(embeddings)
        return self.scale * (cos - self.margin * self.onehot(labels))


@tf.keras.utils.register_keras_serializable(package="vlrface")
class SphereFaceHead(_MarginHead):
    """SphereFace / A-Softmax (Liu et al. 2017, §3.3, eq. 7) on normalised features.

    Target logit ``s * psi(theta_y)``, ``psi(theta) = (-1)^k cos(m theta) - 2k`` for
    ``theta in [k pi / m, (k + 1) pi / m]``: monotonic in theta for any ``m >= 1`` (the paper uses
    integer m = 4). Variant: features are L2-normalised and scaled by s (as in the slides'
    ``s cos(m theta)``) instead of the paper's ``||x|| psi``, and the paper's lambda annealing
    (``(lambda cos + psi) / (1 + lambda)``) is left out.
    """

    def __init__(self, n_classes: int, scale: float = 30.0, margin: float = 4.0, **kwargs):
        if margin < 1:
            raise ValueError(f"SphereFace's multiplicative margin must be >= 1, got {margin}")
        super().__init__(n_classes, scale, margin, **kwargs)

    def call(self, embeddings, labels):
        cos = self.cosine(embeddings)
        m_theta = self.margin * tf.acos(cos)
        k = tf.stop_gradient(tf.floor(m_theta / math.pi))
        sign = 1.0 - 2.0 * tf.math.floormod(k, 2.0)
        psi = sign * tf.cos(m_theta) - 2.0 * k
        onehot = self.onehot(labels)
        return self.scale * (onehot * psi + (1.0 - onehot) * cos)


@tf.keras.utils.register_keras_serializable(package="vlrface")
class AdaFaceHead(_MarginHead):
    """AdaFace (Kim et al. 2022, §3.3-3.4, eq. 11-12): a margin adapted to the feature norm.

    ``z = clip(h * (||e|| - mu) / (sigma + eps), -1, 1)`` with ``mu, sigma`` the batch mean and
    (unbiased) std of the clipped norms, smoothed by EMA (``t_alpha`` = 1 - the paper's alpha =
    0.99; initial 20 and 100 as the official code). Target logit
    ``s * (cos(clip(theta_y - m z, eps, pi - eps)) - (m + m z))``: the angular part
    ``g_angle = -m z`` and the additive part ``g_add = m z + m``. The norm carries no gradient.
    The statistics update in every call but ``training=False``. Defaults: the paper's
    m = 0.4, h = 0.333, s = 64.
    """

    eps = 1e-3  # the official code's clip for the cosine and the angle

    def __init__(
        self,
        n_classes: int,
        scale: float = 64.0,
        margin: float = 0.4,
        h: float = 0.333,
        t_alpha: float = 0.01,
        **kwargs,
    ):
        super().__init__(n_classes, scale, margin, **kwargs)
        self.h, self.t_alpha = float(h), float(t_alpha)

    def build(self, input_shape):
        self.batch_mean = self.add_weight(
            name="batch_mean", shape=(), initializer=tf.keras.initializers.Constant(20.0),
            trainable=False,
        )  # fmt: skip
        self.batch_std = self.add_weight(
            name="batch_std", shape=(), initializer=tf.keras.initializers.Constant(100.0),
            trainable=False,
        )  # fmt: skip
        super().build(input_shape)

    def call(self, embeddings, labels, training=None):
        e = tf.cast(embeddings, tf.float32)
        norms = tf.stop_gradient(tf.clip_by_value(tf.norm(e, axis=1), 0.001, 100.0))
        if training is not False:
            n = tf.cast(tf.shape(norms)[0], tf.float32)
            mean = tf.reduce_mean(norms)
            std = tf.sqrt(tf.reduce_sum(tf.square(norms - mean)) / tf.maximum(n - 1.0, 1.0))
            a = self.t_alpha
            self.batch_mean.assign(a * mean + (1.0 - a) * self.batch_mean)
            self.batch_std.assign(a * std + (1.0 - a) * self.batch_std)
        z = (norms - self.batch_mean) / (self.batch_std + self.eps)
        z = tf.clip_by_value(z * self.h, -1.0, 1.0)[:, None]
        onehot = self.onehot(labels)
        theta = tf.acos(self.cosine(e)) - onehot * self.margin * z
        theta = tf.clip_by_value(theta, self.eps, math.pi - self.eps)
        return self.scale * (tf.cos(theta) - onehot * (self.margin + self.margin * z))

    def get_config(self):
        return {**super().get_config(), "h": self.h, "t_alpha": self.t_alpha}


@tf.keras.utils.register_keras_serializable(package="vlrface")
class LaplacianMarginHead(_MarginHead):
    """ArcFace with a per-image margin from Laplacian image quality (``vlrface.losses.quality``).

    ``call(embeddings, labels, quality)``: ``m_i = clip(quality_scale / q_i, min_margin,
    max_margin)`` and target logit ``s * cos(clip(theta_y + m_i, eps, pi - eps))`` (anchor
    ``AdaptiveArcFace``, s = 64). ``margin`` is unused (kept for a uniform constructor). The
    anchor detaches the margin term from the gradient; here it is differentiated as ArcFace.
    ``statistic``: how the trainer measures ``quality`` (``laplacian_quality``).
    """

    eps = 1e-5  # the anchor's clip
    needs_quality = True

    def __init__(
        self,
        n_classes: int,
        scale: float = 64.0,
        margin: float = 0.0,
        quality_scale: float = 1.0,
        min_margin: float = 0.0,
        max_margin: float = math.pi,
        statistic: str = "mean_abs",
        **kwargs,
    ):
        super().__init__(n_classes, scale, margin, **kwargs)
        self.quality_scale = float(quality_scale)
        self.min_margin, self.max_margin = float(min_margin), float(max_margin)
        self.statistic = check_statistic(statistic)

    def margins(self, quality):
        q = tf.maximum(tf.stop_gradient(tf.cast(quality, tf.float32)), 1e-6)
        return tf.clip_by_value(self.quality_scale / q, self.min_margin, self.max_margin)

    def call(self, embeddings, labels, quality):
        onehot = self.onehot(labels)
        theta = tf.acos(self.cosine(embeddings)) + onehot * self.margins(quality)[:, None]
        return self.scale * tf.cos(tf.clip_by_value(theta, self.eps, math.pi - self.eps))

    def get_config(self):
        return {
            **super().get_config(),
            "quality_scale": self.quality_scale,
            "min_margin": self.min_margin,
            "max_margin": self.max_margin,
            "statistic": self.statistic,
        }


def laplacian_quality(images, statistic: str = "mean_abs", pixel_scale: float = 128.0):
    """Per-image Laplacian quality of an NHWC batch, as ``quality.laplacian_quality``.

    ``pixel_scale`` maps the batch back to uint8 units: 128 for ``preprocess.normalize``'s
    ``(x - 127.5) / 128`` (the Laplacian ignores the offset), 1 for uint8 pixels.
    """
    check_statistic(statistic)
    x = tf.cast(images, tf.float32) * pixel_scale
    p = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")  # reflect-101, as cv2
    lap = p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4.0 * x
    if statistic == "mean_abs":
        return tf.reduce_mean(tf.abs(lap), axis=[1, 2, 3])
    return tf.math.reduce_variance(lap, axis=[1, 2, 3])
