"""Margin heads, octuplet loss and distillation: hand-computed values, Keras == PyTorch.

The batch: class centres are the first three unit axes of R^4, so each sample's angles to the
centres are known by construction (x0 at 60 deg to its class 0, x1 at 45 deg to its class 2,
x2 at 168.7 deg to its class 0, which takes ArcFace's fallback branch). Expected values are
written from the papers' formulas with numpy / math, independently of the implementations.
"""

import math

import cv2
import numpy as np
import pytest
import torch

from vlrface._keras import tf
from vlrface.losses import quality as q_np
from vlrface.losses.keras import (
    AdaFaceHead,
    ArcFaceHead,
    CosFaceHead,
    LaplacianMarginHead,
    SoftmaxHead,
    SphereFaceHead,
    arcface_loss,
    feature_distillation_loss,
    laplacian_quality,
    octuplet_loss,
)
from vlrface.losses.torch import margins as tm
from vlrface.losses.torch import pairs as tp

E = np.array(
    [[0.5, math.sqrt(3) / 2, 0, 0], [0, 0, 3 / math.sqrt(2), 3 / math.sqrt(2)], [-1, 0.2, 0, 0]],
    np.float32,
)
Y = np.array([0, 2, 0])
W = np.eye(4, 3, dtype=np.float32)
COS = np.array(  # cosines to the three axes, by hand
    [
        [0.5, math.sqrt(3) / 2, 0],
        [0, 0, 1 / math.sqrt(2)],
        [-1 / math.sqrt(1.04), 0.2 / math.sqrt(1.04), 0],
    ]
)
THETA_Y = np.arccos(COS[np.arange(3), Y])  # 60 deg, 45 deg, 168.7 deg


def ce(logits, y=Y):
    logits = np.asarray(logits, np.float64)
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    return float(np.mean(lse - logits[np.arange(len(y)), y]))


def with_target(target, scale):
    out = scale * COS.copy()
    out[np.arange(3), Y] = target
    return out


def keras_head(cls, **kw):
    head = cls(3, **kw)
    head.build((None, 4))
    head.centres.assign(W)
    return head


def torch_head(cls, **kw):
    head = cls(4, 3, **kw)
    head.centres.data = torch.from_numpy(W.copy())
    return head


def run_keras(head, *extra, **kw):
    e = tf.constant(E)
    with tf.GradientTape() as tape:
        tape.watch(e)
        logits = head(e, tf.constant(Y), *extra, **kw)
        loss = arcface_loss(logits, tf.constant(Y))
    grads = tape.gradient(loss, [e, head.centres])
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    return logits.numpy(), float(loss)


def run_torch(head, *extra):
    e = torch.from_numpy(E.copy()).requires_grad_(True)
    logits = head(e, torch.from_numpy(Y), *extra)
    loss = tm.margin_softmax_loss(logits, torch.from_numpy(Y))
    loss.backward()
    assert torch.isfinite(e.grad).all() and torch.isfinite(head.centres.grad).all()
    return logits.detach().numpy(), float(loss.detach())


def check(keras, torch_, expected_logits, atol=1e-4):
    (kl, kloss), (tl, tloss) = keras, torch_
    np.testing.assert_allclose(kl, expected_logits, atol=atol)
    np.testing.assert_allclose(kloss, ce(expected_logits), atol=atol)
    np.testing.assert_allclose(kl, tl, atol=1e-5)  # Keras == PyTorch
    assert abs(kloss - tloss) < 1e-5


def test_arcface_angles_and_fallback():
    s, m = 16.0, 0.5
    target = s * np.cos(THETA_Y + m)
    # x2: theta + m passes pi, insightface's fallback cos(theta) - m sin(m)
    assert THETA_Y[2] + m > math.pi
    target[2] = s * (COS[2, 0] - m * math.sin(m))
    assert target[0] == pytest.approx(16 * math.cos(math.pi / 3 + 0.5))  # 1.7571...
    expected = with_target(target, s)
    check(run_keras(keras_head(ArcFaceHead)), run_torch(torch_head(tm.ArcFaceHead)), expected)


def test_cosface():
    s, m = 64.0, 0.35
    expected = with_target(s * (COS[np.arange(3), Y] - m), s)
    assert expected[0, 0] == pytest.approx(64 * (0.5 - 0.35))  # 9.6
    check(run_keras(keras_head(CosFaceHead)), run_torch(torch_head(tm.CosFaceHead)), expected)


def test_sphereface_psi():
    s, m = 30.0, 4.0
    # psi(60 deg): m theta = 240 deg, k = 1: -cos(240 deg) - 2 = -1.5
    # psi(45 deg): m theta = 180 deg, k = 1 (or 0, psi is continuous): -1
    # psi(168.7 deg): m theta = 674.9 deg, k = 3: -cos(m theta) - 6
    k = np.floor(m * THETA_Y / math.pi)
    psi = (-1.0) ** k * np.cos(m * THETA_Y) - 2 * k
    np.testing.assert_allclose(psi[:2], [-1.5, -1.0], atol=1e-6)
    expected = with_target(s * psi, s)
    check(run_keras(keras_head(SphereFaceHead)), run_torch(torch_head(tm.SphereFaceHead)), expected)
    with pytest.raises(ValueError, match="multiplicative"):
        SphereFaceHead(3, margin=0.5)


def adaface_expected(mean, std, s=64.0, m=0.4, h=0.333):
    norms = np.linalg.norm(E.astype(np.float64), axis=1)  # 1, 3, sqrt(1.04)
    z = np.clip(h * (norms - mean) / (std + 1e-3), -1, 1)
    theta = np.arccos(np.clip(COS, -1 + 1e-3, 1 - 1e-3))
    theta[np.arange(3), Y] -= m * z  # g_angle = -m z
    logits = np.cos(np.clip(theta, 1e-3, math.pi - 1e-3))
    logits[np.arange(3), Y] -= m + m * z  # g_add = m z + m
    return s * logits


def test_adaface_batch_statistics_and_ema():
    norms = np.array([1.0, 3.0, math.sqrt(1.04)])
    mu, sd = norms.mean(), norms.std(ddof=1)  # 1.6733, 1.1432
    # t_alpha = 1: the batch's own statistics
    expected = adaface_expected(mu, sd)
    kh, th = keras_head(AdaFaceHead, t_alpha=1.0), torch_head(tm.AdaFaceHead, t_alpha=1.0)
    check(run_keras(kh, training=True), run_torch(th.train()), expected)
    # default t_alpha = 0.01 from the official code's start (20, 100): two EMA steps
    kh, th = keras_head(AdaFaceHead), torch_head(tm.AdaFaceHead)
    run_keras(kh, training=True), run_torch(th.train())
    keras, torch_ = run_keras(kh, training=True), run_torch(th.train())
    mean2 = 0.01 * mu + 0.99 * (0.01 * mu + 0.99 * 20)
    std2 = 0.01 * sd + 0.99 * (0.01 * sd + 0.99 * 100)
    assert float(kh.batch_mean) == pytest.approx(mean2, rel=1e-6)
    assert float(th.batch_std) == pytest.approx(std2, rel=1e-6)
    check(keras, torch_, adaface_expected(mean2, std2))
    # no update outside training
    run_keras(kh, training=False), run_torch(th.eval())
    assert float(kh.batch_mean) == pytest.approx(mean2, rel=1e-6)
    assert float(th.batch_mean) == pytest.approx(mean2, rel=1e-6)


@pytest.mark.parametrize("bounds", [(0.0, math.pi), (0.35, 0.5)])
def test_laplacian_margin_head(bounds):
    quality = np.array([2.0, 10.0, 0.5], np.float32)  # margins 1/q: 0.5, 0.1, 2.0
    m = np.clip(1 / quality.astype(np.float64), *bounds)
    kw = {"min_margin": bounds[0], "max_margin": bounds[1]}
    s, eps = 64.0, 1e-5
    target = s * np.cos(np.clip(THETA_Y + m, eps, math.pi - eps))
    expected = with_target(target, s)
    keras = run_keras(keras_head(LaplacianMarginHead, **kw), tf.constant(quality))
    torch_ = run_torch(torch_head(tm.LaplacianMarginHead, **kw), torch.from_numpy(quality))
    check(keras, torch_, expected)


def test_laplacian_quality_hand_value_and_frameworks():
    dot = np.zeros((3, 3), np.uint8)
    dot[1, 1] = 4
    # reflect-101 border: centre -16, edge midpoints +8 (the centre counted twice), corners 0
    assert q_np.laplacian(dot).tolist() == [[0, 8, 0], [8, -16, 8], [0, 8, 0]]
    assert q_np.laplacian_quality(dot) == pytest.approx(48 / 9)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (2, 16, 12, 3), dtype=np.uint8)
    imgs[1] = cv2.GaussianBlur(imgs[1], (5, 5), 2)
    for img in imgs:
        np.testing.assert_allclose(q_np.laplacian(img), cv2.Laplacian(img, cv2.CV_64F))
    for stat in ("mean_abs", "var"):
        ref = [q_np.laplacian_quality(img, stat) for img in imgs]
        assert ref[1] < ref[0] / 3  # blur lowers the quality
        x = (imgs.astype(np.float32) - 127.5) / 128  # preprocess.normalize
        np.testing.assert_allclose(laplacian_quality(x, stat).numpy(), ref, rtol=1e-5)
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        np.testing.assert_allclose(tm.laplacian_quality(xt, stat).numpy(), ref, rtol=1e-5)
    np.testing.assert_allclose(q_np.margin_from_quality([2.0, 0.1], 1.0, 0.0, 5.0), [0.5, 5.0])
    with pytest.raises(ValueError, match="statistic 'max'"):
        q_np.laplacian_quality(dot, "max")


def octuplet_loops(emb, labels, margin):
    """Batch-hard triplets written with loops, the code's conventions (diagonal never positive)."""
    b = len(labels)
    d = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    total = 0.0
    for rows, cols in [(0, 0), (0, b), (b, 0), (b, b)]:
        for i in range(b):
            pos = [d[rows + i, cols + j] for j in range(b) if labels[j] == labels[i] and j != i]
            neg = [d[rows + i, cols + j] for j in range(b) if labels[j] != labels[i]]
            total += max(max(pos, default=0.0) - min(neg) + margin, 0.0)
    return total / b


def test_octuplet_hand_value():
    hr = [[0, 0], [1, 0], [0, 2]]
    lr = [[0, 1], [1, 1], [3, 0]]
    emb, labels = np.array(hr + lr, np.float32), np.array([0, 0, 1])
    # HR:LR only, margin 1: anchor HR_1 has positive LR_0 at sqrt 2 and negative LR_2 at 2:
    # sqrt(2) - 2 + 1; HR_0: sqrt(2) - 3 + 1 < 0; HR_2: no positive, 0 - 1 + 1 = 0
    expected = (math.sqrt(2) - 1) / 3
    k = octuplet_loss(tf.constant(emb), tf.constant(labels), margin=1.0, terms=(0, 1, 0, 0))
    t = tp.octuplet_loss(torch.from_numpy(emb), torch.from_numpy(labels), 1.0, terms=(0, 1, 0, 0))
    assert float(k) == pytest.approx(expected, abs=1e-6)
    assert float(t) == pytest.approx(expected, abs=1e-6)
    for margin in (0.5, 1.0, 2.0):
        ref = octuplet_loops(emb.astype(np.float64), labels, margin)
        assert float(octuplet_loss(tf.constant(emb), tf.constant(labels), margin)) == (
            pytest.approx(ref, abs=1e-5)
        )
    with pytest.raises(ValueError, match="2B = 6"):
        tp.octuplet_loss(torch.zeros(5, 2), torch.from_numpy(labels))


def test_octuplet_keras_equals_torch_with_finite_gradients():
    rng = np.random.default_rng(3)
    labels = np.array([0, 0, 1, 1, 2, 3])
    emb = rng.normal(size=(12, 8)).astype(np.float32)
    emb[6] = emb[0]  # an LR embedding equal to its HR one: a zero distance
    for metric in ("euclidean", "euclidean_squared", "cosine"):
        e = tf.constant(emb)
        with tf.GradientTape() as tape:
            tape.watch(e)
            k = octuplet_loss(e, tf.constant(labels), margin=0.5, metric=metric)
        kg = tape.gradient(k, e).numpy()
        et = torch.from_numpy(emb.copy()).requires_grad_(True)
        t = tp.octuplet_loss(et, torch.from_numpy(labels), margin=0.5, metric=metric)
        t.backward()
        assert float(k) > 0 and abs(float(k) - float(t.detach())) < 1e-5
        assert np.isfinite(kg).all() and torch.isfinite(et.grad).all()
        np.testing.assert_allclose(kg, et.grad.numpy(), atol=1e-5)
    ref = octuplet_loops(emb.astype(np.float64), labels, 0.5)
    assert float(octuplet_loss(tf.constant(emb), tf.constant(labels))) == pytest.approx(ref, 1e-5)


def test_feature_distillation():
    teacher = np.array([[1, 0, 0, 2], [0, 1, 1, 0]], np.float32)
    student = np.array([[0, 0, 0, 1], [0, 3, 1, 0]], np.float32)
    # squared errors: 1 + 1 (sample 0) and 4 (sample 1): sum 6, mean over 8 elements 0.75
    cases = {"mean": 0.1 * 6 / 8, "sum": 0.1 * 6}
    for reduction, expected in cases.items():
        tt, st = tf.constant(teacher), tf.constant(student)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([tt, st])
            k = feature_distillation_loss(tt, st, reduction=reduction)
        assert tape.gradient(k, tt) is None  # the teacher is frozen
        assert np.isfinite(tape.gradient(k, st).numpy()).all()
        pt, ps = (torch.from_numpy(a.copy()).requires_grad_(True) for a in (teacher, student))
        t = tp.feature_distillation_loss(pt, ps, reduction=reduction)
        t.backward()
        assert pt.grad is None and torch.isfinite(ps.grad).all()
        assert float(k) == pytest.approx(expected)
        assert float(t.detach()) == pytest.approx(expected)
    with pytest.raises(ValueError, match="reduction"):
        tp.feature_distillation_loss(torch.zeros(1), torch.zeros(1), reduction="max")


def test_heads_serialise():
    for cls in (CosFaceHead, SphereFaceHead, AdaFaceHead, LaplacianMarginHead):
        head = cls(5, scale=8.0)
        clone = cls.from_config(head.get_config())
        assert clone.get_config() == head.get_config()
    clone = LaplacianMarginHead.from_config(LaplacianMarginHead(5, statistic="var").get_config())
    assert clone.statistic == "var"
    assert SoftmaxHead.from_config(SoftmaxHead(5, True).get_config()).bn_dropout


@pytest.mark.parametrize("bn_dropout", [False, True])
def test_softmax_head_keras_equals_torch(bn_dropout):
    """The plain softmax head: logits ``e W + b`` (with BN in inference mode and dropout off
    when ``bn_dropout``), the same in both frameworks once the weights are copied over."""
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    kh = SoftmaxHead(3, bn_dropout)
    kh.build((None, 4))
    kh.centres.assign(w)
    kh.bias.assign(b)
    th = tm.SoftmaxHead(4, 3, bn_dropout).eval()
    th.net[-1].weight.data = torch.from_numpy(w.T.copy())
    th.net[-1].bias.data = torch.from_numpy(b)
    expected = E.astype(np.float64) @ w + b
    if bn_dropout:  # fresh moving statistics (0, 1): x / sqrt(1 + eps), each framework's eps
        keras_eps, torch_eps = kh.bn.epsilon, th.net[0].eps
        np.testing.assert_allclose(kh(E, Y, training=False).numpy(),
                                   E / np.sqrt(1 + keras_eps) @ w + b, atol=1e-5)  # fmt: skip
        with torch.no_grad():
            out = th(torch.from_numpy(E), torch.from_numpy(Y)).numpy()
        np.testing.assert_allclose(out, E / np.sqrt(1 + torch_eps) @ w + b, atol=1e-5)
        return
    keras, torch_ = run_keras_plain(kh), run_torch_plain(th)
    check(keras, torch_, expected)


def run_keras_plain(head):
    logits = head(tf.constant(E), tf.constant(Y))
    return logits.numpy(), float(arcface_loss(logits, tf.constant(Y)))


def run_torch_plain(head):
    logits = head(torch.from_numpy(E.copy()), torch.from_numpy(Y))
    loss = tm.margin_softmax_loss(logits, torch.from_numpy(Y))
    return logits.detach().numpy(), float(loss.detach())


def test_the_loss_table_names_real_heads_with_their_parameters():
    """Each row of ``LOSS_HEADS`` names a Keras and a torch class (registered for loading, the
    same class name) whose constructors take the row's parameters with the same defaults, margin
    heads with a ``cosine`` (the plain logits ``train_acc`` is measured on)."""
    import inspect

    from vlrface._keras import custom_objects
    from vlrface.losses.heads import LOSS_HEADS, head_class

    objects = custom_objects()
    for kind, row in LOSS_HEADS.items():
        k, t = head_class(kind, "keras"), head_class(kind, "torch")
        assert k.__name__ == t.__name__ and objects[f"vlrface>{k.__name__}"] is k
        for cls in (k, t):
            takes = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
            assert set(row.params) <= takes, (kind, cls)
        k_args, t_args = (inspect.signature(c.__init__).parameters for c in (k, t))
        assert all(k_args[p].default == t_args[p].default for p in row.params), kind  # twins
        assert hasattr(k(3), "cosine") == hasattr(t(4, 3), "cosine") == (kind != "softmax")
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        head_class("focal", "keras")


def test_feature_distillation_cosine_ignores_the_students_scale():
    """``distance="cosine"``: 2 - 2 cos per sample, Keras == PyTorch, and no gradient along the
    student's own embedding. Under ``mse`` that gradient pulls the embedding towards 0: a
    from-scratch binaryfacenet_lce student shrank its last BN's gamma from 1 to 0.014 and
    stayed at chance (celeba_distill_lce, issue 12); this is the property that run lacked."""
    teacher = np.array([[1, 0, 0, 2], [0, 1, 1, 0]], np.float32)
    student = np.array([[0, 0, 0, 1], [0, 3, 1, 0]], np.float32)
    cos = np.array([2 / math.sqrt(5), 4 / math.sqrt(2 * 10)])
    cases = {"mean": 0.1 * np.mean(2 - 2 * cos), "sum": 0.1 * np.sum(2 - 2 * cos)}
    for reduction, expected in cases.items():
        k = feature_distillation_loss(teacher, student, reduction=reduction, distance="cosine")
        t = tp.feature_distillation_loss(
            torch.from_numpy(teacher), torch.from_numpy(student), 0.1, reduction, "cosine"
        )
        assert float(k) == pytest.approx(expected, rel=1e-5)
        assert float(t) == pytest.approx(expected, rel=1e-5)
        scaled = feature_distillation_loss(teacher, 0.01 * student, 0.1, reduction, "cosine")
        assert float(scaled) == pytest.approx(expected, rel=1e-4)

    # the collapse: a student that does not yet predict the teacher (uncorrelated rows)
    rng = np.random.default_rng(0)
    t_emb = rng.normal(0.3, 0.7, (64, 16)).astype(np.float32)
    s_emb = tf.constant(rng.normal(0, 1, (64, 16)).astype(np.float32))
    for distance in ("mse", "cosine"):
        with tf.GradientTape() as tape:
            tape.watch(s_emb)
            loss = feature_distillation_loss(t_emb, s_emb, 10.0, "mean", distance)
        radial = float(tf.reduce_sum(tape.gradient(loss, s_emb) * s_emb))
        if distance == "mse":
            assert radial > 1.0  # descent shrinks the embedding: the collapse
        else:
            assert abs(radial) < 1e-4  # nothing to gain from the scale
    with pytest.raises(ValueError, match="distance"):
        feature_distillation_loss(teacher, student, distance="l1")
    with pytest.raises(ValueError, match="distance"):
        tp.feature_distillation_loss(torch.zeros(1), torch.zeros(1), distance="l1")
