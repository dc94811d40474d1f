"""Octuplet loss and feature distillation for Keras / TensorFlow (tf ops).

Same math and parameter names as ``vlrface.losses.torch.pairs``.

Octuplet loss (Knoche et al., "Octuplet Loss", FG 2023, §3; facts from the released code,
``Martlgap/octuplet-loss``): the batch is ``[HR_1..B; LR_1..B]`` (``embeddings`` of shape
``(2B, d)``, ``labels`` of shape ``(B,)``, LR_i the degraded HR_i), with four batch-hard triplet
terms over the distance blocks HR:HR, HR:LR, LR:HR and LR:LR. In each block, for anchor row i:

* hardest positive: the largest distance to a column of the same label, the diagonal (i:i)
  excluded in every block, as in the code (so the HR_i:LR_i pair is not a positive; a batch needs
  two images of an identity to have positives; with none the term is 0);
* hardest negative: the smallest distance to a column of another label (the code adds the row's
  largest negative distance to every non-negative entry before taking the row minimum);
* term ``max(d_pos - d_neg + margin, 0)``; the loss is the mean over i of the sum of the enabled
  terms (``terms``: HR:HR, HR:LR, LR:HR, LR:LR). Defaults as the code: margin 0.5, Euclidean
  distance of the embeddings as given (normalise them first if the model does not).

Feature distillation (Massoli et al., papers/cross-resolution-learning.md §3.2, eq. 1): teacher
features of HR images vs student features of their LR versions, ``lam = 0.1``. ``reduction``
``"mean"`` is the anchor code's ``lam * F.mse_loss`` (mean over all elements); ``"sum"`` is eq. 1
as printed (sum over images of the squared L2 distance). The teacher side carries no gradient.
"""

from __future__ import annotations

from vlrface._keras import tf

METRICS = ("euclidean", "euclidean_squared", "cosine")


def pairwise_distances(embeddings, metric: str = "euclidean"):
    """All pairwise distances of ``(N, d)`` embeddings, ``(N, N)``."""
    e = tf.cast(embeddings, tf.float32)
    if metric == "cosine":
        n = tf.math.l2_normalize(e, axis=1)
        return 1.0 - tf.matmul(n, n, transpose_b=True)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    dot = tf.matmul(e, e, transpose_b=True)
    sq = tf.linalg.diag_part(dot)
    d2 = tf.maximum(sq[:, None] - 2.0 * dot + sq[None, :], 0.0)
    if metric == "euclidean_squared":
        return d2
    zero = tf.cast(tf.equal(d2, 0.0), tf.float32)  # sqrt has no gradient at 0
    return tf.sqrt(d2 + zero * 1e-16) * (1.0 - zero)


def batch_hard_triplet(distances, pos, neg, margin: float):
    """Per-row ``max(hardest positive - hardest negative + margin, 0)`` (float masks)."""
    hardest_pos = tf.reduce_max(distances * pos, axis=1)
    shift = tf.reduce_max(distances * neg, axis=1, keepdims=True) * (1.0 - neg)
    hardest_neg = tf.reduce_min(distances + shift, axis=1)
    return tf.maximum(hardest_pos - hardest_neg + margin, 0.0)


def octuplet_loss(
    embeddings, labels, margin: float = 0.5, metric: str = "euclidean", terms=(1, 1, 1, 1)
):
    """Octuplet loss of ``[HR_1..B; LR_1..B]`` embeddings with labels ``(B,)``."""
    n, b = embeddings.shape[0], labels.shape[0]
    if n is not None and b is not None and n != 2 * b:
        raise ValueError(f"octuplet loss needs 2B = {2 * b} embeddings, got {n}")
    b = tf.shape(labels)[0]  # dynamic, for tf.function with an unknown batch size
    if len(terms) != 4:
        raise ValueError(f"terms weighs HR:HR, HR:LR, LR:HR, LR:LR: 4 values, got {terms}")
    d = pairwise_distances(embeddings, metric)
    same = tf.equal(labels[:, None], labels[None, :])
    pos = tf.cast(same, tf.float32) * (1.0 - tf.eye(b))
    neg = 1.0 - tf.cast(same, tf.float32)
    blocks = (d[:b, :b], d[:b, b:], d[b:, :b], d[b:, b:])  # HR:HR, HR:LR, LR:HR, LR:LR
    total = tf.add_n(
        [
            float(w) * batch_hard_triplet(x, pos, neg, margin)
            for w, x in zip(terms, blocks, strict=True)
        ]
    )
    return tf.reduce_mean(total)


DISTILL_DISTANCES = ("mse", "cosine")


def feature_distillation_loss(
    teacher, student, lam: float = 0.1, reduction: str = "mean", distance: str = "mse"
):
    """``lam`` times the squared error of student (LR) vs teacher (HR) features.

    ``distance="cosine"`` compares the unit-normalised features instead (per sample
    ``||s/|s| - t/|t|||^2 = 2 - 2 cos``; ``mean``/``sum`` over the samples): invariant to the
    student's embedding scale. Use it for a student trained from scratch whose embedding ends in
    a BatchNorm: under ``mse`` that BN's gamma shrinks towards 0 (the student's output collapses
    onto the teacher's mean embedding, MSE = the teacher's variance), a fast minimum that leaves
    every other layer with vanishing gradients and the margin loss at chance."""
    if distance not in DISTILL_DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; choose one of {list(DISTILL_DISTANCES)}")
    t = tf.stop_gradient(tf.cast(teacher, tf.float32))
    s = tf.cast(student, tf.float32)
    if distance == "cosine":
        sq = tf.reduce_sum(tf.square(tf.math.l2_normalize(s, 1) - tf.math.l2_normalize(t, 1)), 1)
    else:
        sq = tf.square(s - t)
    if reduction == "mean":
        return lam * tf.reduce_mean(sq)
    if reduction == "sum":
        return lam * tf.reduce_sum(sq)
    raise ValueError(f"unknown reduction {reduction!r}; choose 'mean' or 'sum'")
