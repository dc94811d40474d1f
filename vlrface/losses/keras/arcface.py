"""ArcFace (additive angular margin, Deng et al. 2019) for Keras models.

``logits = s * cos(theta_y + m)`` for the true class and ``s * cos(theta_j)`` for the others, with
insightface's fallback ``cos(theta) - m * sin(m)`` where ``theta + m`` would pass pi (so the
target logit stays monotonic in theta). BinaryFaceNet trains every BNN with ``s = 16``.
"""

from __future__ import annotations

import math

from vlrface._keras import tf


@tf.keras.utils.register_keras_serializable(package="vlrface")
class ArcFaceHead(tf.keras.layers.Layer):
    """Class centres on the unit sphere and the ArcFace logits of ``(embeddings, labels)``."""

    def __init__(self, n_classes: int, scale: float = 16.0, margin: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        if n_classes < 2:
            raise ValueError(f"ArcFace needs >= 2 classes, got {n_classes}")
        self.n_classes, self.scale, self.margin = int(n_classes), float(scale), float(margin)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.centres = self.add_weight(
            name="centres",
            shape=(dim, self.n_classes),
            initializer=tf.keras.initializers.RandomNormal(stddev=0.01),
            trainable=True,
        )
        super().build(input_shape)

    def cosine(self, embeddings):
        """Cosine similarity of each embedding to each class centre, ``(N, n_classes)``."""
        e = tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1)
        w = tf.math.l2_normalize(self.centres, axis=0)
        return tf.matmul(e, w)

    def call(self, embeddings, labels):
        cos = tf.clip_by_value(self.cosine(embeddings), -1.0 + 1e-7, 1.0 - 1e-7)
        sin = tf.sqrt(1.0 - cos * cos)
        m = self.margin
        phi = cos * math.cos(m) - sin * math.sin(m)  # cos(theta + m)
        phi = tf.where(cos > math.cos(math.pi - m), phi, cos - math.sin(math.pi - m) * m)
        onehot = tf.one_hot(labels, self.n_classes, dtype=cos.dtype)
        return self.scale * (onehot * phi + (1.0 - onehot) * cos)

    def get_config(self):
        return {
            **super().get_config(),
            "n_classes": self.n_classes,
            "scale": self.scale,
            "margin": self.margin,
        }


def arcface_loss(logits, labels):
    """Mean softmax cross-entropy of ArcFace logits."""
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )
